"""The training plan: which parameters to train and which to freeze, in optimizer groups."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass

from app.patterns import compile_pattern
from app.tensors import TensorIndex, TensorKind

FreezeMode = str  # "loaded" | "all" | "none" (validated at the edge)

NORM_STATISTICS = "running_mean"
"""A buffer that marks a BatchNorm-style module (running statistics update in train mode)."""


@dataclass(frozen=True, slots=True)
class ParamGroup:
    """A list of parameter names for one optimizer param group."""

    name: str
    params: tuple[str, ...]
    weight_decay: bool


@dataclass(frozen=True, slots=True)
class TrainingPlan:
    """What to train after loading the checkpoint.

    Attributes:
        mode: ``loaded`` (freeze what loads), ``all`` (freeze all) or ``none`` (train all).
        trainable_patterns: Patterns whose matching parameters are trained in any mode.
        trainable: Parameter names to train, model order (every name of a tied parameter).
        frozen: Parameter names to freeze, model order (every name of a tied parameter).
        trainable_numel: Elements of the trainable parameters (a tied one counted once).
        frozen_numel: Elements of the frozen parameters.
        groups: Trainable parameters in optimizer groups: ``new`` / ``loaded`` (fine-tuned
            pretrained weights), each split into decayed and ``_no_decay`` (1-D: biases and
            normalisation weights).
        notes: Plain sentences on using the plan.
    """

    mode: FreezeMode
    trainable_patterns: tuple[str, ...]
    trainable: tuple[str, ...]
    frozen: tuple[str, ...]
    trainable_numel: int
    frozen_numel: int
    groups: tuple[ParamGroup, ...]
    notes: tuple[str, ...]


def plan_training(
    model: TensorIndex,
    loaded: Collection[str],
    *,
    mode: FreezeMode = "loaded",
    trainable_patterns: Sequence[str] = (),
    explicit: bool = False,
    untrusted: str | None = None,
) -> TrainingPlan:
    """Plan the fine-tuning: train what did not load (by default), freeze the rest.

    Freezing what loaded is only sound when what loaded is a pretrained backbone: a head
    loaded in front of random features would be frozen on features it never saw. So when the
    caller says why the loaded weights cannot be trusted (``untrusted``), the default plan
    trains everything and says why; an explicit ``freeze`` option is still followed.

    Args:
        model: The model index (only ``parameter`` tensors are planned).
        loaded: Model keys the checkpoint fills (ignorable aliases of loaded weights count).
        mode: ``loaded``, ``all`` or ``none``.
        trainable_patterns: RE2 patterns searched in parameter names; matches are trained.
        explicit: Whether the plan was asked for (a ``freeze`` option) or is the default.
        untrusted: A sentence on why the loaded weights are no pretrained backbone, or None.

    Returns:
        The plan.

    Example:
        >>> from app.tensors import TensorInfo
        >>> p = TensorKind.PARAMETER
        >>> model = TensorIndex.from_infos(
        ...     [TensorInfo("conv.weight", (4, 3, 3, 3), "float32", p),
        ...      TensorInfo("fc.weight", (10, 4), "float32", p),
        ...      TensorInfo("fc.bias", (10,), "float32", p)]
        ... )
        >>> plan = plan_training(model, {"conv.weight"})
        >>> plan.trainable, [(g.name, g.params) for g in plan.groups]
        (('fc.weight', 'fc.bias'), [('new', ('fc.weight',)), ('new_no_decay', ('fc.bias',))])
    """
    compiled = [compile_pattern(p) for p in trainable_patterns]
    if untrusted is not None and not explicit:
        mode = "none"
    params = [i for i in model if i.kind is TensorKind.PARAMETER]
    loaded_set = set(loaded)

    def trains(key: str) -> bool:
        if any(p.search(key) for p in compiled):
            return True
        return mode == "none" or (mode == "loaded" and key not in loaded_set)

    # A tied parameter is one parameter under several names: it trains if any name does,
    # and every name is listed with that one decision (app.training.apply_training_plan
    # expects every name), counted and grouped once under its first name.
    group_trains = {i.key: trains(i.key) for i in params}
    named = [i for i in model if i.kind is TensorKind.PARAMETER or i.tied_to in group_trains]
    for alias in named:
        if alias.tied_to is not None and trains(alias.key):
            group_trains[alias.tied_to] = True
    trainable = [i for i in params if group_trains[i.key]]
    frozen = [i for i in params if not group_trains[i.key]]
    trains_named = {i.key: group_trains[i.tied_to or i.key] for i in named}
    groups = []
    for origin in ("new", "loaded"):
        for decay in (True, False):
            names = tuple(
                i.key
                for i in trainable
                if (i.key in loaded_set) == (origin == "loaded") and (len(i.shape) > 1) == decay
            )
            if names:
                groups.append(ParamGroup(origin if decay else f"{origin}_no_decay", names, decay))
    return TrainingPlan(
        mode=mode,
        trainable_patterns=tuple(trainable_patterns),
        trainable=tuple(i.key for i in named if trains_named[i.key]),
        frozen=tuple(i.key for i in named if not trains_named[i.key]),
        trainable_numel=sum(i.numel for i in trainable),
        frozen_numel=sum(i.numel for i in frozen),
        groups=tuple(groups),
        notes=_notes(
            model,
            frozen=[i.key for i in frozen],
            trainable=len(trainable),
            mode=mode,
            explicit=explicit,
            untrusted=untrusted,
        ),
    )


def _notes(
    model: TensorIndex,
    *,
    frozen: list[str],
    trainable: int,
    mode: FreezeMode,
    explicit: bool,
    untrusted: str | None,
) -> tuple[str, ...]:
    notes: list[str] = []
    if untrusted is not None and not explicit:
        notes.append(
            f"Default plan: train everything, freeze nothing, because {untrusted}; pass a "
            "freeze option to plan otherwise."
        )
    elif not explicit:
        notes.append(
            "Default plan (no freeze option): train the parameters the checkpoint does not "
            "fill, freeze the ones it fills; pass freeze.trainable patterns to train more."
        )
    if not trainable:
        notes.append("Nothing is trainable under this plan: the model is used as it loads.")
    frozen_modules = {k.rsplit(".", 1)[0] for k in frozen if "." in k}
    norms = [
        i.key.rsplit(".", 1)[0]
        for i in model
        if i.key.endswith("." + NORM_STATISTICS) and i.key.rsplit(".", 1)[0] in frozen_modules
    ]
    if norms:
        notes.append(
            f"{len(norms)} frozen BatchNorm modules (e.g. {norms[0]!r}) still update their "
            "running statistics in train mode: put them in eval mode after every model.train() "
            "(app.training.freeze_norm_statistics does), or the frozen weights drift."
        )
    if frozen:
        notes.append(
            "Weight decay on frozen parameters is harmless only if they get no gradient: give "
            "the optimizer only optimizer_param_groups (requires_grad=False on the frozen ones, "
            "as app.training.apply_training_plan sets), never model.parameters()."
        )
    if mode != "loaded" and explicit:
        notes.append(f"Freeze mode {mode!r} as asked.")
    return tuple(notes)
