"""A transformers model's own load-time conversion mapping, extracted as plain data.

transformers 5 renames (and for some models fuses) checkpoint keys while loading, so a file
saved by transformers 4.x loads into today's classes. The mapping is found from the model
(``get_model_conversion_mapping``), which matching never sees, so it is read here, on the
meta model, and carried in the ``ArchitectureIndex``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from app.tensors import KeyFusion, KeyRenaming

if TYPE_CHECKING:
    import torch


def find_conversions(
    model: torch.nn.Module,
) -> tuple[tuple[KeyRenaming, ...], tuple[KeyFusion, ...]]:
    """The model's renamings and fusions; empty for a model transformers does not convert.

    Only plain renamings are carried (a ``GroupWeightRename`` and other stateful renamers are
    left out: their effect depends on the order keys arrive in); converters become fusions,
    which matching builds where the merge can replay their operations, else reports.
    """
    try:
        from transformers import PreTrainedModel
        from transformers.conversion_mapping import get_model_conversion_mapping
        from transformers.core_model_loading import (
            GroupWeightRename,
            WeightConverter,
            WeightRenaming,
        )
    except ImportError:  # an older transformers: nothing is converted at load time
        return (), ()
    if not isinstance(model, PreTrainedModel):
        return (), ()
    renamings: list[KeyRenaming] = []
    fusions: list[KeyFusion] = []
    for transform in get_model_conversion_mapping(model):
        if isinstance(transform, WeightConverter):
            fusions.append(_fusion(transform))
        elif type(transform) is WeightRenaming and not isinstance(transform, GroupWeightRename):
            renamings.append(_renaming(transform))
    return tuple(renamings), tuple(fusions)


def _renaming(transform: Any) -> KeyRenaming:
    targets = list(transform.target_patterns)
    groups = len(transform.source_patterns)
    # transformers replaces every source pattern's match with the first target
    replacements = tuple(targets[0] for _ in range(groups))
    return KeyRenaming(
        pattern=transform.compiled_sources.pattern,
        replacements=replacements,
        scope_prefix=transform.scope_prefix,
        base_model_prefix=transform.base_model_prefix,
    )


def _fusion(transform: Any) -> KeyFusion:
    operations = tuple(getattr(transform, "operations", ()))
    return KeyFusion(
        pattern=transform.compiled_sources.pattern,
        target=str(transform.target_patterns[0]),
        operations=tuple(repr(op) for op in operations),
        source_patterns=tuple(str(p) for p in transform.source_patterns),
        steps=tuple(_step(op) for op in operations),
        scope_prefix=transform.scope_prefix,
        base_model_prefix=transform.base_model_prefix,
    )


def _step(operation: Any) -> tuple[str, int]:
    """(class name, dim); an operation configured beyond its dim gets dim -1, so matching
    never rebuilds it from these two values alone."""
    settings = {k: v for k, v in vars(operation).items() if v is not None}
    dim = settings.pop("dim", None)
    if settings or not isinstance(dim, int):
        return type(operation).__name__, -1
    return type(operation).__name__, dim
