"""Group a match result by the top two levels of the module tree, so a report reads like a map."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

from app.matching.compare import MatchResult
from app.tensors import TensorIndex, TensorKind

ROOT_MODULE = ""
"""The module of a top-level tensor such as ``cls_token``: the root, named by the empty string."""


@dataclass(frozen=True, slots=True)
class ModuleCounts:
    """The keys under one module, counted by outcome.

    Attributes:
        module: Dotted module path (``layer1`` or ``layer1.0``); ``""`` is the root and holds
            only the tensors that sit directly on the model (``cls_token``), not its children.
        matched: Matched model keys under the module.
        missing: Missing model keys under the module.
        unexpected: Unexpected checkpoint keys under the module.
        shape_mismatched: Shape-mismatched keys under the module.
        loaded_parameter_fraction: Matched parameter elements over the model's parameter
            elements under the module; None when the model has no parameters there.
    """

    module: str
    matched: int
    missing: int
    unexpected: int
    shape_mismatched: int
    loaded_parameter_fraction: float | None


def module_path(key: str) -> tuple[str, ...]:
    """The level-1 and level-2 modules a key belongs to, outermost first.

    Args:
        key: A dotted state_dict key.

    Returns:
        ``("layer1", "layer1.0")`` for ``layer1.0.conv1.weight``, ``("fc",)`` for
        ``fc.weight`` and ``("",)`` for a top-level tensor such as ``cls_token``.
    """
    parts = key.split(".")[:-1][:2]
    if not parts:
        return (ROOT_MODULE,)
    return tuple(".".join(parts[: depth + 1]) for depth in range(len(parts)))


@dataclass(slots=True)
class _Tally:
    outcomes: Counter[str] = field(default_factory=Counter)
    loaded_numel: int = 0
    parameter_numel: int = 0


def _tree_order(keys: Iterable[str]) -> list[str]:
    """Modules in first-appearance order, each level-1 module followed by its children."""
    children: dict[str, dict[str, None]] = {}
    for key in keys:
        top, *rest = module_path(key)
        level2 = children.setdefault(top, {})
        for child in rest:
            level2.setdefault(child, None)
    return [name for top, level2 in children.items() for name in (top, *level2)]


def summarize_modules(
    result: MatchResult, checkpoint: TensorIndex, model: TensorIndex
) -> list[ModuleCounts]:
    """Count matched, missing, unexpected and shape-mismatched keys per module.

    Model keys are counted under their model module, unexpected keys under their checkpoint
    key's module. Only the top two levels are kept: ``layer1`` and ``layer1.0``, never
    ``layer1.0.conv1``; top-level tensors go under the root module ``""``.

    Args:
        result: The comparison of ``checkpoint`` with ``model``.
        checkpoint: The (aligned) checkpoint index that was compared.
        model: The model index that was compared.

    Returns:
        One entry per module, in tree order: modules by first appearance in the model, then
        checkpoint-only modules, each level-1 module before its level-2 children.

    Example:
        >>> from app.matching.compare import compare
        >>> from app.tensors import TensorInfo
        >>> model = TensorIndex.from_infos(
        ...     [TensorInfo("fc.weight", (2,), "float32", TensorKind.PARAMETER)]
        ... )
        >>> [m.module for m in summarize_modules(compare(model, model), model, model)]
        ['fc']
    """
    tallies: dict[str, _Tally] = {
        name: _Tally() for name in _tree_order([*model.keys(), *checkpoint.keys()])
    }
    outcomes = [
        ("matched", result.matched),
        ("missing", result.missing),
        ("shape_mismatched", [m.key for m in result.shape_mismatched]),
        ("unexpected", result.unexpected),
    ]
    matched = set(result.matched)
    for outcome, keys in outcomes:
        for key in keys:
            for name in module_path(key):
                tallies[name].outcomes[outcome] += 1
    for info in model:
        if info.kind is not TensorKind.PARAMETER:
            continue
        for name in module_path(info.key):
            tallies[name].parameter_numel += info.numel
            if info.key in matched:
                tallies[name].loaded_numel += info.numel
    return [_counts(name, tally) for name, tally in tallies.items()]


def _counts(name: str, tally: _Tally) -> ModuleCounts:
    fraction = tally.loaded_numel / tally.parameter_numel if tally.parameter_numel else None
    return ModuleCounts(
        module=name,
        matched=tally.outcomes["matched"],
        missing=tally.outcomes["missing"],
        unexpected=tally.outcomes["unexpected"],
        shape_mismatched=tally.outcomes["shape_mismatched"],
        loaded_parameter_fraction=fraction,
    )
