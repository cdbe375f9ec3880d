"""Which catalogue architectures a checkpoint fits best: ranked by signature, re-checked exactly.

Signatures rank the whole catalogue by counting (``app.matching.ranking``); the best
``EXACT_CHECKS`` are then built on meta with the arguments inferred from the checkpoint
(``app.matching.inference``) and matched by the real engine, so the fractions and verdicts
of the top of the list are those a check would report. The rest keep their estimate.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any

from app.catalog_index.store import CatalogIndex
from app.errors import AppError
from app.matching.inference import Inferred, infer_kwargs
from app.matching.ranking import CheckpointProfile, Score, profile_of, rank
from app.matching.signature import ArchitectureSignature
from app.tensors import CheckpointIndex

EXACT_CHECKS = 8
"""Architectures re-checked with the matching engine (each is one build on meta)."""

REPORT_SIZE = 5
"""Entries of a report's ``closest_architectures``."""

CUSTOM_BELOW = 0.5
"""When no architecture loads more than this share of its parameters, say so."""

FRACTION_DIGITS = 6


@dataclass(frozen=True)
class Fit:
    """How one catalogue architecture fits a checkpoint.

    Attributes:
        name: Qualified name.
        kwargs: The arguments to build it with (the inferred ones; ``{}`` for the defaults).
        inferred: The names of those arguments, all read off the checkpoint.
        loaded_parameter_fraction: The architecture's parameter elements that load.
        checkpoint_fraction: The checkpoint's elements that load into it.
        verdict: The verdict a check would give, or None for an estimate.
        prior: Pretrained weights its library publishes (the last tie-break).
    """

    name: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    inferred: list[str] = field(default_factory=list)
    loaded_parameter_fraction: float = 0.0
    checkpoint_fraction: float = 0.0
    verdict: str | None = None
    prior: int = 0

    @property
    def estimated(self) -> bool:
        """Whether this fit is a signature estimate, not a real match."""
        return self.verdict is None

    def sort_key(self) -> tuple[float, int, int, str]:
        """Best first: the harmonic mean of both fractions (an architecture should explain
        the checkpoint and be explained by it), then fewer inferred arguments, then the
        more published weights, then the name."""
        a, b = self.loaded_parameter_fraction, self.checkpoint_fraction
        both = 2 * a * b / (a + b) if a + b else 0.0
        return (-round(both, FRACTION_DIGITS), len(self.inferred), -self.prior, self.name)

    def to_wire(self) -> dict[str, Any]:
        """The wire shape (``app.schemas.ArchitectureFit``)."""
        fraction = round(self.loaded_parameter_fraction, FRACTION_DIGITS)
        suggested = (
            []
            if self.estimated
            else [
                {
                    "architecture": self.name,
                    "options": {"architecture_kwargs": self.kwargs},
                    "loaded_parameter_fraction": fraction,
                    "verdict": self.verdict,
                }
            ]
        )
        return {
            "name": self.name,
            "source": self.name.partition(":")[0],
            "kwargs": self.kwargs,
            "inferred_kwargs": self.inferred,
            "loaded_parameter_fraction": fraction,
            "checkpoint_fraction": round(self.checkpoint_fraction, FRACTION_DIGITS),
            "verdict": self.verdict,
            "estimated": self.estimated,
            "suggested_options": suggested,
        }


def rank_catalogue(
    checkpoint: CheckpointIndex,
    index: CatalogIndex,
    *,
    names: Collection[str] | None = None,
    exact: int = EXACT_CHECKS,
) -> list[Fit]:
    """Every indexed architecture (or those in ``names``) ranked for ``checkpoint``.

    Args:
        checkpoint: The checkpoint as read (its chosen state_dict is compared).
        index: The catalogue index.
        names: Only these qualified names; all when None.
        exact: How many of the best are re-checked with the matching engine.

    Returns:
        The re-checked fits best first, then the estimated ones in signature order.

    Example:
        >>> fits = rank_catalogue(checkpoint, load_index(cache_dir))  # doctest: +SKIP
        >>> fits[0].name, fits[0].kwargs  # doctest: +SKIP
        ('timm:convnext_tiny', {'num_classes': 10})
    """
    signatures = {s.name: s for s in index.signatures if names is None or s.name in names}
    profile = profile_of(checkpoint.index)
    scores = rank(profile, signatures.values())
    checked = [_exact_fit(checkpoint, profile, signatures[s.name], s) for s in scores[:exact]]
    checked.sort(key=Fit.sort_key)
    return checked + [_estimated_fit(s) for s in scores[exact:]]


def _estimated_fit(score: Score) -> Fit:
    return Fit(
        name=score.name,
        loaded_parameter_fraction=score.loaded_estimate,
        checkpoint_fraction=score.shapes,
        prior=score.prior,
    )


def _exact_fit(
    checkpoint: CheckpointIndex,
    profile: CheckpointProfile,
    signature: ArchitectureSignature,
    score: Score,
) -> Fit:
    """Build the architecture with the inferred arguments and match the checkpoint with it;
    arguments the constructor refuses are dropped (the defaults are matched instead)."""
    from app.architectures import describe
    from app.matching.analysis import MatchOptions, analyse

    inferred = infer_kwargs(profile, signature)
    try:
        arch = describe(signature.name, inferred.kwargs)
    except AppError:
        if not inferred.kwargs:
            return _estimated_fit(score)
        inferred = Inferred()
        try:
            arch = describe(signature.name, {})
        except AppError:
            return _estimated_fit(score)
    analysis = analyse(checkpoint, arch, MatchOptions())
    result = analysis.result
    used = sum(arch.index.tensors[k].numel for k in result.matched)
    total = analysis.checkpoint.index.numel
    return Fit(
        name=signature.name,
        kwargs=dict(inferred.kwargs),
        inferred=inferred.names,
        loaded_parameter_fraction=result.loaded_parameter_fraction,
        checkpoint_fraction=used / total if total else 0.0,
        verdict=analysis.verdict.value,
        prior=signature.prior,
    )


def custom_model_note(fits: list[Fit]) -> str | None:
    """A sentence when no architecture loads more than ``CUSTOM_BELOW`` of its parameters."""
    best = max((f.loaded_parameter_fraction for f in fits if not f.estimated), default=0.0)
    if best > CUSTOM_BELOW:
        return None
    return (
        f"No catalogue architecture loads more than {CUSTOM_BELOW:.0%} of its parameters from "
        f"this checkpoint (the best loads {best:.0%}): it is probably a custom model, or one "
        "from a library or version this service does not have."
    )
