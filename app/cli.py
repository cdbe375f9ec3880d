"""Command line: ``ckpt-compat serve [--host] [--port] [--workers N] [--data-dir DIR]
[--api-processes N]`` runs the service; ``ckpt-compat worker [--concurrency N]`` runs a
Celery worker of the distributed mode; ``ckpt-compat index [--cache-dir DIR]`` builds the
catalogue index."""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence


def build_parser() -> argparse.ArgumentParser:
    """Every command and its options (also used to check docker-compose.yml's commands)."""
    parser = argparse.ArgumentParser(prog="ckpt-compat", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the HTTP service")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--workers", type=int, help="worker processes (CKPT_COMPAT_WORKERS)")
    serve.add_argument("--data-dir", help="data directory (CKPT_COMPAT_DATA_DIR)")
    serve.add_argument("--log-level", default="info")
    index = commands.add_parser(
        "index", help="build the catalogue's shape-signature index (?fits=, closest_architectures)"
    )
    index.add_argument("--cache-dir", help="cache directory (CKPT_COMPAT_CACHE_DIR)")
    index.add_argument(
        "names", nargs="*", help="qualified names to index (default: the whole catalogue)"
    )
    serve.add_argument(
        "--api-processes",
        type=int,
        default=1,
        help="API processes sharing the port (each with its own local workers when "
        "CKPT_COMPAT_QUEUE=local); the database coordinates them",
    )
    worker = commands.add_parser(
        "worker", help="run a Celery worker for CKPT_COMPAT_QUEUE=celery (prefork, warmed)"
    )
    worker.add_argument(
        "--concurrency", type=int, help="child processes (default: CKPT_COMPAT_WORKERS)"
    )
    worker.add_argument("--loglevel", default="info")
    from app import cli_check  # the client commands: check, architectures, report

    cli_check.add_commands(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    """Parse arguments, export them as settings, and run the server."""
    from app import cli_check

    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command in cli_check.COMMANDS:
        raise SystemExit(cli_check.run(args))
    if args.command == "worker":
        _worker(parser, args.concurrency, args.loglevel)
        return
    if args.command == "index":
        _index(args.cache_dir, args.names)
        return

    # Settings are read from the environment, so workers and the app see the same values.
    if args.workers is not None:
        os.environ["CKPT_COMPAT_WORKERS"] = str(args.workers)
    if args.data_dir is not None:
        os.environ["CKPT_COMPAT_DATA_DIR"] = args.data_dir

    _refuse_unusable_keys(parser)
    import uvicorn

    from app.config import get_settings
    from app.logs import uvicorn_log_config

    uvicorn.run(
        "app.main:create_app",
        factory=True,
        host=args.host,
        port=args.port,
        log_level=args.log_level,
        workers=args.api_processes,
        log_config=uvicorn_log_config(get_settings().log_format),
    )


def _worker(parser: argparse.ArgumentParser, concurrency: int | None, loglevel: str) -> None:
    """Run a Celery worker: the schema is brought to head first, then tasks are served."""
    from app.config import get_settings
    from app.jobs.celery_app import QUEUE, celery_app
    from app.jobs.db import make_engine

    try:
        settings = get_settings()
    except ValueError as exc:
        parser.exit(2, f"ckpt-compat: {exc}\n")
    if settings.queue != "celery":
        parser.exit(
            2,
            "ckpt-compat: the worker serves CKPT_COMPAT_QUEUE=celery; set it, with "
            "CKPT_COMPAT_BROKER_URL and CKPT_COMPAT_DATABASE_URL.\n",
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


def _index(cache_dir: str | None, names: list[str]) -> None:
    """Build the index in this process, printing progress; a finished index is kept."""
    import sys
    import time
    from pathlib import Path

    from app.catalog_index.store import build_index, index_path
    from app.config import get_settings
    from app.jobs.worker import limit_address_space, warm_up

    settings = get_settings()
    root = Path(cache_dir) if cache_dir else settings.cache_dir
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


def _refuse_unusable_keys(parser: argparse.ArgumentParser) -> None:
    """Exit with the reason, not a traceback, when the API key settings are unusable."""
    from app.api.keys import ApiKeysConfigError, load_keyring
    from app.config import get_settings

    try:
        load_keyring(get_settings())
    except (ApiKeysConfigError, OSError) as exc:
        parser.exit(2, f"ckpt-compat: {exc}\n")


if __name__ == "__main__":
    main()
