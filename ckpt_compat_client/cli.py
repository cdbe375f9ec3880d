"""``check``, ``architectures`` and ``report``: the service from a terminal (Typer + rich).

The client distribution runs them as ``ckpt-compat-client``; the server's ``ckpt-compat``
adds the same functions beside ``serve``, ``worker`` and ``index`` (``add_commands``), so the
two cannot drift apart. Exit codes let a pipeline branch: 0 compatible or
compatible_with_changes, 1 partial or incompatible, 2 an error (refused, failed, unreachable,
or a usage error).
"""

from __future__ import annotations

import contextlib
import inspect
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
from rich.console import Console

from ckpt_compat_client.client import Client
from ckpt_compat_client.display import (
    StageFollower,
    make_console,
    print_summary,
    transfer,
)
from ckpt_compat_client.errors import (
    CheckFailedError,
    LocalServiceUnavailableError,
    ServiceError,
)
from ckpt_compat_client.options import check_options

GOOD_VERDICTS = frozenset({"compatible", "compatible_with_changes"})
EXIT_GOOD, EXIT_BAD_VERDICT, EXIT_ERROR = 0, 1, 2
EXIT_INTERRUPTED = 130
"""Ctrl-C, as shells report SIGINT (click's own 1 would read as a verdict)."""
DEFAULT_SERVER = "http://127.0.0.1:8000"
POLL_SECONDS = 1.0
"""How long each status request may be held: short enough to show every stage that lasts."""

ServerOption = Annotated[
    str,
    typer.Option(
        "--server",
        envvar="CKPT_COMPAT_URL",
        help="The service's base URL.",
        rich_help_panel="Connection",
    ),
]
ApiKeyOption = Annotated[
    str | None,
    typer.Option(
        "--api-key",
        envvar="CKPT_COMPAT_API_KEY",
        help="Sent as a bearer token, when the service has API keys.",
        show_default=False,
        rich_help_panel="Connection",
    ),
]
JsonOption = Annotated[
    bool, typer.Option("--json", help="Print the whole report as JSON instead of the summary.")
]


def check(
    file: Annotated[
        Path,
        typer.Argument(
            help="The checkpoint: .pt, .pth, .bin, .safetensors, or a sharded index.",
            metavar="FILE",
            exists=True,
            dir_okay=False,
            readable=True,
            show_default=False,
        ),
    ],
    arch: Annotated[
        str,
        typer.Option(
            "--arch",
            help="Architecture name, qualified (torchvision:resnet50) or bare (resnet50); "
            "see 'architectures'.",
            show_default=False,
        ),
    ],
    kwargs: Annotated[
        str | None,
        typer.Option(
            "--kwargs",
            metavar="JSON",
            help="Architecture kwargs as a JSON object: '{\"num_classes\": 10}'.",
            show_default=False,
        ),
    ] = None,
    options: Annotated[
        str | None,
        typer.Option(
            "--options",
            metavar="JSON",
            help="Check options as a JSON object (README, Options): "
            '\'{"strip_prefixes": ["backbone."]}\'.',
            show_default=False,
        ),
    ] = None,
    merge: Annotated[
        Path | None,
        typer.Option(
            "--merge",
            metavar="OUT",
            help="Write the merged state_dict here; its suffix picks the format "
            "(.safetensors, or .pt / .pth / .bin for torch.save).",
            show_default=False,
        ),
    ] = None,
    json_output: JsonOption = False,
    server: ServerOption = DEFAULT_SERVER,
    api_key: ApiKeyOption = None,
    local: Annotated[
        bool,
        typer.Option(
            "--local",
            help="Run the service inside this process instead of asking --server "
            "(needs the server package, ckpt-compat).",
        ),
    ] = False,
) -> None:
    """Check a checkpoint against an architecture.

    Uploads FILE (a progress bar with bytes and rate), follows the check through its stages,
    prints the summary (verdict, message, counts, what to train) and, with --merge, writes
    the merged state_dict. Exit code 0 compatible or compatible_with_changes, 1 partial or
    incompatible, 2 an error (a failed check included).
    """

    def run(err: Console) -> int:
        wire_options = check_options(kwargs=kwargs, options=options, merge=merge)
        with _connection(server, api_key, local=local, err=err) as (client, base):
            with transfer(err, "upload") as progress:
                submitted = client.submit(file, arch, wire_options, progress=progress)
            with StageFollower(err) as follow:
                follow(submitted)
                finished = client.wait(submitted["id"], poll=POLL_SECONDS, on_update=follow)
            if finished["status"] == "failed":
                raise CheckFailedError(finished)
            report_json = client.report(finished["id"])
            _print_report(report_json, as_json=json_output)
            if merge is not None:
                with transfer(err, "download") as progress:
                    client.download_merged(finished["id"], merge, progress=progress)
                err.print(f"merged state_dict written to {merge}", markup=False)
            if not json_output and not local:
                page = f"{base}/v1/checks/{finished['id']}/report.html"
                make_console().print(f"Report page: {page}", markup=False, soft_wrap=True)
        return verdict_code(report_json)

    raise typer.Exit(guarded(run, server))


