"""The client's typed exceptions: a problem the service answered, and a check that failed.

A pipeline branches on these rather than on HTTP details: ``ServiceError.type`` is the
problem's stable slug (``/problems/architecture-not-found``), the same one the README lists.
"""

from __future__ import annotations

from typing import Any


class ServiceError(Exception):
    """The service answered with a problem (or not as it should).

    Attributes:
        status: The HTTP status.
        problem: The problem document (``type``, ``title``, ``detail``, and its extensions
            such as ``suggestions`` or ``retry_after``).
    """

    def __init__(self, status: int, problem: dict[str, Any]) -> None:
        self.status = status
        self.problem = problem
        title = problem.get("title") or "Error"
        super().__init__(f"{title} ({status}): {problem.get('detail', '')}".strip())

    @property
    def type(self) -> str:
        """The problem's stable ``type`` (``/problems/architecture-not-found``, ...)."""
        return str(self.problem.get("type", ""))


class CheckFailedError(ServiceError):
    """The check ran and failed: a 200 resource with ``status: "failed"`` on the wire, an
    exception here. ``problem`` is its ``error``, ``check`` the resource."""

    def __init__(self, check: dict[str, Any]) -> None:
        problem = check.get("error") or {"title": "Check failed", "status": 422}
        super().__init__(int(problem.get("status", 422)), problem)
        self.check = check


class LocalServiceUnavailableError(RuntimeError):
    """``--local`` was asked where the server package (``ckpt-compat``) is not installed."""
