"""``Idempotency-Key`` on ``POST /v1/checks`` (IETF draft-ietf-httpapi-idempotency-key-header).

A registry retrying a submission after a timeout must not start a second check: the same key
with the same request (principal, architecture, options, content) answers with the first
check in its current state; the key with another request is a 422; the key while its first
request is still being recorded is a 409. Keys are per principal, kept
``CKPT_COMPAT_IDEMPOTENCY_TTL_SECONDS``, and stored in the database, so every API process
agrees.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Annotated

from fastapi import Header

from app.api.deps import Services
from app.api.submissions import Submission
from app.errors import IdempotencyKeyInFlightError, IdempotencyKeyReusedError, InvalidRequestError
from app.jobs.idempotency import IdempotencyKeys
from app.principals import Principal

MAX_KEY_CHARS = 255

IdempotencyKeyHeader = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        max_length=MAX_KEY_CHARS + 2,  # the draft's sf-string may come quoted
        description="A unique key per submission (a UUID): a retry with the same key and the "
        "same request answers with the same check; with another request 422; while the first "
        "is in progress 409. Kept CKPT_COMPAT_IDEMPOTENCY_TTL_SECONDS (1 day), per API key.",
        examples=['"8e03978e-40d5-43e8-bc93-6894a57f9324"'],
    ),
]


@dataclass(frozen=True, slots=True)
class ClaimedKey:
    """A key this request holds: bind it to the check it records, or release it on failure."""

    owner: str
    key: str
    keys: IdempotencyKeys

    def bind(self, check_id: str) -> None:
        self.keys.bind(self.owner, self.key, check_id)

    def release(self) -> None:
        self.keys.release(self.owner, self.key)


def parse_key(raw: str) -> str:
    """The key from the header: an sf-string (quoted, per the draft) or a bare token.

    Raises:
        InvalidRequestError: Empty, too long, or not printable ASCII.
    """
    key = raw.strip()
    if len(key) >= 2 and key[0] == key[-1] == '"':
        key = key[1:-1]
    if not key or len(key) > MAX_KEY_CHARS or not all(" " <= c <= "~" for c in key):
        raise InvalidRequestError(
            f"Idempotency-Key must be 1 to {MAX_KEY_CHARS} printable ASCII characters "
            '(a UUID, optionally quoted: "8e03978e-...").'
        )
    return key


def request_fingerprint(submission: Submission) -> str:
    """What makes two submissions the same request (the principal scopes the key itself)."""
    identity = {
        "architecture": str(submission.architecture),
        "options": submission.options.model_dump(mode="json"),
        "sha256": submission.sha256,
        "source_path": submission.source_path,
    }
    text = json.dumps(identity, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def claim_key(
    services: Services, principal: Principal, raw_key: str, submission: Submission
) -> ClaimedKey | str:
    """Claim the key for this request, or name the check an identical request made.

    Returns:
        A ``ClaimedKey`` (record the check, then bind it), or the id of the check to answer
        with.

    Raises:
        IdempotencyKeyReusedError: The key was sent with a different request (422).
        IdempotencyKeyInFlightError: The first request with the key is not answered yet (409).
    """
    key, owner = parse_key(raw_key), principal.owner or ""
    keys = IdempotencyKeys(services.engine)
    fingerprint = request_fingerprint(submission)
    ttl = services.settings.idempotency_ttl_seconds
    for _ in range(2):
        entry = keys.claim(owner, key, fingerprint, ttl_seconds=ttl)
        if entry is None:
            return ClaimedKey(owner, key, keys)
        if entry.fingerprint != fingerprint:
            raise IdempotencyKeyReusedError(
                "This Idempotency-Key was sent before with a different request (architecture, "
                "options or checkpoint); use a new key for a new check."
            )
        if entry.check_id is None:
            raise IdempotencyKeyInFlightError(
                "The first request with this Idempotency-Key is still being processed; "
                "retry in a few seconds.",
                retry_after=1,
            )
        if services.repository.get(entry.check_id) is not None:
            return entry.check_id
        keys.release(owner, key)  # its check was deleted: the key starts over
    raise IdempotencyKeyInFlightError("The Idempotency-Key is contended; retry.", retry_after=1)
