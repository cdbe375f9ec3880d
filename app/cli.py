"""Command line: ``ckpt-compat serve [--host] [--port] [--workers N] [--data-dir DIR]``."""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> None:
    """Parse arguments, export them as settings, and run the server."""
    parser = argparse.ArgumentParser(prog="ckpt-compat", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the HTTP service")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--workers", type=int, help="worker processes (CKPT_COMPAT_WORKERS)")
    serve.add_argument("--data-dir", help="data directory (CKPT_COMPAT_DATA_DIR)")
    serve.add_argument("--log-level", default="info")
    args = parser.parse_args(argv)

    # Settings are read from the environment, so workers and the app see the same values.
    if args.workers is not None:
        os.environ["CKPT_COMPAT_WORKERS"] = str(args.workers)
    if args.data_dir is not None:
        os.environ["CKPT_COMPAT_DATA_DIR"] = args.data_dir

    _refuse_unusable_keys(parser)
    import uvicorn

    uvicorn.run(
        "app.main:create_app",
        factory=True,
        host=args.host,
        port=args.port,
        log_level=args.log_level,
    )


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
