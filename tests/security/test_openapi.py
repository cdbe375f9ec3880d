"""schemathesis against the service's own /openapi.json: no 500s, responses match the schema.

Each operation gets a bounded number of generated requests (valid and invalid ones) sent
in-process to the running app; the run fails on any 5xx, any undocumented status code or
content type, and any response body that does not match its documented schema.
"""

from __future__ import annotations

from typing import Any

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

pytestmark = [pytest.mark.schemathesis, pytest.mark.slow]

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
EXAMPLES_PER_OPERATION = 25


def _operations(client: TestClient) -> list[Any]:
    # The lifespan runs in the client; schemathesis calls the same app in-process.
    schema = schemathesis.openapi.from_asgi("/openapi.json", client.app)
    return [result.ok() for result in schema.get_all_operations()]


def test_openapi_every_operation_answers_within_its_schema(corpus_client: TestClient) -> None:
    # The first listing of the catalogue imports timm and transformers (seconds on 2 busy
    # cores): made here, so schemathesis' 10 s read timeout measures the answers, not imports.
    assert corpus_client.get("/v1/architectures", params={"limit": 1}).status_code == 200
    operations = _operations(corpus_client)
    assert len(operations) >= 8
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=EXAMPLES_PER_OPERATION,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def run(case: schemathesis.Case) -> None:
            case.call_and_validate(checks=CHECKS)

        run()
