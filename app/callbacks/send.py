"""One delivery attempt: the allowlist checked again, a signed POST, no redirect followed.

Runs in a thread of the API process (never on the event loop, never in a worker). A redirect
is an answer, not an instruction: following it could take the request to a host the allowlist
never allowed, so a 3xx is recorded as a failed attempt.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import httpx

from app import __version__
from app.callbacks.hosts import HostPattern, require_allowed
from app.callbacks.signing import signed_headers
from app.errors import CallbackNotAllowedError

MAX_ERROR_CHARS = 300


@dataclass(frozen=True, slots=True)
class Attempt:
    """What one attempt got: an HTTP status, or an error before any status."""

    status_code: int | None
    error: str | None

    @property
    def delivered(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


def post_signed(
    url: str,
    body: str,
    *,
    message_id: str,
    sent_at: datetime,
    secret: str,
    hosts: tuple[HostPattern, ...],
    timeout: float,
) -> Attempt:
    """POST ``body`` (JSON) to ``url``, signed; a 2xx answer delivers it.

    Example:
        >>> post_signed("http://10.9.9.9/", "{}", message_id="m", sent_at=now,
        ...             secret=secret, hosts=(), timeout=5)  # doctest: +SKIP
        Attempt(status_code=None, error='Callbacks are off on this service: ...')
    """
    try:
        require_allowed(url, hosts)
    except CallbackNotAllowedError as exc:
        return Attempt(None, exc.detail[:MAX_ERROR_CHARS])
    headers = {
        "content-type": "application/json",
        "user-agent": f"ckpt-compat/{__version__}",
        **signed_headers(secret, message_id=message_id, sent_at=sent_at, body=body),
    }
    try:
        # trust_env=False: no proxy from the environment, so the allowlisted host is the one
        # connected to.
        with httpx.Client(timeout=timeout, follow_redirects=False, trust_env=False) as client:
            response = client.post(url, content=body.encode(), headers=headers)
    except httpx.HTTPError as exc:
        return Attempt(None, f"{type(exc).__name__}: {exc}"[:MAX_ERROR_CHARS])
    if response.is_redirect:
        target = response.headers.get("location", "")
        error = f"redirect to {target!r} not followed"
        return Attempt(response.status_code, error[:MAX_ERROR_CHARS])
    return Attempt(response.status_code, None)
