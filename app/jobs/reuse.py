"""Result reuse: a check of the same content, architecture and options answers from the last one.

The key is (owner, sha256, architecture, options); options hold the architecture kwargs, so a
different head size is a different check. The reused report is a copy naming the new check
(and its file name) with ``reused_from`` set; a merged file is hard-linked, so it costs no
new disk. Runs in the web process: plain files and SQL, no torch.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from typing import Any

from pydantic import ValidationError

from app.jobs.repository import CheckRecord, CheckRepository
from app.schemas import Report
from app.storage import ResultStore


def reuse_result(
    record: CheckRecord, *, repository: CheckRepository, results: ResultStore
) -> CheckRecord | None:
    """Finish ``record`` (queued, not yet submitted) from an earlier identical check, if any.

    Args:
        record: The new check.
        repository: The check records.
        results: The result store holding both checks' files.

    Returns:
        The finished record, or None when no earlier check can be reused (the caller then
        runs the check).
    """
    wanted = _canonical(record.options)
    similar = repository.succeeded_like(
        sha256=record.sha256, architecture=record.architecture, owner=record.owner
    )
    for prior in similar:
        if prior.id == record.id or _canonical(prior.options) != wanted:
            continue
        report = _stored_report(results, prior.id)
        if report is None or not _copy_merged(results, prior, record.id):
            continue
        report["check_id"] = record.id
        report["checkpoint"]["filename"] = record.filename
        report["reused_from"] = prior.id
        results.write_report(record.id, report)
        repository.mark_running(record.id)
        repository.mark_succeeded(record.id, merged_filename=prior.merged_filename)
        return repository.get(record.id)
    return None


def _canonical(options: dict[str, Any]) -> str:
    return json.dumps(options, sort_keys=True, separators=(",", ":"))


def _stored_report(results: ResultStore, check_id: str) -> dict[str, Any] | None:
    """The stored report when it still validates against today's schema."""
    data = results.read_report(check_id)
    if data is None:
        return None
    try:
        return Report.model_validate_json(data).model_dump(mode="json")
    except ValidationError:
        return None


def _copy_merged(results: ResultStore, prior: CheckRecord, new_id: str) -> bool:
    """Link the prior merged file into the new check's directory; False when it is gone."""
    if prior.merged_filename is None:
        return True
    source = results.merged_path(prior.id, prior.merged_filename)
    if not source.is_file():
        return False
    target = results.merged_path(new_id, prior.merged_filename)
    results.prepare(new_id)
    with contextlib.suppress(FileExistsError):
        try:
            os.link(source, target)
        except OSError:
            shutil.copyfile(source, target)
    return True
