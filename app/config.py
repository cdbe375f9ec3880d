"""Settings from the environment (prefix ``CKPT_COMPAT_``), one cached instance per process."""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


def _default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "ckpt-compat"


def _default_workers() -> int:
    return max(1, min(2, os.cpu_count() or 1))


WORKER_MEMORY_SHARE = 0.8
"""The share of the machine's memory the workers may take together; the rest is the web
process's, the page cache's and the system's."""


def derived_worker_memory(workers: int, physical_bytes: int | None = None) -> int:
    """The default ``max_worker_memory_bytes``: ``WORKER_MEMORY_SHARE`` of the machine's memory
    divided by the workers, so that every worker at its cap still fits (at least 1 GiB).

    Example:
        >>> derived_worker_memory(2, physical_bytes=24 * 1024**3) / 1024**3
        9.6
    """
    if physical_bytes is None:
        try:
            physical_bytes = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError):
            physical_bytes = 8 * 1024**3
    return max(1024**3, int(physical_bytes * WORKER_MEMORY_SHARE / max(1, workers)))


class Settings(BaseSettings):
    """Every tunable of the service, with embedded defaults that run on one machine."""

    model_config = SettingsConfigDict(env_prefix="CKPT_COMPAT_", extra="ignore")

    data_dir: Path = Field(
        default=Path("data"),
        description="Local scratch (temp files, the SQLite default); uploads and results too "
        "unless storage_url names another place.",
    )
    workers: int = Field(default_factory=_default_workers, ge=1, le=64)  # processes
    max_upload_bytes: int = Field(default=20 * 1024**3, ge=1)  # bytes
    upload_ttl_seconds: float = Field(default=86400.0, ge=0)  # unused uploads kept, 0 = ever
    max_tensors: int = Field(default=100_000, ge=1)  # tensors per checkpoint
    max_wait_seconds: float = Field(default=60.0, ge=0)  # seconds a request may hold for a result
    check_timeout_seconds: float = Field(default=900.0, gt=0)  # seconds per check before kill
    worker_max_tasks: int = Field(default=100, ge=1)  # checks before a worker is recycled
    worker_max_rss_bytes: int = Field(default=3 * 1024**3, ge=0)  # bytes; recycle above, 0 = off
    source_roots: Annotated[list[Path], NoDecode] = Field(
        default_factory=list,
        description="Directories whose files POST /v1/checks may read by path "
        "(os.pathsep- or comma-separated); empty = path sources are off.",
    )
    # bytes; a merge into a model up to this size initialises new keys by a real build (exact
    # to the architecture's own init); larger models initialise only the modules that need it
    exact_init_max_bytes: int = Field(default=1024**3, ge=0)
    cache_dir: Path = Field(
        default_factory=_default_cache_dir,
        description="The catalogue's shape-signature index, one per set of library versions; "
        "data directories on one machine share it ($XDG_CACHE_HOME/ckpt-compat by default).",
    )
    index_on_start: bool = Field(
        default=True,
        description="Build the catalogue index in the background at start-up when the cache "
        "has none for the installed libraries (in a worker, a chunk at a time).",
    )
    reuse_results: bool = Field(
        default=True, description="Answer a repeated check from the stored result."
    )
    # Hostile-input limits (issue 5); each refusal names its setting and value.
    max_pickle_bytes: int = Field(default=64 * 1024**2, ge=1)  # bytes of pickle scanned/loaded
    max_header_bytes: int = Field(default=32 * 1024**2, ge=2)  # bytes of safetensors JSON header
    max_zip_entries: int = Field(default=300_000, ge=1)  # records in a torch zip archive
    max_depth: int = Field(default=64, ge=2)  # levels of container nesting inside a pickle
    max_pickle_nodes: int = Field(default=20_000_000, ge=1)  # values, shared refs counted again
    max_key_length: int = Field(default=1024, ge=1)  # characters per state_dict key
    # bytes of address space a worker may add after its imports (RLIMIT_AS), besides the
    # checkpoint files it maps; 0 = no limit, -1 = derived: 80% of the machine's memory
    # shared by the workers (``derived_worker_memory``)
    max_worker_memory_bytes: int = Field(default=-1, ge=-1)
    max_report_bytes: int = Field(default=64 * 1024**2, ge=1024)  # bytes of one report's JSON
    max_merged_bytes: int = Field(default=32 * 1024**3, ge=1)  # bytes of one merged file
    # seconds a finished check's results are kept (then it answers 410); 0 = kept until deleted
    result_ttl_seconds: float = Field(default=7 * 86400.0, ge=0)
    api_keys: str = Field(
        default="",
        repr=False,
        description="Comma-separated API keys, each 'name=key' or a plain key; when set (or "
        "api_keys_file), /v1 needs one and each key's principal owns its checks and uploads.",
    )
    api_keys_file: Path | None = Field(
        default=None,
        description="A file of API keys ('name=key' or plain), one per line ('#' starts a "
        "comment).",
    )
    admin_keys: str = Field(
        default="",
        description="Comma-separated names of API keys that see and manage every check and "
        "upload (a plain key's name is 'key-' plus 12 hex digits of its sha256).",
    )

    # The distributed mode (README "Running at scale"); every default runs on one machine.
    database_url: str = Field(
        default="",
        description="SQLAlchemy URL of the check records; empty = SQLite in data_dir. "
        "PostgreSQL: postgresql+psycopg://user:password@host/db.",
    )
    queue: Literal["local", "celery"] = Field(
        default="local",
        description="local: worker processes of the web process; celery: Celery workers "
        "on broker_url (ckpt-compat worker).",
    )
    broker_url: str = Field(default="", description="The Celery broker (redis://host:6379/0).")
    log_format: Literal["text", "json"] = Field(
        default="text",
        description="text, or json: one JSON object a line, with request and check ids.",
    )
    storage_url: str = Field(
        default="",
        description="Where uploads, reports and merged files live: empty = data_dir; "
        "file:///shared/dir = a directory every API process and worker mounts; "
        "s3://bucket/prefix = object storage (credentials and endpoint from AWS_* variables).",
    )
    storage_presigned_downloads: bool = Field(
        default=False,
        description="With s3:// storage, answer GET /merged with a redirect to a presigned "
        "URL instead of streaming through the API (breaks curl -OJ's file name).",
    )
    source_uris: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="URI prefixes (s3://bucket/prefix/) whose objects POST /v1/checks may "
        "read by uri (comma-separated); empty = URI sources are off.",
    )
    # seconds a worker's claim on a check holds without renewal (renewed every third of it);
    # a check whose worker died is retried once this long after its last renewal
    lease_seconds: float = Field(default=30.0, ge=1)
    # seconds after which a queued check nobody took is published again (lost messages)
    republish_after_seconds: float = Field(default=60.0, ge=0.5)

    # Registry integration (issue 15): signed callbacks and idempotency keys.
    webhook_secret: str = Field(
        default="",
        repr=False,
        description="The Standard Webhooks secret (whsec_ + base64) that signs callbacks.",
    )
    callback_hosts: str = Field(
        default="",
        description="Comma-separated host or host:port patterns ('*.example.com' for "
        "subdomains) that options.callback_url may name; empty = callbacks are off.",
    )
    callback_retry_seconds: float = Field(default=86400.0, ge=0)  # seconds a callback is retried
    callback_backoff_seconds: float = Field(default=5.0, gt=0)  # seconds before the 1st retry
    callback_timeout_seconds: float = Field(default=10.0, gt=0)  # seconds per delivery attempt
    idempotency_ttl_seconds: float = Field(default=86400.0, gt=0)  # seconds a key is kept

    # Registry integration (issue 15): MLflow sources, events in, tags out (app/integrations).
    public_url: str = Field(
        default="",
        description="The service's own base URL as its users reach it (https://ckpt.example); "
        "absolute links written elsewhere (the MLflow tag ckpt_compat.report_url) start with it.",
    )
    mlflow_tracking_uri: str = Field(
        default="",
        description="The MLflow tracking server that models:/, runs:/ and mlflow-artifacts:/ "
        "sources and MLflow events resolve through; empty = MLFLOW_TRACKING_URI.",
    )
    mlflow_webhook_secret: str = Field(
        default="",
        repr=False,
        description="The secret of the MLflow webhook that POSTs to "
        "/v1/integrations/mlflow/events; empty = the endpoint, tag writes and reconciling "
        "are off.",
    )
    mlflow_principal: str = Field(
        default="mlflow",
        min_length=1,
        max_length=64,
        description="The principal (API key name) that owns checks started by MLflow events "
        "and by reconciling; an API key of that name, or an admin key, sees them.",
    )
    mlflow_webhook_tolerance_seconds: float = Field(default=300.0, gt=0)  # seconds of clock skew
    # seconds between reconciling passes (versions tagged for a check that have no verdict);
    # 0 = only at start-up
    mlflow_reconcile_seconds: float = Field(default=300.0, ge=0)

    @field_validator("source_roots", mode="before")
    @classmethod
    def _split_roots(cls, value: object) -> object:
        if isinstance(value, str):
            parts = value.replace(",", os.pathsep).split(os.pathsep)
            return [Path(p.strip()) for p in parts if p.strip()]
        return value

    @field_validator("source_uris", mode="before")
    @classmethod
    def _split_uris(cls, value: object) -> object:
        if isinstance(value, str):
            return [p.strip() for p in value.split(",") if p.strip()]
        return value

    @field_validator("storage_url")
    @classmethod
    def _check_storage_url(cls, value: str) -> str:
        from app.storage.factory import storage_root

        storage_root(value)  # ValueError: the message names what works
        return value

    @model_validator(mode="after")
    def _check_callbacks(self) -> Settings:
        from app.callbacks.hosts import parse_host_patterns
        from app.callbacks.signing import check_secret

        if parse_host_patterns(self.callback_hosts):  # ValueError names a bad pattern
            check_secret(self.webhook_secret)  # callbacks on: they must be signable
        return self

    @model_validator(mode="after")
    def _check_mlflow(self) -> Settings:
        if self.mlflow_webhook_secret and not self.public_url.startswith(("http://", "https://")):
            raise ValueError(
                "CKPT_COMPAT_MLFLOW_WEBHOOK_SECRET is set, so CKPT_COMPAT_PUBLIC_URL must be the "
                "service's absolute base URL (https://ckpt.example): the MLflow tag "
                "ckpt_compat.report_url links to the report there."
            )
        return self

    @model_validator(mode="after")
    def _default_database(self) -> Settings:
        if not self.database_url:
            self.database_url = f"sqlite:///{self.data_dir / 'ckpt_compat.db'}"
        if self.queue == "celery":
            if self.database_url.startswith("sqlite"):
                raise ValueError(
                    "CKPT_COMPAT_QUEUE=celery needs a database every process can reach: set "
                    "CKPT_COMPAT_DATABASE_URL=postgresql+psycopg://... (SQLite lives on one "
                    "machine's disk)."
                )
            if not self.broker_url:
                raise ValueError(
                    "CKPT_COMPAT_QUEUE=celery needs CKPT_COMPAT_BROKER_URL (redis://host:6379/0)."
                )
        return self

    @model_validator(mode="after")
    def _derive_worker_memory(self) -> Settings:
        if self.max_worker_memory_bytes < 0:
            self.max_worker_memory_bytes = derived_worker_memory(self.workers)
        return self


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings, read once from the environment."""
    return Settings()
