"""MLflow webhook signatures: ours match MLflow's own signer, and every refusal is its problem."""

from __future__ import annotations

import time

import pytest

from app.errors import StaleWebhookError, WebhookSignatureError
from app.integrations.mlflow_signature import sign, verify

SECRET = "a-raw-secret"
BODY = b'{"entity": "model_version", "action": "created", "data": {}}'


def test_sign_matches_mlflows_own_signer() -> None:
    from mlflow.webhooks.delivery import _generate_hmac_signature

    ours = sign(SECRET, delivery_id="d-1", timestamp="1700000000", body=BODY)
    assert ours == _generate_hmac_signature(SECRET, "d-1", "1700000000", BODY.decode())


def _verify(**overrides: object) -> None:
    now = int(time.time())
    values: dict[str, object] = {
        "delivery_id": "d-1",
        "timestamp": str(now),
        "body": BODY,
        "tolerance_seconds": 300.0,
    }
    values.update(overrides)
    signature = sign(
        SECRET,
        delivery_id=str(values["delivery_id"]),
        timestamp=str(values["timestamp"]),
        body=BODY,
    )
    values.setdefault("signature", signature)
    verify(SECRET, **values)  # type: ignore[arg-type]


def test_verify_accepts_a_fresh_signed_delivery() -> None:
    _verify()


def test_verify_refuses_a_changed_body() -> None:
    with pytest.raises(WebhookSignatureError, match="does not match"):
        _verify(body=BODY + b" ")


def test_verify_refuses_another_secrets_signature() -> None:
    forged = sign("other", delivery_id="d-1", timestamp=str(int(time.time())), body=BODY)
    with pytest.raises(WebhookSignatureError, match="does not match"):
        _verify(signature=forged)


def test_verify_refuses_missing_headers() -> None:
    with pytest.raises(WebhookSignatureError, match="lacks"):
        _verify(signature=None)


def test_verify_refuses_a_stale_timestamp_after_the_signature() -> None:
    with pytest.raises(StaleWebhookError, match="CKPT_COMPAT_MLFLOW_WEBHOOK_TOLERANCE_SECONDS"):
        _verify(timestamp=str(int(time.time()) - 301))


def test_verify_refuses_a_timestamp_that_is_not_a_number() -> None:
    with pytest.raises(StaleWebhookError, match="not Unix seconds"):
        _verify(timestamp="yesterday")
