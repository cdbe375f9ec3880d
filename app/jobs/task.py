"""``run_job(check_id)``: the one task every runner executes, in a worker process.

It is idempotent and takes only the id: the record says which upload and which
architecture, the blob store holds the file, the result store receives the report and
the merged file, and the record receives the outcome.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from app.config import Settings
from app.errors import AppError, InternalError
from app.jobs.db import make_engine
from app.jobs.repository import CheckRecord, CheckRepository
from app.schemas import CheckOptions, Report
from app.storage import BlobStore, ResultStore

log = logging.getLogger(__name__)

MERGED_STEM = "merged"


@dataclass(frozen=True)
class JobContext:
    """What a worker needs to run checks; built once per process."""

    settings: Settings
    repository: CheckRepository
    blobs: BlobStore
    results: ResultStore


def _context(settings: Settings) -> JobContext:
    return _context_for(settings.model_dump_json())


@cache
def _context_for(settings_json: str) -> JobContext:
    settings = Settings.model_validate_json(settings_json)
    return JobContext(
        settings=settings,
        repository=CheckRepository(make_engine(settings.database_url)),
        blobs=BlobStore(settings.data_dir),
        results=ResultStore(settings.data_dir),
    )


def run_job(check_id: str, settings: Settings) -> None:
    """Run one check to its end and record the outcome; a finished check is left alone."""
    ctx = _context(settings)
    record = ctx.repository.get(check_id)
    if record is None or record.status.finished:
        return
    ctx.repository.mark_running(check_id)
    try:
        merged_filename = _execute(record, ctx)
    except AppError as exc:
        ctx.repository.mark_failed(check_id, exc.to_problem())
    except Exception:
        log.exception("check %s failed unexpectedly", check_id)
        problem = InternalError(
            "The check failed unexpectedly. The error was logged on the server."
        ).to_problem()
        ctx.repository.mark_failed(check_id, problem)
    else:
        ctx.repository.mark_succeeded(check_id, merged_filename=merged_filename)


def _execute(record: CheckRecord, ctx: JobContext) -> str | None:
    from app.architectures import describe
    from app.matching.compare import compare
    from app.matching.report import build_report
    from app.readers import read_checkpoint

    options = CheckOptions.model_validate(record.options)
    path = ctx.blobs.path_for(record.sha256)

    def progress(stage: str, fraction: float) -> None:
        ctx.repository.set_progress(record.id, stage, fraction)

    progress("reading", 0.1)
    checkpoint = read_checkpoint(
        path, state_dict_key=options.state_dict_key, max_tensors=ctx.settings.max_tensors
    )
    progress("building", 0.3)
    architecture = describe(record.architecture, options.architecture_kwargs)
    progress("matching", 0.5)
    result = compare(checkpoint.index, architecture.index)
    merged: dict[str, Any] | None = None
    if options.merge is not None:
        progress("merging", 0.6)
        merged = _merge(record, ctx, path, options, checkpoint.state_dict_path, result.matched)
    progress("reporting", 0.95)
    report = build_report(
        check_id=record.id,
        filename=record.filename,
        sha256=record.sha256,
        size_bytes=record.size_bytes,
        checkpoint=checkpoint,
        architecture=architecture,
        result=result,
        merged=merged,
    )
    validated = Report.model_validate(report).model_dump(mode="json")
    ctx.results.write_report(record.id, validated)
    return merged["filename"] if merged else None


def _merge(
    record: CheckRecord,
    ctx: JobContext,
    path: Path,
    options: CheckOptions,
    state_dict_path: str,
    matched: Sequence[str],
) -> dict[str, Any]:
    """Write the architecture's initial state_dict updated with every matched tensor."""
    from app.architectures import build_model, resolve
    from app.matching.merge import merge_state_dict, write_state_dict
    from app.readers import load_tensors

    assert options.merge is not None
    fmt = options.merge.format
    model = build_model(resolve(record.architecture), options.architecture_kwargs, device="cpu")
    initial = model.state_dict()
    loaded = load_tensors(path, keys=matched, state_dict_path=state_dict_path)
    state = merge_state_dict(initial, loaded, dtype_policy=options.dtype_policy)
    filename = f"{MERGED_STEM}.{fmt}"
    ctx.results.prepare(record.id)
    metadata = {
        "source_sha256": record.sha256,
        "architecture": record.architecture,
        "architecture_kwargs": CheckOptions.model_validate(record.options).model_dump_json(
            include={"architecture_kwargs"}
        ),
        "loaded_keys": str(len(loaded)),
        "kept_keys": str(len(state) - len(loaded)),
        "check_id": record.id,
    }
    size = write_state_dict(
        state, ctx.results.merged_path(record.id, filename), format=fmt, metadata=metadata
    )
    return {
        "format": fmt,
        "filename": filename,
        "loaded_keys": len(loaded),
        "kept_keys": len(state) - len(loaded),
        "size_bytes": size,
    }
