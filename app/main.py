"""The FastAPI application: wiring of storage, records, workers and routes in a lifespan.

Importing this module must not import torch: workers do that, the web process never does.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi_offline import FastAPIOffline
from starlette.concurrency import run_in_threadpool

from app import __version__
from app.api import metrics as metrics_routes
from app.api.auth import ApiKeyDep, install_api_keys
from app.api.deps import Services
from app.api.keys import load_keyring
from app.api.metrics import Metrics, RequestMetrics
from app.api.openapi_problems import document_problems
from app.api.problems import install_problem_handlers
from app.api.routes import architectures, checks, meta, mlflow_events, uploads
from app.callbacks.deliver import deliver_periodically
from app.config import Settings, get_settings
from app.integrations.mlflow_checks import MlflowIntegration
from app.jobs.catalog import ArchitectureCatalog
from app.jobs.db import make_engine
from app.jobs.expiry import expire_results, expire_uploads
from app.jobs.indexer import CatalogIndexer
from app.jobs.locks import SharedLock, try_exclusive
from app.jobs.mlflow_versions import MlflowVersions
from app.jobs.reaper import reap_once
from app.jobs.repository import CheckRecord, CheckRepository
from app.jobs.runner import make_runner
from app.jobs.worker import check_runtime
from app.logs import RequestIds
from app.storage import BlobStore, ResultStore, open_storage
from app.web import routes as pages

log = logging.getLogger(__name__)

REAP_EVERY_SECONDS = 10.0
"""How often the reaper looks for expired leases and lost messages."""

DOCS_ASSETS = "/docs-assets"  # Swagger UI and ReDoc scripts, shipped by fastapi-offline

DESCRIPTION = """
Upload a PyTorch checkpoint and name an architecture: ckpt-compat tells you which weights
fit, why the others do not, and hands you the merged state_dict.

Quick start: **POST /v1/checks** with `wait=30`, a file and `architecture=torchvision:resnet18`,
then open the report link.
"""


def _start_services(settings: Settings) -> Services:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    engine = make_engine(settings.database_url)
    repository = CheckRepository(engine)
    storage = open_storage(
        settings.storage_url,
        data_dir=settings.data_dir,
        presign=settings.storage_presigned_downloads,
    )
    blobs = BlobStore(storage)
    blobs.clear_temp()
    runner = make_runner(settings, on_job_failed=repository.mark_failed)
    runner.start()
    services = Services(
        settings=settings,
        repository=repository,
        blobs=blobs,
        results=ResultStore(storage),
        runner=runner,
        catalog=ArchitectureCatalog(runner),
        indexer=CatalogIndexer(runner, settings.cache_dir),
        uploads_lock=SharedLock(engine, "uploads"),
        engine=engine,
        metrics=Metrics(),
    )
    # Checks left queued by a stopped process are published again; a check left running has
    # a lease that expires, and the reaper then retries it once (app.jobs.reaper).
    _reap(services, republish_after=0.0)
    return services


def _reap(services: Services, *, republish_after: float | None = None) -> None:
    """One reaper pass, in the one API process that holds the reaper lock."""
    if republish_after is None:
        republish_after = services.settings.republish_after_seconds
    with try_exclusive(services.engine, "reaper") as leader:
        if leader:
            reap_once(services.repository, services.runner, republish_after=republish_after)


async def _reap_periodically(services: Services) -> None:
    while True:
        await asyncio.sleep(min(REAP_EVERY_SECONDS, services.settings.lease_seconds / 3))
        try:
            await run_in_threadpool(_reap, services)
        except Exception:
            log.exception("The reaper failed; trying again later.")


async def _expire_periodically(services: Services) -> None:
    """Remove expired uploads and results every quarter of the shorter TTL (at least hourly)."""
    settings = services.settings
    ttls = [t for t in (settings.upload_ttl_seconds, settings.result_ttl_seconds) if t]
    while True:
        await asyncio.sleep(min(*(t / 4 for t in ttls), 3600.0))
        try:
            await run_in_threadpool(_expire_once, services)
        except Exception:
            log.exception("Expiring uploads or results failed; trying again later.")


def _expire_once(services: Services) -> None:
    """One expiry sweep, in the one API process that holds the expiry lock."""
    with try_exclusive(services.engine, "expiry") as leader:
        if leader:
            _expire(services)


def _expire(services: Services) -> None:
    settings = services.settings
    if settings.result_ttl_seconds:
        expired = expire_results(
            services.results,
            services.blobs,
            services.repository,
            services.uploads_lock,
            ttl_seconds=settings.result_ttl_seconds,
        )
        if expired:
            log.info(
                "Removed the results of %d checks finished over %.0f s ago.",
                len(expired),
                settings.result_ttl_seconds,
            )
    if settings.upload_ttl_seconds:
        removed = expire_uploads(
            services.blobs,
            services.repository,
            services.uploads_lock,
            ttl_seconds=settings.upload_ttl_seconds,
        )
        if removed:
            log.info(
                "Removed %d uploads that no check uses, not sent for %.0f s.",
                len(removed),
                settings.upload_ttl_seconds,
            )


def _render(record: CheckRecord) -> str:
    """A callback's body: the check exactly as ``GET /v1/checks/{id}`` answers it."""
    return checks.to_wire(record).model_dump_json()


