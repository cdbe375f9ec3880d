"""``ckpt-compat check | architectures | report``: exit codes, what a terminal and a pipe see,
a real server process, and ``--local`` end to end.

The commands run as a user runs them, in a subprocess whose stdout and stderr are pipes (as
in CI), so the plain output is what is asserted; ``TTY_COMPATIBLE=1`` makes rich treat the
pipes as a terminal for the run that checks the rich output.
"""

from __future__ import annotations

import io
import json
import os
import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import torch
from rich.console import Console

from app.cli import main
from ckpt_compat_client.cli import (
    EXIT_BAD_VERDICT,
    EXIT_ERROR,
    EXIT_GOOD,
    EXIT_INTERRUPTED,
    guarded,
    verdict_code,
)
from ckpt_compat_client.display import make_console, transfer
from ckpt_compat_client.options import check_options
from tests.checkpoints import resnet18_state_dict, save_checkpoint
from tests.servers import ROOT, serving

ROW = re.compile(r"^(?P<name>[a-z][a-z ]*?) {2,}(?P<value>\S.*\S|\S)$")
"""A summary row off a terminal: ``name  value``, no trailing blanks."""
ESCAPE = "\x1b"
BOX = "╭│╰━"


def _closed_port() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"


def _exit_code(argv: list[str]) -> int:
    with pytest.raises(SystemExit) as caught:
        main(argv)
    assert isinstance(caught.value.code, int)
    return caught.value.code


def _cli(
    *arguments: str, env: dict[str, str] | None = None, cwd: Path = ROOT
) -> subprocess.CompletedProcess[str]:
    """``ckpt-compat ARGUMENTS`` in a subprocess with piped output (not a terminal)."""
    plain = {k: v for k, v in os.environ.items() if k not in ("FORCE_COLOR", "TTY_COMPATIBLE")}
    return subprocess.run(
        [sys.executable, "-m", "app.cli", *arguments],
        capture_output=True,
        text=True,
        timeout=300,
        env={**plain, "COLUMNS": "80", **(env or {})},
        cwd=cwd,
    )


def _rows(stdout: str) -> dict[str, str]:
    rows = {}
    for line in stdout.splitlines():
        match = ROW.match(line)
        if match and not line.startswith(("Train:", "Report page:")):
            rows[match["name"]] = match["value"]
    return rows


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    data_dir = tmp_path_factory.mktemp("cli-server")
    with serving(["--workers", "1", "--data-dir", str(data_dir), "--log-level", "warning"]) as base:
        yield base


@pytest.fixture(scope="module")
def resnet18_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("ckpt") / "r18.pth"
    return save_checkpoint({"state_dict": resnet18_state_dict()}, path)


