"""Service endpoints: health probes and the report's JSON Schema."""

from __future__ import annotations

import os
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from app.api.deps import ServicesDep
from app.principals import OPEN_ACCESS
from app.schemas import Report

router = APIRouter(tags=["service"])


@router.get("/livez", summary="The process is up")
async def livez() -> dict[str, str]:
    # async: answered on the event loop, never queued behind the thread pool under load
    return {"status": "ok"}


@router.get(
    "/readyz",
    summary="Database, data directory, storage, workers (and broker in Celery mode) are usable",
)
async def readyz(services: ServicesDep) -> JSONResponse:
    def probe() -> dict[str, Any]:
        checks: dict[str, Any] = {}
        try:
            services.repository.page(limit=1, offset=0, principal=OPEN_ACCESS)
            checks["database"] = "ok"
        except Exception:
            checks["database"] = "unavailable"
        writable = os.access(services.settings.data_dir, os.W_OK)
        checks["data_dir"] = "ok" if writable else "not writable"
        checks["storage"] = services.blobs.storage.probe() or "ok"
        if services.settings.queue == "celery":
            from app.jobs.redis_bus import reachable

            reached = reachable(services.settings.broker_url)
            checks["broker"] = "ok" if reached else "unavailable"
        ready = services.runner.ready_workers
        checks["workers"] = f"{ready} ready" if ready else "none ready"
        return checks

    checks = await run_in_threadpool(probe)
    ok = (
        checks["database"] == "ok"
        and checks["data_dir"] == "ok"
        and checks["storage"] == "ok"
        and checks.get("broker", "ok") == "ok"
        and "none" not in checks["workers"]
    )
    return JSONResponse(
        {"status": "ok" if ok else "unavailable", "checks": checks}, status_code=200 if ok else 503
    )


@router.get("/v1/schemas/report.json", summary="JSON Schema of the report")
def report_schema() -> dict[str, Any]:
    return Report.model_json_schema()
