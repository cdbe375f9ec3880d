"""After prefix alignment: the library's own converter, leaf synonyms, then structure.

Prefixes cannot explain a renamed module or an old leaf name. Each step here is a candidate
applied only when it loads more and its evidence is unambiguous: the library's conversion
mapping (it knows its history), leaf synonyms (one old name for one missing tensor), and a
structural pairing when much of the model is still unloaded. A structural pairing with doubts
is only suggested, as options ready to paste (a ``key_map``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

from app.matching.align import Alignment, score_names
from app.matching.converters import convert_names, fusion_sentences
from app.matching.pairing import MAX_CELLS, could_pair, pair_by_structure
from app.matching.synonyms import pair_synonyms
from app.matching.transforms import AUTO, AppliedStep, key_map
from app.tensors import ArchitectureIndex, TensorIndex

STRUCTURE_BELOW = 0.9
"""Structural pairing runs when prefix alignment loads less than this share of the model's
parameter elements, or when a tensor left random has a same-shaped unused twin in the file
(norms are few elements: 99.9 % loaded can still leave every LayerNorm random). A full load
runs nothing, so large reports pay only a linear check."""

MAX_KEY_MAP = 4096
"""The most keys a ``key_map`` (option or suggestion) may hold."""


def refine_alignment(
    alignment: Alignment, checkpoint: TensorIndex, architecture: ArchitectureIndex
) -> Alignment:
    """Improve an automatic alignment with converters, synonyms and structure.

    Args:
        alignment: The prefix alignment (``auto_align``).
        checkpoint: The checkpoint's tensors.
        architecture: The architecture, with its library's conversion rules.

    Returns:
        The alignment with any applied steps and notes added, and ``suggestions`` set.
    """
    model = architecture.index
    names = dict(alignment.names)
    steps = list(alignment.steps)
    notes = list(alignment.notes)
    loaded = score_names(names, checkpoint, model)[0]
    if architecture.renamings:
        base = next(
            (r.base_model_prefix for r in architecture.renamings if r.base_model_prefix), None
        )
        converted, conv_steps = convert_names(
            names, architecture.renamings, model=model, base_model_prefix=base
        )
        better = score_names(converted, checkpoint, model)[0]
        if better > loaded:
            names, loaded = converted, better
            steps += conv_steps
            notes.append(
                f"Applied {architecture.source}'s own load-time conversion of old key names "
                f"({len(conv_steps)} rules), loading {better} parameter elements."
            )
    names, syn_steps = pair_synonyms(names, checkpoint, model)
    if syn_steps:
        steps += syn_steps
        loaded = score_names(names, checkpoint, model)[0]
        words = ", ".join(f"{s.transform.pattern} -> {s.transform.replacement}" for s in syn_steps)
        notes.append(f"Renamed old leaf names to the model's ({words}).")
    unexpected = [n for n in names.values() if n not in model]
    notes += fusion_sentences(architecture.fusions, unexpected)
    suggestions: tuple[tuple[tuple[str, str], ...], ...] = ()
    total = model.parameter_numel
    if total and (loaded < total * STRUCTURE_BELOW or could_pair(names, checkpoint, model)):
        names, step, suggestions, said = _structure(names, checkpoint, model, loaded=loaded)
        steps += [step] if step is not None else []
        notes += said
    return replace(
        alignment, steps=tuple(steps), names=names, notes=tuple(notes), suggestions=suggestions
    )


def _structure(
    names: dict[str, str], checkpoint: TensorIndex, model: TensorIndex, *, loaded: int
) -> tuple[dict[str, str], AppliedStep | None, tuple[tuple[tuple[str, str], ...], ...], list[str]]:
    pairing = pair_by_structure(names, checkpoint, model)
    if pairing is None:
        return names, None, (), []
    paired = {**names, **pairing.mapping}
    better = score_names(paired, checkpoint, model)[0]
    if better <= loaded:
        return names, None, (), []
    if pairing.unambiguous and len(pairing.mapping) <= MAX_KEY_MAP:
        step = AppliedStep(
            key_map(sorted(pairing.mapping.items()), origin=AUTO), len(pairing.mapping)
        )
        note = (
            f"Paired {len(pairing.mapping)} tensors by structure (same order, shapes and "
            f"modules on both sides), loading {better} parameter elements; "
            "applied_transforms lists it as a key_map."
        )
        return paired, step, (), [note]
    full = _full_map(paired, model, fused=pairing.mapping)
    if len(full) > MAX_KEY_MAP:
        return (
            names,
            None,
            (),
            [
                f"A structural pairing would load {better} parameter elements but needs "
                f"{len(full)} renamed keys, over the key_map limit of {MAX_KEY_MAP}."
            ],
        )
    note = (
        f"A structural pairing of {len(pairing.mapping)} tensors would load {better} parameter "
        f"elements; it was not applied ({'; '.join(pairing.doubts)}): check it in "
        "suggested_options and pass its options to use it."
    )
    return names, None, (tuple(sorted(full.items())),), [note]


def _full_map(
    names: Mapping[str, str], model: TensorIndex, *, fused: Mapping[str, str]
) -> dict[str, str]:
    """Every renamed key that names a model key: a ``key_map`` complete on its own, since
    explicit options replace automatic alignment. The pairing's own names are kept too: a
    split query renamed beside a fused ``qkv`` names no model key but loads with ``adapt``."""
    return {o: n for o, n in names.items() if n != o and (n in model or o in fused)}


__all__ = ["MAX_CELLS", "MAX_KEY_MAP", "refine_alignment"]