def test_check_without_a_server_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "m.pth"
    path.write_bytes(b"x")
    assert (
        _exit_code(["check", str(path), "--arch", "resnet18", "--server", _closed_port()])
        == EXIT_ERROR
    )
    assert "no answer from" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--kwargs", "[1]"], "--kwargs must be a JSON object"),
        (["--options", "{nope"], "--options is not JSON"),
        (["--merge", "out.ckpt"], "end the name with .safetensors, or .pt / .pth / .bin"),
        (
            ["--kwargs", "{}", "--options", '{"architecture_kwargs": {}}'],
            "give the kwargs once",
        ),
    ],
)
def test_check_with_bad_flags_exits_2_before_any_request(
    tmp_path: Path, arguments: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "m.pth"
    path.write_bytes(b"x")
    argv = ["check", str(path), "--arch", "a", *arguments, "--server", _closed_port()]
    assert _exit_code(argv) == EXIT_ERROR
    err = capsys.readouterr().err
    assert err.startswith("ckpt-compat: ") and message in err and "no answer" not in err


def test_check_options_combine_the_flags_into_the_options_field() -> None:
    options = check_options(
        kwargs='{"num_classes": 10}',
        options='{"strip_prefixes": ["module."], "merge": {"format": "pt"}}',
        merge=Path("out.SafeTensors"),
    )
    assert options == {
        "strip_prefixes": ["module."],
        "architecture_kwargs": {"num_classes": 10},
        "merge": {"format": "safetensors"},  # the file's name decides
    }
    assert check_options(kwargs=None, options=None, merge=Path("m.bin")) == {
        "merge": {"format": "pt"}
    }
    assert check_options(kwargs=None, options=None, merge=None) == {}


def test_check_of_a_missing_file_is_a_usage_error(tmp_path: Path) -> None:
    done = _cli("check", str(tmp_path / "nope.pth"), "--arch", "resnet18")
    assert done.returncode == 2
    assert "does not exist" in done.stderr and "Traceback" not in done.stderr


def test_interrupting_a_command_exits_130_not_a_verdict_code(
    capsys: pytest.CaptureFixture[str],
) -> None:
    def interrupted(err: Console) -> int:
        raise KeyboardInterrupt

    assert guarded(interrupted, "http://svc") == EXIT_INTERRUPTED == 130
    assert capsys.readouterr().err == "ckpt-compat: interrupted\n"


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
    assert verdict_code({"summary": {"verdict": verdict}}) == code


def test_transfer_prints_one_plain_line_off_a_terminal(capsys: pytest.CaptureFixture[str]) -> None:
    console = make_console(stderr=True)
    assert not console.is_terminal
    with transfer(console, "upload") as progress:
        for done in (0, 10**6, 2 * 10**6):
            progress(done, 2 * 10**6)
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1
    assert re.fullmatch(r"upload 2\.0 MB in \d+\.\d s, [\d.]+ [kMGT]?B/s", lines[0]), lines


def test_transfer_draws_a_bar_with_bytes_and_rate_on_a_terminal() -> None:
    stream = io.StringIO()
    console = Console(file=stream, force_terminal=True, width=100)
    with transfer(console, "upload") as progress:
        progress(2 * 10**6, 2 * 10**6)
    drawn = stream.getvalue()
    assert "━" in drawn and "100%" in drawn and "2.0/2.0 MB" in drawn
    assert re.search(r"[\d.]+ [kMGT]?B/s", drawn)


@pytest.mark.slow
def test_cli_check_against_a_server_prints_plain_lines_and_writes_the_merge(
    server: str, resnet18_file: Path, tmp_path: Path
) -> None:
    merged = tmp_path / "out.safetensors"
    done = _cli(
        "check",
        str(resnet18_file),
        "--arch",
        "torchvision:resnet18",
        "--kwargs",
        '{"num_classes": 10}',
        "--merge",
        str(merged),
        "--server",
        server,
    )
    assert done.returncode == EXIT_GOOD, done.stderr
    assert ESCAPE not in done.stdout + done.stderr
    assert not any(char in done.stdout + done.stderr for char in BOX)
    rows = _rows(done.stdout)
    assert rows["verdict"] == "compatible_with_changes"
    assert rows["architecture"] == "torchvision:resnet18"
    assert rows["parameters loaded"] == "100.0 %"
    assert rows["train"] == "2 tensors, 5,130 parameters"
    assert "Train: fc.weight, fc.bias" in done.stdout.splitlines()
    [page] = re.findall(r"^Report page: (\S+)$", done.stdout, re.M)
    check_id = page.rsplit("/", 2)[-2]
    assert httpx.get(page, timeout=30).status_code == 200
    err = done.stderr.splitlines()
    assert re.fullmatch(r"upload 46\.8 MB in \d+\.\d s, [\d.]+ [kMG]?B/s", err[0]), err
    assert f"check {check_id[:12]}: queued" in err and f"check {check_id[:12]}: done" in err
    assert f"merged state_dict written to {merged}" in err
    from safetensors.torch import load_file

    assert load_file(merged)["fc.weight"].shape == (10, 512)

    again = _cli("report", check_id, "--server", server)
    assert again.returncode == EXIT_GOOD and _rows(again.stdout) == rows
    as_json = _cli("report", check_id, "--json", "--server", server)
    report = json.loads(as_json.stdout)
    assert report["check_id"] == check_id and report["summary"]["verdict"] == rows["verdict"]


@pytest.mark.slow
def test_cli_check_on_a_terminal_draws_rich_output(
    server: str, resnet18_file: Path, tmp_path: Path
) -> None:
    merged = tmp_path / "out.pt"
    arguments = ["--arch", "torchvision:resnet18", "--kwargs", '{"num_classes": 10}']
    done = _cli(
        "check",
        str(resnet18_file),
        *arguments,
        "--merge",
        str(merged),
        "--server",
        server,
        env={"TTY_COMPATIBLE": "1"},
    )
    assert done.returncode == EXIT_GOOD, done.stderr
    assert "╭" in done.stdout and ESCAPE in done.stdout and "compatible_with_changes" in done.stdout
    assert "━" in done.stderr and "46.8/46.8 MB" in done.stderr
    state = torch.load(merged, weights_only=True)
    assert state["fc.weight"].shape == (10, 512)


@pytest.mark.slow
def test_cli_check_of_a_model_that_does_not_fit_exits_1(server: str, resnet18_file: Path) -> None:
    done = _cli("check", str(resnet18_file), "--arch", "torchvision:resnet50", "--server", server)
    assert done.returncode == EXIT_BAD_VERDICT, done.stderr
    assert _rows(done.stdout)["verdict"] in ("partial", "incompatible")


@pytest.mark.slow
def test_cli_check_of_an_unknown_architecture_exits_2_with_suggestions(
    server: str, resnet18_file: Path
) -> None:
    done = _cli("check", str(resnet18_file), "--arch", "torchvision:resnet19", "--server", server)
    assert done.returncode == EXIT_ERROR
    assert done.stderr.startswith("ckpt-compat: Unknown architecture (404)"), done.stderr
    assert re.search(r"Did you mean:? .*torchvision:resnet18", done.stderr)
    assert done.stderr.count("Did you mean") == 1
    assert "upload" not in done.stderr  # refused from the fields, before the file's end


@pytest.mark.slow
def test_cli_check_that_fails_exits_2_with_its_problem(server: str, tmp_path: Path) -> None:
    path = tmp_path / "module.pt"
    torch.save({"model": torch.nn.Linear(2, 2)}, path)  # a pickled module: refused unloaded
    done = _cli("check", str(path), "--arch", "torchvision:resnet18", "--server", server)
    assert done.returncode == EXIT_ERROR, done.stdout
    assert re.search(r"^ckpt-compat: the check \w+ failed: .+\(4\d\d\)", done.stderr, re.M), (
        done.stderr
    )
    assert "verdict" not in done.stdout


@pytest.mark.slow
def test_cli_architectures_lists_qualified_names(server: str) -> None:
    done = _cli("architectures", "torchvision:resnet1*", "--server", server)
    assert done.returncode == EXIT_GOOD, done.stderr
    names = done.stdout.splitlines()
    assert "torchvision:resnet18" in names and all(
        n.startswith("torchvision:resnet1") for n in names
    )
    few = _cli("architectures", "torchvision:*", "--limit", "2", "--server", server)
    assert len(few.stdout.splitlines()) == 2 and re.search(r"^2 of \d+ shown", few.stderr)


@pytest.mark.slow
def test_check_local_runs_the_engine_in_process_and_writes_the_merge(
    resnet18_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    merged = tmp_path / "out.safetensors"
    argv = [
        "check",
        str(resnet18_file),
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
    assert _rows(captured.out)["verdict"] == "compatible_with_changes"
    assert "Train: fc.weight, fc.bias" in captured.out
    assert "Report page" not in captured.out  # the local service is gone when the CLI ends
    assert re.search(r"^upload 46\.8 MB in ", captured.err, re.M)
    from safetensors.torch import load_file

    assert load_file(merged)["fc.weight"].shape == (10, 512)
