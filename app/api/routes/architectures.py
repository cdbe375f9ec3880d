"""``/v1/architectures``: what can be checked against, and the tensors each one expects."""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Query
from starlette.concurrency import run_in_threadpool

from app.api.auth import PrincipalDep
from app.api.deps import Services, ServicesDep
from app.api.problems import PROBLEM_MEDIA_TYPE
from app.api.routes.checks import visible_record
from app.errors import CatalogIndexNotReadyError, InvalidRequestError
from app.jobs.indexer import CatalogIndexer
from app.names import SOURCE_PRECEDENCE, QualifiedName
from app.patterns import MAX_GLOB_CHARS, compile_glob
from app.principals import Principal
from app.schemas import (
    ArchitectureDetail,
    ArchitectureFitList,
    ArchitectureItem,
    ArchitectureList,
)

router = APIRouter(prefix="/v1/architectures", tags=["architectures"])

_PROBLEM = {"content": {PROBLEM_MEDIA_TYPE: {}}, "description": "A problem (RFC 9457)."}


@router.get(
    "",
    response_model=ArchitectureList | ArchitectureFitList,
    responses={404: _PROBLEM, 503: _PROBLEM},
    summary="List architectures, or rank them for a check",
)
async def list_architectures(
    services: ServicesDep,
    principal: PrincipalDep,
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
    fits: Annotated[
        str | None,
        Query(
            max_length=200,
            description="A check id: rank the catalogue for that check's checkpoint, best "
            "first (503 with Retry-After while the catalogue index is being built).",
        ),
    ] = None,
) -> ArchitectureList | ArchitectureFitList:
    """Architectures sorted by name; `q` matches the bare or the qualified name.

    With `fits`, the architectures (filtered by `q` and `source`) ranked by how well the
    check's checkpoint fits them, with the constructor arguments inferred from its shapes.
    """
    if source is not None and source not in SOURCE_PRECEDENCE:
        raise InvalidRequestError(f"source must be one of {', '.join(SOURCE_PRECEDENCE)}.")
    if fits is not None:
        return await _rank_for_check(services, principal, fits, q, source, limit, offset)
    names = await services.catalog.names()
    # Matched off the event loop; RE2 runs in time linear in each name.
    selected = await run_in_threadpool(_select, names, q, source)
    page = selected[offset : offset + limit]
    return ArchitectureList(
        items=[ArchitectureItem(name=str(n), source=n.source) for n in page], total=len(selected)
    )


async def _rank_for_check(
    services: Services,
    principal: Principal,
    check_id: str,
    q: str | None,
    source: str | None,
    limit: int,
    offset: int,
) -> ArchitectureFitList:
    """Rank in a worker, behind queued checks; the check's owner rules apply (404)."""
    await run_in_threadpool(visible_record, services, check_id, principal)
    indexer = services.indexer
    if not indexer.ready:
        raise _not_ready(indexer)
    names = None
    if q or source:
        everything = await services.catalog.names()
        names = [str(n) for n in await run_in_threadpool(_select, everything, q, source)]
    ranked = await services.runner.call(
        "rank_check", urgent=False, check_id=check_id, names=names, limit=limit, offset=offset
    )
    if ranked is None:  # the index went away between the two looks (a cache cleaned)
        raise _not_ready(indexer)
    return ArchitectureFitList.model_validate(ranked)


def _not_ready(indexer: CatalogIndexer) -> CatalogIndexNotReadyError:
    if indexer.building:
        state = f"being built ({indexer.built} of {indexer.total} architectures)"
    else:
        state = (
            "not built (run 'ckpt-compat index', or start the server with "
            "CKPT_COMPAT_INDEX_ON_START=true)"
        )
    return CatalogIndexNotReadyError(
        f"The catalogue index is {state}; try again later.",
        retry_after=indexer.retry_after(),
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
