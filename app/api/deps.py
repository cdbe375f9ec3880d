"""The service objects one app instance owns, and the ``Annotated`` dependencies routes use."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from app.config import Settings
from app.jobs.catalog import ArchitectureCatalog
from app.jobs.pool import WorkerPool
from app.jobs.repository import CheckRepository
from app.storage import BlobStore, ResultStore


@dataclass(frozen=True)
class Services:
    """Everything a route may use; built in the lifespan, torn down with it."""

    settings: Settings
    repository: CheckRepository
    blobs: BlobStore
    results: ResultStore
    pool: WorkerPool
    catalog: ArchitectureCatalog


def get_services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(get_services)]
