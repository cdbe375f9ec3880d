"""``--local``: the service run inside this process, so a check needs no server.

The same engine and the same HTTP path as a server (the app on a loopback port served by a
thread of this process, its worker processes included) on a temporary data directory, so
``--local`` and ``--server`` cannot drift apart. It needs the server package: the client
distribution alone says so and how to get it.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import importlib.util
import socket
import tempfile
import threading
import time
from collections.abc import Iterator

from ckpt_compat_client.errors import LocalServiceUnavailableError

SERVER_DISTRIBUTION = "ckpt-compat"
_START_TIMEOUT_SECONDS = 120.0


def require_server_package() -> None:
    """Make sure the server package is importable before anything starts.

    The distribution is checked by name, not only ``import app``: ``app`` is a common name, and
    another project's ``app`` package on the path must not be mistaken for the service.

    Raises:
        LocalServiceUnavailableError: Only the client is installed.
    """
    try:
        importlib.metadata.distribution(SERVER_DISTRIBUTION)
        found = importlib.util.find_spec("app.main") is not None
    except (importlib.metadata.PackageNotFoundError, ModuleNotFoundError):
        found = False
    if not found:
        raise LocalServiceUnavailableError(
            "--local runs the service in this process and needs the server package, which is "
            "not installed here (this is the client alone, ckpt-compat-client). Install the "
            "service (pip install ckpt-compat, from the repository root: pip install .) or "
            "check through a running one with --server URL (or CKPT_COMPAT_URL)."
        )


@contextlib.contextmanager
def local_service(*, workers: int = 1) -> Iterator[str]:
    """Serve the app on a free loopback port of this process; yields its base URL.

    Raises:
        LocalServiceUnavailableError: The server package is not installed.
        OSError: The service did not start.
    """
    require_server_package()
    import uvicorn

    from app.config import Settings
    from app.main import create_app

    with tempfile.TemporaryDirectory(prefix="ckpt-compat-local-") as data_dir:
        settings = Settings.model_validate(
            {"data_dir": data_dir, "workers": workers, "api_keys": ""}
        )
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        config = uvicorn.Config(create_app(settings), log_level="warning", lifespan="on")
        server = uvicorn.Server(config)
        thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
        thread.start()
        try:
            deadline = time.monotonic() + _START_TIMEOUT_SECONDS
            while not server.started:
                if not thread.is_alive() or time.monotonic() > deadline:
                    raise OSError("the local service did not start")
                time.sleep(0.05)
            yield f"http://127.0.0.1:{port}"
        finally:
            server.should_exit = True
            thread.join(timeout=60)
            sock.close()
