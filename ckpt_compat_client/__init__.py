"""The ckpt-compat client: the HTTP client, its typed exceptions, the training-plan helper and
the ``check`` / ``architectures`` / ``report`` commands.

It needs httpx, typer and rich, never torch nor the server's dependencies: it installs alone
as the ``ckpt-compat-client`` distribution (``pip install ./clients/python``), and the server
distribution ``ckpt-compat`` ships the same package.

Example:
    >>> from ckpt_compat_client import Client, apply_training_plan  # doctest: +SKIP
    >>> with Client("http://ckpt-compat:8000") as client:  # doctest: +SKIP
    ...     check = client.check(Path("r18.pth"), "torchvision:resnet18")
    ...     report = client.report(check["id"])
"""

from ckpt_compat_client.client import Client, Progress
from ckpt_compat_client.errors import (
    CheckFailedError,
    LocalServiceUnavailableError,
    ServiceError,
)
from ckpt_compat_client.training import apply_training_plan, freeze_norm_statistics

__version__ = "0.1.0"

__all__ = [
    "CheckFailedError",
    "Client",
    "LocalServiceUnavailableError",
    "Progress",
    "ServiceError",
    "__version__",
    "apply_training_plan",
    "freeze_norm_statistics",
]
