"""A worker's hold on the check it runs: a lease renewed in the background while it runs.

The database is the authority on who runs what. A claim (``CheckRepository.claim``) gives a
worker the check for ``LEASE_SECONDS``; ``Lease`` renews it every third of that from a
thread. A worker that is killed or loses its machine stops renewing; once the lease has
expired, the reaper (``app.jobs.reaper``) requeues the check once, then fails it.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from types import TracebackType

from app.jobs.repository import CheckRepository

log = logging.getLogger(__name__)

LEASE_SECONDS = 30.0
"""How long a claim holds without renewal (``CKPT_COMPAT_LEASE_SECONDS``); it is renewed
every third of that, so two renewals may fail before another process takes the check over."""


def worker_name() -> str:
    """This process, as the records name it: ``host:pid``."""
    return f"{socket.gethostname()}:{os.getpid()}"


class Lease:
    """Renews a claimed check's lease until the block ends.

    Example:
        >>> with Lease(repository, check_id, worker=worker_name()):  # doctest: +SKIP
        ...     run_the_check()
    """

    def __init__(
        self,
        repository: CheckRepository,
        check_id: str,
        *,
        worker: str,
        lease_seconds: float = LEASE_SECONDS,
    ) -> None:
        self._repository = repository
        self._check_id = check_id
        self._worker = worker
        self._every = lease_seconds / 3
        self._lease_seconds = lease_seconds
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._renew, name="lease", daemon=True)

    def __enter__(self) -> Lease:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._thread.join(timeout=self._every + 5)

    def _renew(self) -> None:
        while not self._stop.wait(self._every):
            try:
                held = self._repository.renew_lease(
                    self._check_id, worker=self._worker, lease_seconds=self._lease_seconds
                )
            except Exception:  # the database may be down for a moment: try again later
                log.warning("renewing the lease of check %s failed", self._check_id)
                continue
            if not held:
                return  # deleted, or taken over: nothing more to renew