def architectures(
    query: Annotated[
        str | None,
        typer.Argument(
            help="A glob over qualified names: 'resnet*', 'timm:vit_*'.",
            metavar="QUERY",
            show_default=False,
        ),
    ] = None,
    limit: Annotated[
        int, typer.Option("--limit", min=1, max=5000, help="At most this many.")
    ] = 500,
    server: ServerOption = DEFAULT_SERVER,
    api_key: ApiKeyOption = None,
) -> None:
    """List the architectures the service can build, one qualified name a line."""

    def run(err: Console) -> int:
        with Client(server, api_key=api_key) as client:
            page = client.architecture_page(query, limit=limit)
        out = make_console()
        for item in page["items"]:
            out.print(str(item["name"]), markup=False)
        if page["total"] > len(page["items"]):
            err.print(f"{len(page['items'])} of {page['total']} shown (--limit)", markup=False)
        return EXIT_GOOD

    raise typer.Exit(guarded(run, server))


def report(
    check_id: Annotated[
        str, typer.Argument(help="The check's id.", metavar="CHECK_ID", show_default=False)
    ],
    json_output: JsonOption = False,
    server: ServerOption = DEFAULT_SERVER,
    api_key: ApiKeyOption = None,
) -> None:
    """Print the report of a finished check (exit code as for 'check')."""

    def run(err: Console) -> int:
        with Client(server, api_key=api_key) as client:
            report_json = client.report(check_id)
        _print_report(report_json, as_json=json_output)
        return verdict_code(report_json)

    raise typer.Exit(guarded(run, server))


def add_commands(app: typer.Typer) -> None:
    """Add ``check``, ``architectures`` and ``report`` to ``app``."""
    register(app, check, architectures, report)


def register(app: typer.Typer, *commands: Callable[..., None]) -> None:
    """Add functions as commands, their docstrings as help with each paragraph reflowed
    (rich keeps a docstring's line breaks, which read as ragged lines in ``--help``)."""
    for command in commands:
        paragraphs = inspect.cleandoc(command.__doc__ or "").split("\n\n")
        app.command(help="\n\n".join(" ".join(p.split()) for p in paragraphs))(command)


def build_app() -> typer.Typer:
    """The client distribution's command line, ``ckpt-compat-client``."""
    app = typer.Typer(
        name="ckpt-compat-client",
        help="Ask a ckpt-compat service whether a PyTorch checkpoint fits an architecture.",
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
    )
    add_commands(app)
    return app


def main() -> None:
    """``ckpt-compat-client``: the entry point of the client distribution."""
    build_app()(prog_name="ckpt-compat-client")


def verdict_code(report_json: dict[str, Any]) -> int:
    """0 for a verdict a training script can go on with, 1 for one it cannot."""
    verdict = report_json["summary"]["verdict"]
    return EXIT_GOOD if verdict in GOOD_VERDICTS else EXIT_BAD_VERDICT


def guarded(run: Callable[[Console], int], server: str) -> int:
    """Run a command; an error becomes one line on stderr and exit code 2."""
    err = make_console(stderr=True)
    try:
        return run(err)
    except CheckFailedError as exc:
        _say(err, f"the check {exc.check.get('id', '')} failed: {exc}", exc.problem)
    except ServiceError as exc:
        _say(err, str(exc), exc.problem)
    except httpx.HTTPError as exc:  # unreachable, or the connection broke off
        _say(err, f"no answer from {server}: {exc}")
    except (LocalServiceUnavailableError, OSError, ValueError, TimeoutError) as exc:
        _say(err, str(exc))
    except KeyboardInterrupt:
        _say(err, "interrupted")
        return EXIT_INTERRUPTED
    return EXIT_ERROR


def _say(err: Console, message: str, problem: dict[str, Any] | None = None) -> None:
    err.print(f"ckpt-compat: {message}", markup=False, style="red")
    suggestions = (problem or {}).get("suggestions")
    if isinstance(suggestions, list) and suggestions and str(suggestions[0]) not in message:
        err.print(f"Did you mean: {', '.join(map(str, suggestions))}?", markup=False)


def _print_report(report_json: dict[str, Any], *, as_json: bool) -> None:
    out = make_console()
    if as_json:  # raw: no highlighting, no wrapping, a document a tool can load
        out.file.write(json.dumps(report_json, indent=2) + "\n")
        return
    print_summary(out, report_json)


@contextlib.contextmanager
def _connection(
    server: str, api_key: str | None, *, local: bool, err: Console
) -> Iterator[tuple[Client, str]]:
    """A client of ``server``, or (``--local``) of the service run in this process."""
    if not local:
        with Client(server, api_key=api_key) as client:
            yield client, server.rstrip("/")
        return
    from ckpt_compat_client.local import local_service

    with contextlib.ExitStack() as stack:
        with err.status("starting the service in this process (--local)"):
            base = stack.enter_context(local_service())
        client = stack.enter_context(Client(base))
        yield client, base
