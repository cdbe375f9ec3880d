"""Settings from the environment (prefix ``CKPT_COMPAT_``), one cached instance per process."""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


def _default_workers() -> int:
    return max(1, min(2, os.cpu_count() or 1))


class Settings(BaseSettings):
    """Every tunable of the service, with embedded defaults that run on one machine."""

    model_config = SettingsConfigDict(env_prefix="CKPT_COMPAT_", extra="ignore")

    data_dir: Path = Field(default=Path("data"), description="Uploads, results and the database.")
    workers: int = Field(default_factory=_default_workers, ge=1, le=64)  # processes
    max_upload_bytes: int = Field(default=20 * 1024**3, ge=1)  # bytes
    max_tensors: int = Field(default=100_000, ge=1)  # tensors per checkpoint
    max_wait_seconds: float = Field(default=60.0, ge=0)  # seconds a request may hold for a result
    check_timeout_seconds: float = Field(default=900.0, gt=0)  # seconds per check before kill
    worker_max_tasks: int = Field(default=100, ge=1)  # checks before a worker is recycled

    @property
    def database_url(self) -> str:
        """SQLite database inside the data directory."""
        return f"sqlite:///{self.data_dir / 'ckpt_compat.db'}"


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings, read once from the environment."""
    return Settings()
