"""The service objects one app instance owns, and the ``Annotated`` dependencies routes use."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy import Engine

from app.api.metrics import Metrics
from app.config import Settings
from app.jobs.catalog import ArchitectureCatalog
from app.jobs.indexer import CatalogIndexer
from app.jobs.locks import SharedLock
from app.jobs.repository import CheckRepository
from app.jobs.runner import JobRunner
from app.principals import Principal
from app.storage import BlobStore, ResultStore, UploadWriter


@dataclass(frozen=True)
class Services:
    """Everything a route may use; built in the lifespan, torn down with it."""

    settings: Settings
    repository: CheckRepository
    blobs: BlobStore
    results: ResultStore
    runner: JobRunner
    catalog: ArchitectureCatalog
    indexer: CatalogIndexer
    # Held while a check is recorded against a stored upload, while an upload is committed
    # and while one is deleted or expired, so no check is recorded for an upload that is
    # going; shared by every API process on the database (``app.jobs.locks``).
    uploads_lock: SharedLock
    engine: Engine  # for the locks held across API processes
    metrics: Metrics | None = None

    def commit_upload(
        self, writer: UploadWriter, principal: Principal | None = None
    ) -> tuple[str, int]:
        """``writer.commit()`` under ``uploads_lock``: expiry (``app.jobs.expiry``) never
        removes content while a second copy of it is being filed. With ``principal``, it
        holds the upload from then on (``PUT /v1/uploads``; a check's own upload is held
        when the check is recorded)."""
        with self.uploads_lock:
            sha256, size = writer.commit()
            if principal is not None and principal.owner is not None:
                self.repository.hold_upload(sha256, principal.owner)
        if self.metrics is not None:
            self.metrics.observe_upload(size, time.monotonic() - writer.started)
        return sha256, size


def get_services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(get_services)]
