"""MLflow webhook signatures: ``X-MLflow-Signature`` over ``{delivery_id}.{timestamp}.{body}``.

MLflow (``mlflow/webhooks/delivery.py``, ``_generate_hmac_signature``) signs the JSON it sends
with HMAC-SHA256 keyed by the webhook's raw secret (no ``whsec_`` encoding, unlike Standard
Webhooks) and sends ``v1,`` plus the base64 digest. The timestamp is signed too, so checking
it after the signature refuses a replayed delivery without trusting a forged clock.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time

from app.errors import StaleWebhookError, WebhookSignatureError

SIGNATURE_HEADER = "x-mlflow-signature"
TIMESTAMP_HEADER = "x-mlflow-timestamp"
DELIVERY_ID_HEADER = "x-mlflow-delivery-id"
SIGNATURE_VERSION = "v1"


def sign(secret: str, *, delivery_id: str, timestamp: str, body: bytes) -> str:
    """The ``X-MLflow-Signature`` value MLflow sends for ``body``.

    Example:
        >>> sign("s3cret", delivery_id="d", timestamp="1700000000", body=b"{}")
        'v1,k7YkUWrGACcPJvra9Qhv3EHEgy3zYNAddsvSFvUoVQc='
    """
    signed = f"{delivery_id}.{timestamp}.".encode() + body
    digest = hmac.new(secret.encode(), signed, hashlib.sha256).digest()
    return f"{SIGNATURE_VERSION},{base64.b64encode(digest).decode()}"


def verify(
    secret: str,
    *,
    delivery_id: str | None,
    timestamp: str | None,
    signature: str | None,
    body: bytes,
    tolerance_seconds: float,
    now: float | None = None,
) -> None:
    """Accept a delivery whose signature verifies and whose timestamp is recent.

    Raises:
        WebhookSignatureError: A header is missing or the signature does not verify (401).
        StaleWebhookError: The signed timestamp is further than ``tolerance_seconds`` from
            now (400): a replay, or a clock far off.
    """
    if not (delivery_id and timestamp and signature):
        raise WebhookSignatureError(
            "The delivery lacks X-MLflow-Delivery-Id, X-MLflow-Timestamp or "
            "X-MLflow-Signature: create the MLflow webhook with a secret equal to "
            "CKPT_COMPAT_MLFLOW_WEBHOOK_SECRET."
        )
    expected = sign(secret, delivery_id=delivery_id, timestamp=timestamp, body=body)
    if not hmac.compare_digest(expected.encode(), signature.strip().encode()):
        raise WebhookSignatureError(
            "X-MLflow-Signature does not match the body signed with "
            "CKPT_COMPAT_MLFLOW_WEBHOOK_SECRET: the secrets differ, or the body was changed."
        )
    try:
        sent = int(timestamp)
    except ValueError:
        raise StaleWebhookError(
            f"X-MLflow-Timestamp {timestamp[:40]!r} is not Unix seconds."
        ) from None
    skew = abs((time.time() if now is None else now) - sent)
    if skew > tolerance_seconds:
        raise StaleWebhookError(
            f"The delivery was signed {skew:.0f} s away from this server's clock, over "
            f"{tolerance_seconds:.0f} s (CKPT_COMPAT_MLFLOW_WEBHOOK_TOLERANCE_SECONDS): a "
            "replay, or a clock that is off.",
        )
