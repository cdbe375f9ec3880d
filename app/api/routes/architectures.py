"""``/v1/architectures``: what can be checked against, and the tensors each one expects."""

from __future__ import annotations

import fnmatch
import json
from typing import Annotated, Any

from fastapi import APIRouter, Query

from app.api.deps import ServicesDep
from app.api.problems import PROBLEM_MEDIA_TYPE
from app.errors import InvalidRequestError
from app.names import SOURCE_PRECEDENCE
from app.schemas import ArchitectureDetail, ArchitectureItem, ArchitectureList

router = APIRouter(prefix="/v1/architectures", tags=["architectures"])

_PROBLEM = {"content": {PROBLEM_MEDIA_TYPE: {}}, "description": "A problem (RFC 9457)."}


@router.get("", response_model=ArchitectureList, summary="List architectures")
async def list_architectures(
    services: ServicesDep,
    q: Annotated[
        str | None, Query(description="Glob over names, e.g. resnet* or timm:vit_*.")
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
    pattern = q.lower() if q else None
    selected = [
        n
        for n in names
        if (source is None or n.source == source)
        and (
            pattern is None
            or fnmatch.fnmatchcase(n.name.lower(), pattern)
            or fnmatch.fnmatchcase(str(n).lower(), pattern)
        )
    ]
    page = selected[offset : offset + limit]
    return ArchitectureList(
        items=[ArchitectureItem(name=str(n), source=n.source) for n in page], total=len(selected)
    )


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
