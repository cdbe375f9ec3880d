"""A library's checkpoint filter as a candidate alignment (timm's ``checkpoint_filter_fn``).

The architecture side traced the filter on this checkpoint (``ArchitectureIndex.filter_trace``,
from ``app.architectures.timm_filters``): each model key it produces, from which checkpoint
keys, with which tensor operations. Here that trace is scored like any other alignment and
kept when it loads more: a key passed through under a new name is a rename; a key the filter
computed (transposed, unsqueezed, resampled, concatenated, or made from nothing such as a
zero bias) loads as an adaptation the merge computes by running the filter itself on that
key's sources (``app.merge.timm_filter``), so the merged tensor is the one timm gives.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

from app.enums import TransformKind
from app.matching.adapters import Adaptation, absorb
from app.matching.align import Alignment, score_names
from app.matching.compare import MatchResult
from app.matching.reasons import Explanations
from app.matching.transforms import AUTO, AppliedStep, Transform
from app.tensors import ArchitectureIndex, FilteredKey, TensorIndex, TensorKind

FILTER_OPERATION = "library_filter"
"""The merge operation that runs the library's filter for one key (``app.merge.timm_filter``)."""

_MAX_LISTED = 4


@dataclass(frozen=True, slots=True)
class Filtered:
    """The filter's alignment, when it loads more than the one found without it.

    Attributes:
        alignment: Renamed keys in ``names`` (the rest as stored), one ``conversion`` step.
        adaptations: The keys the filter computes, for the merge (adapter ``conversion``).
    """

    alignment: Alignment
    adaptations: tuple[Adaptation, ...]


def choose_filter(
    alignment: Alignment, checkpoint: TensorIndex, architecture: ArchitectureIndex
) -> Filtered | None:
    """The filter's alignment if it loads more parameter elements than ``alignment``.

    Args:
        alignment: The alignment found without the filter.
        checkpoint: The checkpoint's tensors (the candidate state_dict used).
        architecture: With ``filter_trace`` set for this checkpoint.

    Returns:
        The filter's alignment and adaptations, or None (no trace, it failed, it was traced
        on another state_dict of the file, or it loads no more).

    Example:
        >>> chosen = choose_filter(alignment, ckpt, arch_with_trace)  # doctest: +SKIP
        >>> chosen.alignment.names["visual.conv1.weight"]  # doctest: +SKIP
        'patch_embed.proj.weight'
    """
    trace = architecture.filter_trace
    if trace is not None and trace.error is not None:
        said = (
            f"timm's checkpoint filter {trace.function} could not run on this file's shapes "
            f"alone ({trace.error}), so it is not applied: if the file is in its original "
            f"authors' layout, run it yourself (model.load_state_dict({trace.function}"
            "(state_dict, model))) and check the result."
        )
        return Filtered(replace(alignment, notes=(*alignment.notes, said)), ())
    if trace is None or not trace.outputs:
        return None
    model = architecture.index
    if any(s not in checkpoint for out in trace.outputs for s in out.sources):
        return None
    fits = [out for out in trace.outputs if _fits(out, model)]
    renamed = {out.sources[0]: out.key for out in fits if _passed_through(out, fits)}
    computed = [out for out in fits if out.key not in renamed.values()]
    names = {key: renamed.get(key, key) for key in checkpoint.tensors}
    if len(set(names.values())) != len(names):
        return None  # a stored name would collide with a renamed one: not a clean candidate
    gained = sum(_parameter_numel(out.key, model) for out in computed)
    before = score_names(alignment.names, checkpoint, model)[0]
    after = score_names(names, checkpoint, model)[0] + gained
    if after <= before:
        return None
    step = Transform(
        TransformKind.CONVERSION, pattern=trace.function, replacement="timm", origin=AUTO
    )
    note = (
        f"Applied timm's own checkpoint filter {trace.function} (it converts the original "
        f"authors' checkpoints): {len(renamed)} keys renamed, {len(computed)} computed by it "
        f"({_listed([f'{o.key} ({_how(o)})' for o in computed])}), loading {after} parameter "
        "elements; a merge runs the filter itself for the computed keys."
    )
    dropped = [k for k in checkpoint.tensors if k not in _used(trace.outputs)]
    if dropped:
        note += f" The filter drops {len(dropped)} checkpoint keys ({_listed(dropped)})."
    return Filtered(
        alignment=replace(
            alignment,
            steps=(AppliedStep(step, len(renamed) + len(computed)),),
            names=names,
            leftover=(),
            ambiguous=(),
            alternatives=(),
            notes=(note,),  # the filter replaces the alignment those notes were about
            suggestions=(),
        ),
        adaptations=tuple(_adaptation(out, model, trace.function) for out in computed),
    )


def _fits(out: FilteredKey, model: TensorIndex) -> bool:
    info = model.get(out.key)
    return info is not None and info.shape == out.shape and info.kind is not TensorKind.TIED


def _passed_through(out: FilteredKey, fits: Sequence[FilteredKey]) -> bool:
    """A rename: one source, no operation, and no other output made from that source."""
    if len(out.sources) != 1 or out.operations:
        return False
    return sum(1 for other in fits if out.sources[0] in other.sources) == 1


def _parameter_numel(key: str, model: TensorIndex) -> int:
    info = model.tensors[key]
    return info.numel if info.kind is TensorKind.PARAMETER else 0


def _used(outputs: Sequence[FilteredKey]) -> set[str]:
    return {s for out in outputs for s in out.sources}


def _how(out: FilteredKey) -> str:
    if not out.sources:
        return "made by the filter, not read from the checkpoint"
    ops = ", ".join(out.operations) or "as stored"
    return f"{ops} of {', '.join(out.sources)}"


def _adaptation(out: FilteredKey, model: TensorIndex, function: str) -> Adaptation:
    return Adaptation(
        key=out.key,
        adapter="conversion",
        operation=FILTER_OPERATION,
        checkpoint_keys=out.sources,
        detail=f"Computed by timm's {function}: {_how(out)}.",
        shape=tuple(model.tensors[out.key].shape),
    )


def _listed(names: Sequence[str]) -> str:
    more = f", ... {len(names) - _MAX_LISTED} more" if len(names) > _MAX_LISTED else ""
    return ", ".join(names[:_MAX_LISTED]) + more


def absorb_computed(
    result: MatchResult,
    computed: Sequence[Adaptation],
    *,
    names: Mapping[str, str],
    model: TensorIndex,
) -> MatchResult:
    """The comparison with the filter's computed keys loaded and the keys they read used,
    before anything explains them (they are neither missing nor unexpected)."""
    nothing = Explanations({}, {}, {}, {}, (), ())
    loaded = {a.key for a in computed} - set(result.matched)
    used = {names.get(k, k) for a in computed for k in a.checkpoint_keys}
    return absorb(result, nothing, model=model, loaded=loaded, consumed=used)[0]
