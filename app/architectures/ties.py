"""Tied parameters: which state_dict keys name a parameter already listed under another key.

A checkpoint saved by ``save_pretrained`` stores a tied weight once (T5's ``shared.weight``,
not ``encoder.embed_tokens.weight``); matching by names alone calls the other names new. The
ties are read from the model itself, built on meta: two keys are tied when they hold the very
same ``Parameter`` object (what ``model.parameters()`` counts once), and transformers' own
record of the ties (``all_tied_weights_keys``, expanded from ``_tied_weights_keys``) adds any
it declares that identity did not show.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


def find_ties(model: torch.nn.Module) -> dict[str, str]:
    """Alias key -> the key ``model.named_parameters()`` lists the parameter under.

    Args:
        model: Any module (on any device, meta included).

    Returns:
        Every parameter name that is not the first name of its parameter, mapped to that
        first name (state_dict order); empty for a model without ties.

    Example:
        >>> import torch
        >>> model = torch.nn.ModuleDict(
        ...     {"emb": torch.nn.Embedding(5, 3), "head": torch.nn.Linear(3, 5, bias=False)}
        ... )
        >>> model["head"].weight = model["emb"].weight
        >>> find_ties(model)
        {'head.weight': 'emb.weight'}
    """
    first: dict[int, str] = {}
    ties: dict[str, str] = {}
    for name, param in model.named_parameters(remove_duplicate=False):
        canonical = first.setdefault(id(param), name)
        if canonical != name:
            ties[name] = canonical
    for alias, source in _declared_ties(model).items():
        if alias not in ties and alias != source:
            ties[alias] = ties.get(source, source)
    return ties


def _declared_ties(model: torch.nn.Module) -> dict[str, str]:
    """transformers' ``{target: source}`` record, kept where both are same-shaped parameters.

    transformers ties these keys again after loading (``tie_weights``), whether or not the
    build shared the objects; a declared pair of other shapes is no tie and is dropped.
    """
    declared = getattr(model, "all_tied_weights_keys", None)
    if not isinstance(declared, Mapping):
        return {}
    params = dict(model.named_parameters(remove_duplicate=False))
    return {
        target: source
        for target, source in declared.items()
        if isinstance(target, str)
        and isinstance(source, str)
        and target in params
        and source in params
        and params[target].shape == params[source].shape
    }
