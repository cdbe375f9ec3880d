"""Command line (Typer): ``ckpt-compat serve`` runs the service, ``worker`` a Celery worker of
the distributed mode, ``index`` builds the catalogue index; ``check``, ``architectures`` and
``report`` are the client's commands (``ckpt_compat_client.cli``), the same functions the
client distribution runs as ``ckpt-compat-client``.

Nothing heavy is imported until a command runs: ``ckpt-compat --help`` loads no torch.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

from ckpt_compat_client.cli import add_commands, register

PROG = "ckpt-compat"

app = typer.Typer(
    name=PROG,
    help="Tell whether a PyTorch checkpoint fits a model architecture, and hand back the "
    "weights that fit: run the service, its workers, or check a file.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def serve(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    workers: Annotated[
        int | None,
        typer.Option(help="Worker processes (CKPT_COMPAT_WORKERS).", show_default=False),
    ] = None,
    data_dir: Annotated[
        Path | None,
        typer.Option(help="Data directory (CKPT_COMPAT_DATA_DIR).", show_default=False),
    ] = None,
    log_level: Annotated[str, typer.Option(help="uvicorn's log level.")] = "info",
    api_processes: Annotated[
        int,
        typer.Option(
            help="API processes sharing the port (each with its own local workers when "
            "CKPT_COMPAT_QUEUE=local); the database coordinates them."
        ),
    ] = 1,
) -> None:
    """Run the HTTP service (Swagger UI at /docs)."""
    # Settings are read from the environment, so workers and the app see the same values.
    if workers is not None:
        os.environ["CKPT_COMPAT_WORKERS"] = str(workers)
    if data_dir is not None:
        os.environ["CKPT_COMPAT_DATA_DIR"] = str(data_dir)

    _refuse_unusable_keys()
    import uvicorn

    from app.config import get_settings
    from app.logs import uvicorn_log_config

    uvicorn.run(
        "app.main:create_app",
        factory=True,
        host=host,
        port=port,
        log_level=log_level,
        workers=api_processes,
        log_config=uvicorn_log_config(get_settings().log_format),
    )


def worker(
    concurrency: Annotated[
        int | None,
        typer.Option(help="Child processes (default: CKPT_COMPAT_WORKERS).", show_default=False),
    ] = None,
    loglevel: Annotated[str, typer.Option(help="Celery's log level.")] = "info",
) -> None:
    """Run a Celery worker for CKPT_COMPAT_QUEUE=celery (prefork, warmed).

    The schema is brought to head first, then tasks are served.
    """
    from app.config import get_settings
    from app.jobs.celery_app import QUEUE, celery_app
    from app.jobs.db import make_engine

    try:
        settings = get_settings()
    except ValueError as exc:
        _exit(str(exc))
    if settings.queue != "celery":
        _exit(
            "the worker serves CKPT_COMPAT_QUEUE=celery; set it, with "
            "CKPT_COMPAT_BROKER_URL and CKPT_COMPAT_DATABASE_URL."
        )
    make_engine(settings.database_url).dispose()
    celery_app().worker_main(
        [
            "worker",
            "--pool=prefork",
            f"--concurrency={concurrency or settings.workers}",
            f"--loglevel={loglevel}",
            f"--queues={QUEUE}",
            f"--hostname=ckpt-compat-{os.getpid()}@%h",
            "--without-gossip",
            "--without-mingle",
        ]
    )


def index(
    names: Annotated[
        list[str] | None,
        typer.Argument(
            help="Qualified names to index (default: the whole catalogue).",
            metavar="NAMES",
            show_default=False,
        ),
    ] = None,
    cache_dir: Annotated[
        Path | None,
        typer.Option(help="Cache directory (CKPT_COMPAT_CACHE_DIR).", show_default=False),
    ] = None,
) -> None:
    """Build the catalogue's shape-signature index (?fits=, closest_architectures).

    Built in this process, printing progress; a finished index is kept.
    """
    import sys
    import time

    from app.catalog_index.store import build_index, index_path
    from app.config import get_settings
    from app.jobs.worker import limit_address_space, warm_up

    settings = get_settings()
    root = cache_dir or settings.cache_dir
    # As in a worker: a default config that cannot be built on meta falls back to a CPU
    # build, and the cap turns a huge one into a MemoryError (that architecture is left out)
    # instead of a visit from the OOM killer.
    warm_up()
    limit_address_space(settings.max_worker_memory_bytes)
    started = time.perf_counter()

    def progress(built: int, total: int) -> None:
        sys.stdout.write(f"\r{built}/{total} architectures, {time.perf_counter() - started:.0f} s")
        sys.stdout.flush()

    summary = build_index(root, names or None, progress=progress)
    sys.stdout.write(f"\n{index_path(root)}: {summary}\n")


register(app, serve, worker, index)
add_commands(app)


def parse_command(argv: Sequence[str]) -> tuple[str, dict[str, Any]]:
    """The command and its parameters as the CLI parses ``argv``, without running it
    (docker-compose.yml's commands are checked with it).

    Raises:
        KeyError: No such command.
        click.UsageError (Typer's): The arguments do not parse.
    """
    name, *rest = argv
    command = typer.main.get_group(app).commands[name]
    with command.make_context(name, list(rest)) as context:
        return name, dict(context.params)


def main(argv: Sequence[str] | None = None) -> None:
    """Run the command line (``argv`` defaults to ``sys.argv[1:]``); always exits."""
    app(args=None if argv is None else list(argv), prog_name=PROG)


def _exit(message: str) -> NoReturn:
    """Exit with the reason and code 2, not a traceback."""
    typer.echo(f"{PROG}: {message}", err=True)
    raise typer.Exit(2)


def _refuse_unusable_keys() -> None:
    """Exit with the reason when the API key settings are unusable."""
    from app.api.keys import ApiKeysConfigError, load_keyring
    from app.config import get_settings

    try:
        load_keyring(get_settings())
    except (ApiKeysConfigError, OSError) as exc:
        _exit(str(exc))


if __name__ == "__main__":
    main()
