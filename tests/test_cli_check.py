"""``ckpt-compat check | architectures | report``: exit codes, the summary, --local end to end."""

from __future__ import annotations

import io
import socket
from pathlib import Path

import pytest

from app.cli import main
from app.cli_check import EXIT_BAD_VERDICT, EXIT_ERROR, EXIT_GOOD, ProgressBar, _verdict_code


def _closed_port() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"


def _exit_code(argv: list[str]) -> int:
    with pytest.raises(SystemExit) as caught:
        main(argv)
    assert isinstance(caught.value.code, int)
    return caught.value.code


def test_check_without_a_server_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "m.pth"
    path.write_bytes(b"x")
    assert (
        _exit_code(["check", str(path), "--arch", "resnet18", "--server", _closed_port()])
        == EXIT_ERROR
    )
    assert "no answer from" in capsys.readouterr().err


@pytest.mark.parametrize(("flag", "value"), [("--kwargs", "[1]"), ("--options", "{nope")])
def test_check_with_bad_json_exits_2(
    tmp_path: Path, flag: str, value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "m.pth"
    path.write_bytes(b"x")
    assert (
        _exit_code(["check", str(path), "--arch", "a", flag, value, "--server", _closed_port()])
        == EXIT_ERROR
    )
    assert capsys.readouterr().err.startswith("ckpt-compat: ")


@pytest.mark.parametrize(
    ("verdict", "code"),
    [
        ("compatible", EXIT_GOOD),
        ("compatible_with_changes", EXIT_GOOD),
        ("partial", EXIT_BAD_VERDICT),
        ("incompatible", EXIT_BAD_VERDICT),
    ],
)
def test_exit_code_follows_the_verdict(verdict: str, code: int) -> None:
    assert _verdict_code({"summary": {"verdict": verdict}}) == code


def test_progress_bar_prints_once_off_a_terminal() -> None:
    stream = io.StringIO()
    bar = ProgressBar(stream, "upload")
    for done in (0, 2**20, 2 * 2**20):
        bar.update(done, 2 * 2**20)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 1 and lines[0].startswith("upload [") and "100%" in lines[0]
    assert "2.0/2.0 MiB" in lines[0]


@pytest.mark.slow
def test_check_local_runs_the_engine_in_process_and_writes_the_merge(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from tests.checkpoints import resnet18_state_dict, save_checkpoint

    path = save_checkpoint({"state_dict": resnet18_state_dict()}, tmp_path / "r18.pth")
    merged = tmp_path / "out.safetensors"
    argv = [
        "check",
        str(path),
        "--arch",
        "torchvision:resnet18",
        "--kwargs",
        '{"num_classes": 10}',
        "--merge",
        str(merged),
        "--local",
    ]
    assert _exit_code(argv) == EXIT_GOOD
    captured = capsys.readouterr()
    assert "verdict            compatible_with_changes" in captured.out
    assert "Train: fc.weight, fc.bias" in captured.out
    assert "upload [" in captured.err and "100%" in captured.err
    from safetensors.torch import load_file

    assert load_file(merged)["fc.weight"].shape == (10, 512)
