"""Worker functions for the catalogue index: build it a chunk at a time, rank a check with it.

The web process calls these through the pool (``app.jobs.calls.CALLS``), so torch and the
index stay in workers; ``closest_architectures`` runs inside a check (``app.jobs.task``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from app.config import Settings

if TYPE_CHECKING:
    from app.catalog_index.closest import Fit
    from app.matching.analysis import Analysis

log = logging.getLogger(__name__)

NOT_READY_NOTE = (
    "closest_architectures is null: the catalogue index is still being built (in the "
    "background at start-up, or with 'ckpt-compat index'); "
    "GET /v1/architectures?fits=<check id> ranks the catalogue once it is ready."
)
RANKED_VERDICTS = ("partial", "incompatible")


def index_plan(settings: Settings, *, names: list[str] | None = None) -> dict[str, Any]:
    """What is left to build: ``{"ready", "names", "chunks"}`` (chunks not on disk yet)."""
    from app.catalog_index.build import catalogue_names
    from app.catalog_index.store import index_path, missing_chunks

    chosen = names if names is not None else catalogue_names()
    ready = index_path(settings.cache_dir).exists()
    chunks = [] if ready else missing_chunks(settings.cache_dir, chosen)
    return {"ready": ready, "names": chosen, "chunks": chunks}


def index_chunk(settings: Settings, *, names: list[str]) -> int:
    """Build one chunk of signatures into the cache; returns how many were built."""
    from app.catalog_index.store import build_chunk

    return build_chunk(settings.cache_dir, names)


def index_finish(settings: Settings, *, names: list[str]) -> dict[str, Any]:
    """Join the built chunks into the index file; returns its counts, bytes and build time."""
    from app.catalog_index.store import finish_index

    return finish_index(settings.cache_dir, names)


def rank_check(
    settings: Settings,
    *,
    check_id: str,
    names: list[str] | None,
    limit: int,
    offset: int,
) -> dict[str, Any] | None:
    """The catalogue ranked for a stored check's checkpoint (``?fits=``), one page of it.

    Returns:
        The ``ArchitectureFitList`` dict, or None when the index is not built.
    """
    from app.catalog_index.closest import custom_model_note, rank_catalogue
    from app.catalog_index.store import load_index
    from app.jobs.task import read_stored_checkpoint

    index = load_index(settings.cache_dir)
    if index is None:
        return None
    checkpoint = read_stored_checkpoint(check_id, settings)
    fits = rank_catalogue(checkpoint, index, names=set(names) if names is not None else None)
    return {
        "check_id": check_id,
        "items": [f.to_wire() for f in fits[offset : offset + limit]],
        "total": len(fits),
        "note": custom_model_note(fits),
    }


@dataclass(frozen=True, slots=True)
class ClosestArchitectures:
    """A report's ``closest_architectures`` and the notes that go with them.

    Attributes:
        fits: Best first; None when the field stays null (index not built, ranking failed).
        notes: Sentences for the report's notes (why it is null, a custom model).
    """

    fits: tuple[Fit, ...] | None
    notes: tuple[str, ...] = ()


def closest_architectures(analysis: Analysis, settings: Settings) -> ClosestArchitectures | None:
    """The closest catalogue architectures of a partial or incompatible check, else None.

    A failure here is logged and leaves the field null: it must never fail the check.
    """
    from app.catalog_index.closest import REPORT_SIZE, custom_model_note, rank_catalogue
    from app.catalog_index.store import load_index

    if analysis.verdict.value not in RANKED_VERDICTS:
        return None
    index = load_index(settings.cache_dir)
    if index is None:
        return ClosestArchitectures(None, (NOT_READY_NOTE,))
    try:
        fits = rank_catalogue(analysis.checkpoint, index)[:REPORT_SIZE]
    except Exception:
        log.exception("ranking the catalogue failed")
        return ClosestArchitectures(
            None, ("closest_architectures is null: ranking the catalogue failed (logged).",)
        )
    note = custom_model_note(fits)
    return ClosestArchitectures(tuple(fits), (note,) if note else ())
