"""``run_job(check_id)``: the one task every runner executes, in a worker process.

It is idempotent and takes only the id: the record says which upload and which
architecture, the blob store holds the file, the result store receives the report and
the merged file, and the record receives the outcome.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from app import logs
from app.config import Settings
from app.errors import (
    AppError,
    CheckNotFoundError,
    InternalError,
    SourceChangedError,
)
from app.jobs.db import make_engine
from app.jobs.lease import Lease, worker_name
from app.jobs.memory import is_out_of_memory, mapped_file_allowance, memory_limit_error
from app.jobs.repository import CheckRecord, CheckRepository
from app.schemas import CheckOptions
from app.schemas.report import report_schema_tag
from app.storage import BlobStore, ResultStore, open_storage
from app.storage.s3 import S3Storage
from app.storage.sources import resolve_source
from app.storage.uri_sources import is_uri

if TYPE_CHECKING:
    from app.jobs.fetch import FetchedCheckpoint
    from app.matching.analysis import Analysis, MatchOptions
    from app.matching.report_parts import MergedFile
    from app.merge.write import MergeSpec
    from app.tensors import CheckpointIndex

log = logging.getLogger(__name__)

MERGED_STEM = "merged"


@dataclass(frozen=True)
class JobContext:
    """What a worker needs to run checks; built once per process."""

    settings: Settings
    repository: CheckRepository
    blobs: BlobStore
    results: ResultStore


def job_context(settings: Settings) -> JobContext:
    """The records and stores of these settings, made once per process."""
    return _context_for(settings.model_dump_json())


_context = job_context


@cache
def _context_for(settings_json: str) -> JobContext:
    settings = Settings.model_validate_json(settings_json)
    storage = open_storage(
        settings.storage_url,
        data_dir=settings.data_dir,
        presign=settings.storage_presigned_downloads,
    )
    return JobContext(
        settings=settings,
        repository=CheckRepository(make_engine(settings.database_url)),
        blobs=BlobStore(storage),
        results=ResultStore(storage),
    )


def run_job(check_id: str, settings: Settings) -> bool:
    """Claim one queued check, run it to its end and record the outcome.

    Every runner calls this (the local pool's workers, Celery tasks), and it is idempotent:
    a check already claimed, finished or deleted is left alone, so a redelivered message
    does nothing. While it runs, its lease is renewed (``Lease``); a worker that dies stops
    renewing, and the reaper requeues the check once, then fails it.

    Returns:
        True when the check hit the worker's memory limit: the worker should be replaced.
    """
    ctx = _context(settings)
    worker = worker_name()
    lease_seconds = ctx.settings.lease_seconds
    record = ctx.repository.claim(check_id, worker=worker, lease_seconds=lease_seconds)
    if record is None:  # finished, deleted, or claimed by another delivery: nothing to do
        return False
    token = logs.check_id.set(check_id)
    started = time.monotonic()
    log.info(
        "check started: %s",
        record.architecture,
        extra={
            "event": "check.started",
            "architecture": record.architecture,
            "attempt": record.attempts,
            "worker": worker,
        },
    )
    try:
        with (
            Lease(ctx.repository, check_id, worker=worker, lease_seconds=lease_seconds),
            mapped_file_allowance(record.size_bytes),
        ):
            merged_filename, verdict = _execute(record, ctx)
    except Exception as exc:
        problem = _problem_for(exc, check_id, ctx.settings)
        ctx.repository.mark_failed(check_id, problem)
        log.info(
            "check failed: %s",
            problem.get("type"),
            extra={
                "event": "check.failed",
                "problem_type": problem.get("type"),
                "duration_seconds": round(time.monotonic() - started, 3),
            },
        )
        logs.check_id.reset(token)
        return is_out_of_memory(exc)
    if not ctx.repository.mark_succeeded(check_id, merged_filename=merged_filename):
        ctx.results.delete(check_id)  # deleted while it ran: leave nothing behind
    log.info(
        "check finished: %s in %.2f s",
        verdict,
        time.monotonic() - started,
        extra={
            "event": "check.finished",
            "verdict": verdict,
            "duration_seconds": round(time.monotonic() - started, 3),
        },
    )
    logs.check_id.reset(token)
    return False


def _path_source(record: CheckRecord, ctx: JobContext) -> Path:
    """The path source checked again, just before it is read.

    The web process checked it when the check was submitted; since then a writer under the
    roots may have swapped a symlink or rewritten a file. Its identity must be unchanged.

    Raises:
        SourceForbiddenError, SourceNotFoundError: As when submitting.
        SourceChangedError: Its files (names, sizes, times, real path) are not the same.
    """
    assert record.source_path is not None
    source = resolve_source(record.source_path, ctx.settings.source_roots)
    if source.fingerprint != record.sha256:
        raise SourceChangedError(
            "The files at this path changed after the check was submitted (names, sizes, "
            "modification times or where symlinks lead); submit the check again."
        )
    return source.path


@contextmanager
def _checkpoint_file(
    record: CheckRecord, ctx: JobContext, *, whole: bool = False
) -> Iterator[FetchedCheckpoint]:
    """A path source is read in place; an upload lives in the blob store under its digest.

    A URI source, or an upload kept in S3, is fetched into scratch for the ``with``: by
    ranges for a report, ``whole`` for a merge (``app.jobs.fetch``).
    """
    from app.jobs.fetch import FetchedCheckpoint, fetch_stored_blob, fetch_uri_source

    scratch = ctx.settings.data_dir / "scratch"
    if record.source_path and is_uri(record.source_path):
        with fetch_uri_source(
            record.source_path,
            fingerprint=record.sha256,
            allowed=ctx.settings.source_uris,
            scratch=scratch,
            whole=whole,
            tracking_uri=ctx.settings.mlflow_tracking_uri,
        ) as fetched:
            yield fetched
    elif record.source_path:
        yield FetchedCheckpoint(_path_source(record, ctx))
    elif isinstance(ctx.blobs.storage, S3Storage):
        key = ctx.blobs.key_for(record.sha256)
        with fetch_stored_blob(ctx.blobs.storage, key, scratch=scratch, whole=whole) as fetched:
            yield fetched
    else:
        yield FetchedCheckpoint(ctx.blobs.path_for(record.sha256))


def read_stored_checkpoint(check_id: str, settings: Settings) -> CheckpointIndex:
    """The checkpoint of a stored check, read as its check reads it (``?fits=`` ranks it).

    Raises:
        CheckNotFoundError: No such check.
        AppError: What reading the file raises (as in the check).
    """
    from app.readers import read_checkpoint

    ctx = _context(settings)
    record = ctx.repository.get(check_id)
    if record is None:
        raise CheckNotFoundError(f"No check with id {check_id[:80]!r}.")
    options = CheckOptions.model_validate(record.options)
    with _checkpoint_file(record, ctx) as fetched:
        return read_checkpoint(
            fetched.path,
            state_dict_key=options.state_dict_key,
            max_tensors=ctx.settings.max_tensors,
        )


def _problem_for(exc: Exception, check_id: str, settings: Settings) -> dict[str, Any]:
    """The problem recorded for a failed check (call inside the ``except`` block)."""
    if is_out_of_memory(exc):
        # The worker's address-space limit (RLIMIT_AS, set in app.jobs.worker) was hit.
        return memory_limit_error(settings).to_problem()
    if isinstance(exc, AppError):
        return exc.to_problem()
    log.exception("check %s failed unexpectedly", check_id)
    return InternalError(
        "The check failed unexpectedly. The error was logged on the server."
    ).to_problem()


def _execute(record: CheckRecord, ctx: JobContext) -> tuple[str | None, str]:
    whole = CheckOptions.model_validate(record.options).merge is not None
    with _checkpoint_file(record, ctx, whole=whole) as fetched:
        return _execute_on(record, ctx, fetched)


def _execute_on(
    record: CheckRecord, ctx: JobContext, fetched: FetchedCheckpoint
) -> tuple[str | None, str]:
    """Read, build, match, merge and report; returns the merged file's name and the verdict."""
    from app.architectures import describe
    from app.architectures.timm_filters import offer_filter
    from app.jobs.index_calls import closest_architectures
    from app.jobs.report_wire import report_json, report_to_wire
    from app.matching.analysis import analyse
    from app.matching.report import assemble_report
    from app.readers import describe_safety, read_checkpoint
    from app.readers.sharded import ShardedCheckpointIndex

    options = CheckOptions.model_validate(record.options)
    path = fetched.path

    def progress(stage: str, fraction: float) -> None:
        ctx.repository.set_progress(record.id, stage, fraction)

    progress("reading", 0.1)
    checkpoint = read_checkpoint(
        path, state_dict_key=options.state_dict_key, max_tensors=ctx.settings.max_tensors
    )
    progress("building", 0.3)
    architecture = describe(record.architecture, options.architecture_kwargs)
    architecture = offer_filter(architecture, checkpoint.index)  # timm's filter, traced
    progress("matching", 0.5)
    analysis = analyse(checkpoint, architecture, match_options(options))
    merged: MergedFile | None = None
    merge_notes: tuple[str, ...] = ()
    if options.merge is not None:
        progress("merging", 0.6)
        merged, merge_notes = _merge(
            record, ctx, path, options, analysis.checkpoint.state_dict_path, analysis
        )
    progress("reporting", 0.95)
    parts = assemble_report(
        check_id=record.id,
        filename=record.filename,
        sha256=record.sha256,
        size_bytes=record.size_bytes,
        analysis=analysis,
        architecture=architecture,
        notes=merge_notes,
        merged=merged,
    )
    report = report_to_wire(
        parts,
        shards=checkpoint.shards if isinstance(checkpoint, ShardedCheckpointIndex) else None,
        # The reader's guards listed the file's imports already; other formats are described here.
        safety=checkpoint.safety or describe_safety(path),
        closest=closest_architectures(analysis, ctx.settings),
    )
    report.checkpoint.bytes_read = fetched.bytes_read
    ctx.results.write_report(
        record.id,
        report_json(report),
        max_bytes=ctx.settings.max_report_bytes,
        tag=report_schema_tag(),
    )
    return (merged.filename if merged else None), str(report.summary.verdict)


def match_options(options: CheckOptions) -> MatchOptions:
    """The engine's matching options from the wire options."""
    from app.matching.analysis import MatchOptions

    freeze = options.freeze
    return MatchOptions(
        state_dict_key=options.state_dict_key,
        align=options.align,
        strip_prefix=options.strip_prefix,
        add_prefix=options.add_prefix,
        rename=tuple((r.pattern, r.replacement) for r in options.rename),
        match_by_suffix=options.match_by_suffix,
        key_map=tuple(options.key_map.items()),
        freeze_mode=freeze.mode if freeze else "loaded",
        trainable=tuple(freeze.trainable) if freeze else (),
        freeze_given=freeze is not None,
        adapt=tuple(options.adapt),
    )


def merge_spec(architecture: str, options: CheckOptions) -> MergeSpec:
    """What ``app.merge.write.write_merged`` merges into, from a check's wire options."""
    from app.merge.write import MergeSpec

    assert options.merge is not None
    return MergeSpec(
        architecture=architecture,
        kwargs=options.architecture_kwargs,
        # The arguments themselves: the header's key already says what they are.
        kwargs_json=json.dumps(
            options.model_dump(mode="json")["architecture_kwargs"], separators=(",", ":")
        ),
        format=options.merge.format,
        dtype_policy=options.dtype_policy,
    )


def _merge(
    record: CheckRecord,
    ctx: JobContext,
    path: Path,
    options: CheckOptions,
    state_dict_path: str,
    analysis: Analysis,
) -> tuple[MergedFile, tuple[str, ...]]:
    """Write the check's merged state_dict into its results (``ResultStore.merged_target``).

    Returns:
        The merged file for the report, and the merge's notes.
    """
    from app.matching.report_parts import MergedFile
    from app.merge.write import write_merged

    assert options.merge is not None
    filename = f"{MERGED_STEM}.{options.merge.format}"
    with ctx.results.merged_target(record.id, filename) as out:
        merged = write_merged(
            path,
            out,
            spec=merge_spec(record.architecture, options),
            state_dict_path=state_dict_path,
            key_map=analysis.key_map,
            adaptations=analysis.adaptations,
            exact_init_max_bytes=ctx.settings.exact_init_max_bytes,
            max_merged_bytes=ctx.settings.max_merged_bytes,
            metadata={"source_sha256": record.sha256, "check_id": record.id},
        )
    written = MergedFile(
        format=options.merge.format,
        filename=filename,
        loaded_keys=merged.loaded_keys,
        kept_keys=merged.kept_keys,
        size_bytes=merged.size_bytes,
    )
    return written, merged.notes
