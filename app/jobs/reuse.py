"""Result reuse: a check of the same content, architecture and options answers from the last one.

The key is (owner, sha256, architecture, options); options hold the architecture kwargs, so a
different head size is a different check. The reused report is the earlier one, hard-linked,
served with the new check's id and file name and ``reused_from`` (an overlay applied on
read), and only when the same report schema wrote it; a merged file is shared too (hard links
on disk), so a repeated check costs no new disk. Runs in the web process: storage and SQL,
no torch.
"""

from __future__ import annotations

import json
from typing import Any

from app.jobs.repository import CheckRecord, CheckRepository
from app.schemas.report import report_schema_tag
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
        if results.report_tag(prior.id) != report_schema_tag():
            continue  # written by another version of the report schema: run again
        if not _copy_merged(results, prior, record.id):
            continue
        overlay = {
            "check_id": record.id,
            "checkpoint": {"filename": record.filename},
            "reused_from": prior.id,
        }
        if not results.share_report(prior.id, record.id, overlay):
            continue
        repository.mark_running(record.id)
        repository.mark_succeeded(record.id, merged_filename=prior.merged_filename)
        return repository.get(record.id)
    return None


NOT_IDENTITY = frozenset({"callback_url"})
"""Options that change what happens after a check, not its result."""


def _canonical(options: dict[str, Any]) -> str:
    identity = {k: v for k, v in options.items() if k not in NOT_IDENTITY}
    return json.dumps(identity, sort_keys=True, separators=(",", ":"))


def _copy_merged(results: ResultStore, prior: CheckRecord, new_id: str) -> bool:
    """Share the prior merged file with the new check; False when it is gone."""
    if prior.merged_filename is None:
        return True
    return results.share_merged(prior.id, new_id, prior.merged_filename)
