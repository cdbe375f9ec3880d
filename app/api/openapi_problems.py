"""Make /openapi.json say what error responses really are: ``application/problem+json``.

FastAPI documents its validation answers (422) as ``application/json`` with its own error
model, while every error here is rendered by ``app.api.problems`` as an RFC 9457 problem.
Clients and schema-driven tests (schemathesis) read the document, so it must match. Likewise
the security schemes (Swagger UI's Authorize button) appear only when API keys are on: with
keys off, a button asking for one would mislead.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from app.api.problems import PROBLEM_MEDIA_TYPE
from app.schemas import Problem

_PROBLEM_REF = {"$ref": "#/components/schemas/Problem"}


def document_problems(app: FastAPI) -> None:
    """Install an ``app.openapi`` that documents every 4xx/5xx answer as a problem."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title,
                version=app.version,
                description=app.description,
                routes=app.routes,
            )
            _rewrite(schema)
            if not getattr(getattr(app.state, "keyring", None), "enabled", False):
                _drop_security(schema)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def _rewrite(schema: dict[str, Any]) -> None:
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    components["Problem"] = Problem.model_json_schema()
    for path in schema.get("paths", {}).values():
        for operation in path.values():
            for code, response in operation.get("responses", {}).items():
                if not code.startswith(("4", "5")):
                    continue
                content = response.setdefault("content", {})
                content.pop("application/json", None)
                content[PROBLEM_MEDIA_TYPE] = {"schema": _PROBLEM_REF}
    for unused in ("HTTPValidationError", "ValidationError"):
        components.pop(unused, None)


def _drop_security(schema: dict[str, Any]) -> None:
    schema.get("components", {}).pop("securitySchemes", None)
    for path in schema.get("paths", {}).values():
        for operation in path.values():
            operation.pop("security", None)