def _start_mlflow(app: FastAPI, services: Services) -> list[asyncio.Task[None]]:
    """The MLflow integration's state for the events route, and its two loops."""
    from app.integrations.mlflow_reconcile import reconcile_periodically
    from app.integrations.mlflow_tags import write_periodically

    integration = MlflowIntegration(
        settings=services.settings,
        repository=services.repository,
        results=services.results,
        runner=services.runner,
        catalog=services.catalog,
        versions=MlflowVersions(services.engine),
    )
    app.state.mlflow = integration
    writes = write_periodically(
        services.engine, results=services.results, settings=services.settings
    )
    return [
        asyncio.create_task(writes),
        asyncio.create_task(reconcile_periodically(integration, services.engine)),
    ]


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the app; ``settings`` defaults to the environment (``CKPT_COMPAT_*``)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        check_runtime()  # torch >= 2.10 and weights-only loading not switched off
        resolved = settings or get_settings()
        app.state.keyring = load_keyring(resolved)  # before anything starts: bad keys stop here
        services = _start_services(resolved)
        app.state.services = services
        assert services.metrics is not None
        services.metrics.attach(services)
        app.state.metrics = services.metrics
        if resolved.index_on_start:
            services.indexer.start()  # in workers, a chunk at a time, behind queued checks
        background = [asyncio.create_task(_reap_periodically(services))]
        if resolved.upload_ttl_seconds or resolved.result_ttl_seconds:
            background.append(asyncio.create_task(_expire_periodically(services)))
        if resolved.callback_hosts:  # signed callbacks, by one API process at a time
            deliveries = deliver_periodically(services.engine, render=_render, settings=resolved)
            background.append(asyncio.create_task(deliveries))
        if resolved.mlflow_webhook_secret:  # MLflow events in, tags out, reconciling
            background.extend(_start_mlflow(app, services))
        try:
            yield
        finally:
            for task in background:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await services.indexer.stop()
            services.runner.stop()

    # /docs and /redoc with their scripts served by the service, not from a CDN: registries
    # and training clusters often have no route to the internet.
    app = FastAPIOffline(
        title="ckpt-compat",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        static_url=DOCS_ASSETS,
    )
    install_problem_handlers(app)
    install_api_keys(app)
    document_problems(app)
    app.include_router(checks.router, dependencies=[ApiKeyDep])
    app.include_router(uploads.router, dependencies=[ApiKeyDep])
    app.include_router(architectures.router, dependencies=[ApiKeyDep])
    app.include_router(meta.router)
    app.include_router(mlflow_events.router)  # signed by MLflow instead of an API key
    app.include_router(metrics_routes.router, dependencies=[ApiKeyDep])
    app.add_middleware(RequestMetrics)
    app.add_middleware(RequestIds)  # outermost: every log line of the request has its id
    app.include_router(pages.router)  # /, the key form, /v1/checks/{id}/report.html
    return app
