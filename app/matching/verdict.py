"""The verdict of a check: from the share of parameters that load, where they sit (backbone or
head), and the reasons of the rest."""

from __future__ import annotations

from enum import StrEnum

from app.enums import Reason, Verdict
from app.matching.compare import MatchResult
from app.matching.placement import Placement
from app.matching.reasons import EXPECTED_CHANGES, Explanations

MIN_LOADED_SHARE = 0.1
"""Under this share of the model's parameter elements loaded, the verdict is ``incompatible``;
the same holds for the backbone's own share.

A tenth of the model is the line: below it, only scattered tensors (a stem, a few norms)
happen to fit, which is no initialisation worth the name. It stays low on purpose because a
backbone that loads fully into a detector is a legitimate use even when the new heads are
larger than the backbone (resnet50 into keypointrcnn_resnet50_fpn loads 40%). Applied to the
backbone alone, it catches a loaded classifier in front of random features (timm's
efficientnet_b0 into torchvision's loads 24% of the model, all of it the classifier).
"""

MAX_NEW_BACKBONE_SHARE = 0.5
"""Over this share of the backbone's parameter elements in new modules, the verdict is at best
``partial``: a backbone that is mostly new is a model to train from scratch, not a change."""


class Weakness(StrEnum):
    """Why the loaded parameters do not make a pretrained model, whatever the reasons say."""

    BACKBONE_NOT_LOADED = "backbone_not_loaded"
    BACKBONE_MOSTLY_NEW = "backbone_mostly_new"
    SINGLE_MODULE = "single_module"


def find_weakness(placement: Placement) -> Weakness | None:
    """The first weakness of where the loaded parameters sit, or None.

    1. ``backbone_not_loaded``: under ``MIN_LOADED_SHARE`` of the backbone loads (a loaded
       head on a random backbone, or scattered tensors).
    2. ``backbone_mostly_new``: modules reported new hold over ``MAX_NEW_BACKBONE_SHARE`` of
       the backbone.
    3. ``single_module``: every loaded parameter sits in one module while the backbone has
       several (an alignment carried by one large tensor).
    """
    if not placement.backbone_numel:
        return None
    if placement.backbone_fraction < MIN_LOADED_SHARE:
        return Weakness.BACKBONE_NOT_LOADED
    if placement.backbone_new > MAX_NEW_BACKBONE_SHARE * placement.backbone_numel:
        return Weakness.BACKBONE_MOSTLY_NEW
    if len(placement.loaded_modules) == 1 and placement.backbone_modules > 1:
        return Weakness.SINGLE_MODULE
    return None


def decide_verdict(
    result: MatchResult, explanations: Explanations, placement: Placement | None = None
) -> Verdict:
    """The verdict, by these rules in order.

    1. ``incompatible``: nothing loads, or under ``MIN_LOADED_SHARE`` of the model's parameter
       elements load, or under ``MIN_LOADED_SHARE`` of the backbone's (everything outside the
       head) load. A checkpoint that loads nothing is never compatible, and a loaded head on a
       random backbone is no pretrained model.
    2. ``compatible``: every model tensor loads and every checkpoint tensor is used, apart
       from ``ignorable`` keys; dtype casts are allowed (the detail says if one is lossy).
    3. ``compatible_with_changes``: every key that does not load has an expected reason
       (``head_resized``, ``new_module``, ``position_embedding_resized``, ``input_channels``,
       or ``ignorable``), new modules hold at most ``MAX_NEW_BACKBONE_SHARE`` of the backbone,
       and the loaded parameters do not all sit in one module of a backbone of several.
    4. ``partial``: otherwise (``depth_changed``, ``renamed``, ``transposed``, ``reshaped`` or
       ``unexplained`` keys, a backbone mostly new, or a load carried by one module).

    Args:
        result: The comparison of the aligned checkpoint with the model.
        explanations: The reasons of ``result``'s keys.
        placement: Where the loaded parameters sit (``app.matching.placement.place``); without
            it the backbone is not weighed.

    Returns:
        The verdict.
    """
    if not result.matched:
        return Verdict.INCOMPATIBLE
    if result.model_parameter_numel and result.loaded_parameter_fraction < MIN_LOADED_SHARE:
        return Verdict.INCOMPATIBLE
    weakness = find_weakness(placement) if placement is not None else None
    if weakness is Weakness.BACKBONE_NOT_LOADED:
        return Verdict.INCOMPATIBLE
    groups = (explanations.missing, explanations.unexpected, explanations.shape_mismatched)
    reasons = {e.reason for group in groups for e in group.values()}
    if reasons <= {Reason.IGNORABLE}:
        return Verdict.COMPATIBLE
    if reasons <= EXPECTED_CHANGES | {Reason.IGNORABLE} and weakness is None:
        return Verdict.COMPATIBLE_WITH_CHANGES
    return Verdict.PARTIAL
