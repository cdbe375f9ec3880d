"""``ckpt-compat check | architectures | report``: the service from a terminal, through
``app.client``.

``check`` uploads with a progress bar (bytes and rate), follows the check through its stages,
prints a summary (verdict, message, counts, what to train) and writes the merged file. Exit
codes let a pipeline branch: 0 compatible or compatible_with_changes, 1 partial or
incompatible, 2 an error (refused, failed, unreachable). ``--local`` runs the same service
in this process (its workers included) on a temporary data directory, without a server.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

import httpx

from app.client import Client, ServiceError

COMMANDS = frozenset({"check", "architectures", "report"})
GOOD_VERDICTS = frozenset({"compatible", "compatible_with_changes"})
EXIT_GOOD, EXIT_BAD_VERDICT, EXIT_ERROR = 0, 1, 2


def add_commands(commands: Any) -> None:
    """Add ``check``, ``architectures`` and ``report`` to the CLI's subparsers."""
    check = commands.add_parser("check", help="check a checkpoint against an architecture")
    check.add_argument("file", type=Path, help="the checkpoint (.pt, .pth, .bin, .safetensors)")
    check.add_argument("--arch", required=True, help="architecture name (torchvision:resnet50)")
    check.add_argument("--kwargs", help='architecture kwargs as JSON ({"num_classes": 10})')
    check.add_argument("--options", help="check options as JSON (README, Options)")
    check.add_argument("--merge", type=Path, metavar="OUT", help="write the merged state_dict")
    check.add_argument("--json", action="store_true", help="print the report as JSON instead")
    _add_connection(check)
    check.add_argument("--local", action="store_true", help="run in this process, no server")
    archs = commands.add_parser("architectures", help="list architectures (glob QUERY)")
    archs.add_argument("query", nargs="?", help="a glob: resnet*, timm:vit_*")
    _add_connection(archs)
    report = commands.add_parser("report", help="print the report of a check")
    report.add_argument("check_id")
    report.add_argument("--json", action="store_true", help="print the report as JSON")
    _add_connection(report)


def _add_connection(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--server",
        default=os.environ.get("CKPT_COMPAT_URL", "http://127.0.0.1:8000"),
        help="the service (CKPT_COMPAT_URL)",
    )
    parser.add_argument(
        "--api-key", default=os.environ.get("CKPT_COMPAT_API_KEY"), help="(CKPT_COMPAT_API_KEY)"
    )


def run(args: argparse.Namespace, out: TextIO | None = None, err: TextIO | None = None) -> int:
    """Run one client command; returns the exit code (streams default to stdout, stderr)."""
    out = out or sys.stdout
    err = err or sys.stderr
    try:
        if args.command == "check":
            return _check(args, out, err)
        with Client(args.server, api_key=args.api_key) as client:
            if args.command == "architectures":
                for name in client.architectures(args.query, limit=500):
                    print(name, file=out)
                return EXIT_GOOD
            report = client.report(args.check_id)
            _print_report(report, args.json, out)
            return _verdict_code(report)
    except (ServiceError, OSError, ValueError, TimeoutError) as exc:
        print(f"ckpt-compat: {exc}", file=err)
    except httpx.HTTPError as exc:  # unreachable, or the connection broke off
        print(f"ckpt-compat: no answer from {args.server}: {exc}", file=err)
    return EXIT_ERROR


