"""Real transfers for matching tests: a checkpoint saved in tmp the way its project saves it,
read by the service's reader, checked against an architecture built on meta by the registry."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from app.architectures import describe
from app.matching.analysis import Analysis, MatchOptions, analyse
from app.readers.checkpoint import read_checkpoint

MAX_TENSORS = 100_000


def analyse_file(
    path: Path,
    architecture: str,
    kwargs: Mapping[str, Any] | None = None,
    **options: Any,
) -> Analysis:
    """What a check of ``path`` against ``architecture`` reports, without the HTTP layer."""
    checkpoint = read_checkpoint(path, state_dict_key="auto", max_tensors=MAX_TENSORS)
    return analyse(checkpoint, describe(architecture, dict(kwargs or {})), MatchOptions(**options))


def reasons_under(analysis: Analysis, module: str) -> set[str]:
    """The reasons of the model's missing keys under ``module``."""
    return {
        e.reason.value
        for key, e in analysis.explanations.missing.items()
        if key.startswith(module + ".")
    }
