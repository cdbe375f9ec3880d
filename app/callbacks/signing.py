"""Standard Webhooks signatures (https://www.standardwebhooks.com): the receiver verifies them
with any of the spec's libraries, so the secret is in the spec's ``whsec_<base64>`` form."""

from __future__ import annotations

import base64
import binascii
from datetime import datetime

from standardwebhooks.webhooks import Webhook


def check_secret(secret: str) -> None:
    """Raise ValueError unless ``secret`` is a usable ``whsec_`` secret (at settings load)."""
    if not secret.startswith("whsec_"):
        raise ValueError(
            "CKPT_COMPAT_CALLBACK_HOSTS is set, so CKPT_COMPAT_WEBHOOK_SECRET must be a "
            "Standard Webhooks secret: whsec_ followed by the base64 of 24 to 64 random "
            "bytes (e.g. 'whsec_' + base64 of os.urandom(32))."
        )
    encoded = secret.removeprefix("whsec_")
    try:
        key = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError(
            f"CKPT_COMPAT_WEBHOOK_SECRET is not valid base64 after whsec_: {exc}"
        ) from None
    if len(key) < 24:
        raise ValueError("CKPT_COMPAT_WEBHOOK_SECRET is too short: use at least 24 random bytes.")


def signed_headers(secret: str, *, message_id: str, sent_at: datetime, body: str) -> dict[str, str]:
    """The ``webhook-id``, ``webhook-timestamp`` and ``webhook-signature`` headers of a message.

    The id stays the same on every retry of one message, so a receiver can drop duplicates.
    """
    signature = Webhook(secret).sign(msg_id=message_id, timestamp=sent_at, data=body)
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(int(sent_at.timestamp())),
        "webhook-signature": signature,
    }
