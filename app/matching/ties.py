"""Tied parameters in matching: a parameter loads when any of its names loads, and counts once.

The model index marks every second name of a parameter ``tied`` with ``tied_to`` its first
name (``app.architectures.ties``). ``save_pretrained`` writes a tied weight under one name
only, so the other names are missing from the file though the parameter loads; and a file
that holds only an alias (``lm_head.weight`` without ``transformer.wte.weight``) still loads
the parameter. The merge writes every name of a loaded parameter with its values
(``app.merge.streaming``), so the merged file loads strictly.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import replace

from app.matching.compare import MatchResult
from app.tensors import TensorIndex, TensorKind


def first_name(key: str, model: TensorIndex) -> str:
    """The key the parameter of ``key`` is counted under (itself unless it is an alias)."""
    info = model.get(key)
    return info.tied_to if info is not None and info.tied_to else key


def loaded_tie(key: str, model: TensorIndex, matched: Collection[str]) -> str | None:
    """Another name of ``key``'s parameter that loads, or None (first name preferred).

    Example:
        >>> from app.tensors import TensorInfo
        >>> model = TensorIndex.from_infos([
        ...     TensorInfo("wte.weight", (5, 2), "float32", TensorKind.PARAMETER),
        ...     TensorInfo("lm_head.weight", (5, 2), "float32", TensorKind.TIED, "wte.weight"),
        ... ])
        >>> loaded_tie("lm_head.weight", model, {"wte.weight"})
        'wte.weight'
        >>> loaded_tie("wte.weight", model, {"lm_head.weight"})
        'lm_head.weight'
    """
    first = first_name(key, model)
    names = [first, *(i.key for i in model if i.tied_to == first)]
    return next((name for name in names if name != key and name in matched), None)


def credit_ties(result: MatchResult, model: TensorIndex) -> MatchResult:
    """Count a parameter as loaded when only an alias of it matched.

    ``compare`` counts the elements of matched ``parameter`` keys; an alias is ``tied``, so a
    file holding only the alias would count nothing for it. Each parameter counts once.
    """
    matched = set(result.matched)
    credited = {
        info.tied_to
        for info in model
        if info.kind is TensorKind.TIED
        and info.tied_to
        and info.key in matched
        and info.tied_to not in matched
    }
    if not credited:
        return result
    extra = sum(model.tensors[k].numel for k in credited if k in model)
    return replace(result, loaded_parameter_numel=result.loaded_parameter_numel + extra)
