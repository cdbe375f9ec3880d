"""The Python client lives in ``ckpt_compat_client.client`` (it installs alone, without the
server: ``pip install ./clients/python``); this name stays for ``from app.client import Client``."""

from ckpt_compat_client.client import CheckFailedError, Client, Progress, ServiceError

__all__ = ["CheckFailedError", "Client", "Progress", "ServiceError"]
