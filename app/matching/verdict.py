"""The verdict of a check, from the share of parameters that load and the reasons of the rest."""

from __future__ import annotations

from app.matching.compare import MatchResult
from app.matching.reasons import EXPECTED_CHANGES, Explanations
from app.schemas import Reason, Verdict

MIN_LOADED_SHARE = 0.1
"""Under this share of the model's parameter elements loaded, the verdict is ``incompatible``.

A tenth of the model is the line: below it, only scattered tensors (a stem, a few norms)
happen to fit, which is no initialisation worth the name. It stays low on purpose because a
backbone that loads fully into a detector is a legitimate use even when the new heads are
larger than the backbone (resnet50 into keypointrcnn_resnet50_fpn loads 40%).
"""


def decide_verdict(result: MatchResult, explanations: Explanations) -> Verdict:
    """The verdict, by these rules in order.

    1. ``incompatible``: nothing loads, or under ``MIN_LOADED_SHARE`` of the model's parameter
       elements load. A checkpoint that loads nothing is never compatible.
    2. ``compatible``: every model tensor loads and every checkpoint tensor is used, apart
       from ``ignorable`` keys; dtype casts are allowed (the detail says if one is lossy).
    3. ``compatible_with_changes``: every key that does not load has an expected reason:
       ``head_resized``, ``new_module``, ``position_embedding_resized``, ``input_channels``
       (or ``ignorable``).
    4. ``partial``: otherwise (``transposed``, ``reshaped`` or ``unexplained`` keys).

    Args:
        result: The comparison of the aligned checkpoint with the model.
        explanations: The reasons of ``result``'s keys.

    Returns:
        The verdict.
    """
    if not result.matched:
        return Verdict.INCOMPATIBLE
    if result.model_parameter_numel and result.loaded_parameter_fraction < MIN_LOADED_SHARE:
        return Verdict.INCOMPATIBLE
    groups = (explanations.missing, explanations.unexpected, explanations.shape_mismatched)
    reasons = {e.reason for group in groups for e in group.values()}
    if reasons <= {Reason.IGNORABLE}:
        return Verdict.COMPATIBLE
    if reasons <= EXPECTED_CHANGES | {Reason.IGNORABLE}:
        return Verdict.COMPATIBLE_WITH_CHANGES
    return Verdict.PARTIAL
