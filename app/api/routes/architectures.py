"""``/v1/architectures``: what can be checked against, and the tensors each one expects."""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Query
from starlette.concurrency import run_in_threadpool

from app.api.deps import ServicesDep
from app.api.problems import PROBLEM_MEDIA_TYPE
from app.errors import InvalidRequestError
from app.names import SOURCE_PRECEDENCE, QualifiedName
from app.patterns import MAX_GLOB_CHARS, compile_glob
from app.schemas import ArchitectureDetail, ArchitectureItem, ArchitectureList

router = APIRouter(prefix="/v1/architectures", tags=["architectures"])

_PROBLEM = {"content": {PROBLEM_MEDIA_TYPE: {}}, "description": "A problem (RFC 9457)."}


@router.get("", response_model=ArchitectureList, summary="List architectures")
async def list_architectures(
    services: ServicesDep,
    q: Annotated[
        str | None,
        Query(
            max_length=MAX_GLOB_CHARS,
            description="Glob over names, e.g. resnet* or timm:vit_* (case-insensitive).",
        ),
    ] = None,
    source: Annotated[
        str | None, Query(description=f"One of {', '.join(SOURCE_PRECEDENCE)}.")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=5000)] = 100,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> ArchitectureList:
    """Architectures sorted by name; `q` matches the bare or the qualified name."""
    if source is not None and source not in SOURCE_PRECEDENCE:
        raise InvalidRequestError(f"source must be one of {', '.join(SOURCE_PRECEDENCE)}.")
    names = await services.catalog.names()
    # Matched off the event loop; RE2 runs in time linear in each name.
    selected = await run_in_threadpool(_select, names, q, source)
    page = selected[offset : offset + limit]
    return ArchitectureList(
        items=[ArchitectureItem(name=str(n), source=n.source) for n in page], total=len(selected)
    )


def _select(names: list[QualifiedName], q: str | None, source: str | None) -> list[QualifiedName]:
    """The names of ``source`` (all when None) whose bare or qualified name matches ``q``.

    Raises:
        InvalidRequestError: ``q`` does not translate into a bounded pattern.
    """
    try:
        matcher = compile_glob(q.lower()) if q else None
    except ValueError as exc:
        raise InvalidRequestError(f"q is not a usable glob: {exc}.") from None
    return [
        n
        for n in names
        if (source is None or n.source == source)
        and (
            matcher is None
            or matcher.fullmatch(n.name.lower()) is not None
            or matcher.fullmatch(str(n).lower()) is not None
        )
    ]


@router.get(
    "/{name}",
    response_model=ArchitectureDetail,
    responses={404: _PROBLEM, 422: _PROBLEM},
    summary="The tensors an architecture expects",
)
async def get_architecture(
    name: str,
    services: ServicesDep,
    kwargs: Annotated[
        str | None, Query(description='Constructor kwargs as JSON, e.g. {"num_classes": 10}.')
    ] = None,
) -> dict[str, Any]:
    """Built on the meta device: keys, shapes, dtypes and kinds, with no weight memory."""
    parsed: Any = {}
    if kwargs:
        try:
            parsed = json.loads(kwargs)
        except json.JSONDecodeError as exc:
            raise InvalidRequestError(f"kwargs is not valid JSON: {exc.msg}.") from None
        if not isinstance(parsed, dict):
            raise InvalidRequestError("kwargs must be a JSON object.")
    qualified = await services.catalog.resolve(name)
    return await services.catalog.describe(qualified, parsed)