def _check(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    options: dict[str, Any] = json.loads(args.options) if args.options else {}
    if not isinstance(options, dict):
        raise ValueError("--options must be a JSON object")
    if args.kwargs:
        kwargs = json.loads(args.kwargs)
        if not isinstance(kwargs, dict):
            raise ValueError("--kwargs must be a JSON object")
        options["architecture_kwargs"] = kwargs
    if args.merge is not None:
        options["merge"] = {
            "format": "pt" if args.merge.suffix in (".pt", ".pth") else "safetensors"
        }
    with _client(args) as client:
        check = client.check(
            args.file,
            args.arch,
            options,
            progress=ProgressBar(err, "upload").update,
            on_update=_StageLog(err),
        )
        report = client.report(check["id"])
        _print_report(report, args.json, out)
        if args.merge is not None:
            bar = ProgressBar(err, "merged")
            client.download_merged(check["id"], args.merge, progress=bar.update)
            print(f"Merged state_dict written to {args.merge}", file=err)
        if not args.json and not args.local:
            base = args.server.rstrip("/")
            print(f"Report page: {base}/v1/checks/{check['id']}/report.html", file=out)
    return _verdict_code(report)


@contextlib.contextmanager
def _client(args: argparse.Namespace) -> Iterator[Client]:
    """A client of the server, or (``--local``) of the service run in this process."""
    if not args.local:
        with Client(args.server, api_key=args.api_key) as client:
            yield client
        return
    with _local_service() as base, Client(base) as client:
        yield client


@contextlib.contextmanager
def _local_service() -> Iterator[str]:
    """The service on a loopback port of this process (its thread, its worker processes),
    on a temporary data directory: the same engine and the same HTTP path as a server."""
    import socket
    import threading

    import uvicorn

    from app.config import Settings
    from app.main import create_app

    with tempfile.TemporaryDirectory(prefix="ckpt-compat-local-") as data_dir:
        settings = Settings.model_validate({"data_dir": data_dir, "workers": 1, "api_keys": ""})
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        config = uvicorn.Config(create_app(settings), log_level="warning", lifespan="on")
        server = uvicorn.Server(config)
        thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
        thread.start()
        try:
            while not server.started:
                if not thread.is_alive():
                    raise OSError("the local service did not start")
                time.sleep(0.05)
            yield f"http://127.0.0.1:{port}"
        finally:
            server.should_exit = True
            thread.join(timeout=60)
            sock.close()


def _verdict_code(report: dict[str, Any]) -> int:
    return EXIT_GOOD if report["summary"]["verdict"] in GOOD_VERDICTS else EXIT_BAD_VERDICT


class _StageLog:
    """Prints a check's stage each time it changes (the service is polled every 20 s at most,
    so quick stages may pass unseen)."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._seen = ""

    def __call__(self, check: dict[str, Any]) -> None:
        stage = (check.get("progress") or {}).get("stage") or check["status"]
        if stage != self._seen:
            self._seen = stage
            print(f"check {check['id'][:12]}: {stage}", file=self._stream)


class ProgressBar:
    """``upload [#########-----]  61%  27.3/44.7 MiB  9.8 MiB/s`` on stderr, redrawn in place
    on a terminal and printed once, when done, elsewhere (logs stay readable)."""

    def __init__(self, stream: TextIO, label: str, width: int = 30) -> None:
        self._stream = stream
        self._label = label
        self._width = width
        self._started = time.monotonic()
        self._last = 0.0
        self._line = ""
        self._tty = stream.isatty()
        self._closed = False

    def update(self, done: int, total: int) -> None:
        """Redraw (at most 10 times a second, and at the end)."""
        now = time.monotonic()
        if done < total and now - self._last < 0.1:
            return
        self._last = now
        share = done / total if total else 1.0
        filled = int(share * self._width)
        rate = done / max(now - self._started, 1e-6)
        self._line = (
            f"{self._label} [{'#' * filled}{'-' * (self._width - filled)}] {100 * share:3.0f}%  "
            f"{_mib(done)}/{_mib(total)} MiB  {_mib(rate)} MiB/s"
        )
        if self._tty:
            print("\r" + self._line, end="", file=self._stream, flush=True)
        if done >= total and not self._closed:
            self._closed = True
            print("" if self._tty else self._line, file=self._stream)


def _mib(value: float) -> str:
    return f"{value / 2**20:.1f}"


def _tensors(plan: dict[str, Any], side: str) -> str:
    count = plan.get(f"{side}_parameter_count", 0)
    return f"{len(plan.get(side, []))} tensors, {count:,} parameters"


def _print_report(report: dict[str, Any], as_json: bool, out: TextIO) -> None:
    if as_json:
        json.dump(report, out, indent=2)
        print(file=out)
        return
    summary, plan = report["summary"], report.get("training_plan") or {}
    rows = [
        ("verdict", summary["verdict"]),
        ("architecture", report["architecture"]["name"]),
        ("checkpoint", report["checkpoint"]["filename"]),
        ("parameters loaded", f"{100 * summary['loaded_parameter_fraction']:.1f} %"),
        ("matched", summary["matched"]),
        ("missing", summary["missing"]),
        ("unexpected", summary["unexpected"]),
        ("shape mismatched", summary["shape_mismatched"]),
        ("dtype differs", summary["dtype_differs"]),
        ("train", _tensors(plan, "trainable")),
        ("freeze", _tensors(plan, "frozen")),
    ]
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}", file=out)
    print(f"\n{summary.get('message', '')}", file=out)
    trainable = plan.get("trainable", [])
    if trainable:
        shown = ", ".join(trainable[:8]) + (
            f", ... ({len(trainable) - 8} more)" if len(trainable) > 8 else ""
        )
        print(f"Train: {shown}", file=out)
