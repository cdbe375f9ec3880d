"""One entry point for matching: choose the state_dict, align, compare, explain, judge, plan."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace

from app.enums import Reason, Verdict
from app.matching.adapters import Adaptation, apply_adapters
from app.matching.advice import helpful_adapters
from app.matching.align import Alignment, auto_align, explicit_align
from app.matching.candidates import choose_candidate
from app.matching.compare import MatchResult, compare, strict_loadable
from app.matching.filters import absorb_computed, choose_filter
from app.matching.fusions import apply_fusions
from app.matching.layout_reasons import layout_sentences, relabel, settle_layout_verdict
from app.matching.layouts import find_layouts
from app.matching.message import compose_message, share_of
from app.matching.placement import Placement, place, resolve_heads
from app.matching.plan import TrainingPlan, plan_training
from app.matching.reasons import Explanations, explain
from app.matching.refine import refine_alignment
from app.matching.structure import refine_structure
from app.matching.ties import credit_ties
from app.matching.transforms import option_transforms
from app.matching.tree import KeyOutcome, ModuleTreeNode, build_tree
from app.matching.twins import settle_verdict
from app.matching.verdict import Weakness, decide_verdict, find_weakness
from app.tensors import ArchitectureIndex, CheckpointIndex, TensorIndex, TensorKind


@dataclass(frozen=True, slots=True)
class MatchOptions:
    """The matching part of a check's options, as plain values (see ``CheckOptions``)."""

    state_dict_key: str = "auto"
    align: str = "auto"
    strip_prefix: str | None = None
    add_prefix: str | None = None
    rename: tuple[tuple[str, str], ...] = ()
    match_by_suffix: bool = False
    key_map: tuple[tuple[str, str], ...] = ()
    freeze_mode: str = "loaded"
    trainable: tuple[str, ...] = ()
    freeze_given: bool = False
    adapt: tuple[str, ...] = ()

    @property
    def explicit(self) -> bool:
        """Whether explicit key options replace automatic alignment."""
        return bool(
            self.strip_prefix
            or self.add_prefix
            or self.rename
            or self.match_by_suffix
            or self.key_map
        )


@dataclass(frozen=True, slots=True)
class Suggestion:
    """Options found by structure but not applied, with what they would give.

    Attributes:
        options: Check options ready to paste (``{"key_map": {...}}``).
        loaded_parameter_fraction: The share of the model's parameter elements they load.
        verdict: The verdict they give.
    """

    options: Mapping[str, object]
    loaded_parameter_fraction: float
    verdict: Verdict


@dataclass(frozen=True, slots=True)
class Analysis:
    """Everything a report says about one checkpoint against one architecture.

    Attributes:
        checkpoint: The checkpoint as used (the chosen candidate state_dict).
        candidate_scores: Candidate path -> parameter elements it would load (when scored).
        state_dict_reason: Why that state_dict was used.
        alignment: The key alignment applied.
        result: The comparison of the aligned checkpoint with the model.
        explanations: A reason per key that does not load as it is.
        verdict: The verdict.
        message: What it means and what to do.
        modules: The module tree.
        plan: The training plan.
        placement: Where the loaded parameters sit (backbone or head).
        strict_loadable: Whether ``load_state_dict(strict=True)`` accepts the chosen
            state_dict as stored (before alignment).
        adaptations: Matched keys computed by an adapter (``options.adapt``) or built by the
            library's own fusion (``app.matching.fusions``), for the merge.
        adapter_notes: A sentence per adapter on what it loaded or left.
        suggestions: Options that would load more, found but not applied automatically.
    """

    checkpoint: CheckpointIndex
    candidate_scores: Mapping[str, int]
    state_dict_reason: str
    alignment: Alignment
    result: MatchResult
    explanations: Explanations
    verdict: Verdict
    message: str
    modules: list[ModuleTreeNode]
    plan: TrainingPlan
    placement: Placement
    strict_loadable: bool
    adaptations: tuple[Adaptation, ...] = ()
    adapter_notes: tuple[str, ...] = ()
    suggestions: tuple[Suggestion, ...] = ()

    @property
    def key_map(self) -> dict[str, str]:
        """Model key -> original checkpoint key, for every matched key (what a merge loads).

        Shape-mismatched tensors, ``transposed`` ones included, are not loaded as they are;
        keys an adapter loads are in ``adaptations`` instead (their values are computed).
        """
        sources = self.alignment.sources
        adapted = {a.key for a in self.adaptations}
        return {key: sources[key] for key in self.result.matched if key not in adapted}


def _aligner(
    architecture: ArchitectureIndex, options: MatchOptions
) -> Callable[[TensorIndex], Alignment]:
    model = architecture.index
    transforms = option_transforms(
        strip_prefix=options.strip_prefix,
        add_prefix=options.add_prefix,
        rules=options.rename,
        mapping=options.key_map,
    )

    def align(index: TensorIndex) -> Alignment:
        if options.explicit:
            alignment = explicit_align(
                index, model, transforms=transforms, suffix=options.match_by_suffix
            )
            if options.align == "auto":
                note = "Explicit key options were given, so automatic alignment did not run."
                return _with_note(alignment, note)
            return alignment
        if options.align == "none":
            return Alignment(
                names={k: k for k in index.tensors}, notes=("Alignment is off (align: none).",)
            )
        return refine_alignment(auto_align(index, model), index, architecture)

    return align


def _with_note(alignment: Alignment, note: str) -> Alignment:
    return replace(alignment, notes=(*alignment.notes, note))


def analyse(
    checkpoint: CheckpointIndex,
    architecture: ArchitectureIndex,
    options: MatchOptions,
    *,
    suggest: bool = True,
) -> Analysis:
    """Match a checkpoint with an architecture and explain the outcome.

    Args:
        checkpoint: What the reader found in the file.
        architecture: The architecture built on meta.
        options: The matching options.
        suggest: Whether to try other options (``suggestions``); off when checking one.

    Returns:
        The analysis a report is built from.

    Raises:
        InvalidOptionsError: An explicit transform maps two checkpoint keys onto one name.

    Example:
        >>> from app.tensors import TensorInfo
        >>> p = TensorKind.PARAMETER
        >>> model = TensorIndex.from_infos([TensorInfo("fc.weight", (2, 2), "float32", p)])
        >>> ckpt = TensorIndex.from_infos([TensorInfo("module.fc.weight", (2, 2), "float32")])
        >>> result = analyse(
        ...     CheckpointIndex("torch_zip", ckpt),
        ...     ArchitectureIndex("plugin:tiny", "plugin", {}, model),
        ...     MatchOptions(),
        ... )
        >>> result.verdict.value, result.key_map
        ('compatible', {'fc.weight': 'module.fc.weight'})
    """
    model = architecture.index
    align = _aligner(architecture, options)
    choice = choose_candidate(checkpoint, model, requested=options.state_dict_key, align=align)
    chosen = choice.checkpoint
    alignment = align(chosen.index)
    filtered = (
        choose_filter(alignment, chosen.index, architecture)
        if options.align == "auto" and not options.explicit
        else None
    )
    alignment = filtered.alignment if filtered is not None else alignment
    aligned = alignment.aligned_index(chosen.index)
    layouts = find_layouts(aligned, model)
    aligned = layouts.loadable(aligned)  # quantized weights are missing, not loaded with a cast
    base = compare(aligned, model)
    computed = filtered.adaptations if filtered is not None else ()
    if computed:  # keys timm's filter computes load, and the keys they read are used
        base = absorb_computed(base, computed, names=alignment.names, model=model)
    result = credit_ties(_with_leftovers(base, alignment), model)
    explanations = explain(
        base,
        checkpoint=aligned,
        model=model,
        sources=alignment.sources,
        leftover=alignment.leftover,
        ambiguous=alignment.ambiguous,
        architecture_kwargs=architecture.kwargs,
    )
    heads = resolve_heads(model, architecture.head_modules)
    explanations = refine_structure(
        explanations,
        result=base,
        checkpoint=aligned,
        model=model,
        sources=alignment.sources,
        heads=heads,
    )
    explanations = relabel(explanations, layouts, sources=alignment.sources)
    fused = apply_fusions(
        result,
        explanations,
        fusions=architecture.fusions if options.align != "none" else (),
        checkpoint=aligned,
        model=model,
        sources=alignment.sources,
        base_model_prefix=_base_model_prefix(architecture),
        renamings=architecture.renamings,
    )
    result, explanations = fused.result, fused.explanations
    alignment = replace(
        alignment,
        steps=(*alignment.steps, *fused.steps),
        notes=(*alignment.notes, *fused.notes),
    )
    adapted = apply_adapters(
        result,
        explanations,
        adapt=options.adapt,
        checkpoint=aligned,
        model=model,
        sources=alignment.sources,
        layouts=layouts,
    )
    result, explanations = adapted.result, adapted.explanations
    placement = place(result, explanations, model=model, heads=heads)
    twins = [t for t in (choice.twins, alignment.twins) if t is not None]
    verdict = settle_layout_verdict(
        settle_verdict(decide_verdict(result, explanations, placement), twins), layouts
    )
    told = layout_sentences(  # what the file is comes first, and alone if unusable
        layouts, dequantized={a.key for a in adapted.adaptations if a.adapter == "dequantize"}
    )
    ignorable = {k for k, e in explanations.missing.items() if e.reason is Reason.IGNORABLE}
    plan = plan_training(
        model,
        set(result.matched) | ignorable,
        mode=options.freeze_mode,
        trainable_patterns=options.trainable,
        explicit=options.freeze_given,
        untrusted=(
            "the backbone does not load (a loaded head on random features is no start)"
            if find_weakness(placement) is Weakness.BACKBONE_NOT_LOADED
            else None
        ),
    )
    suggestions = (
        _suggestions(checkpoint, architecture, options, alignment.suggestions, result, explanations)
        if suggest
        else ()
    )
    return Analysis(
        checkpoint=chosen,
        candidate_scores=choice.scores,
        state_dict_reason=choice.reason,
        alignment=alignment,
        result=result,
        explanations=explanations,
        verdict=verdict,
        message=" ".join(
            [
                *told,
                *(
                    [
                        compose_message(
                            result,
                            explanations,
                            verdict,
                            model=model,
                            kwargs=architecture.kwargs,
                            placement=placement,
                        )
                    ]
                    if not told or verdict is not Verdict.INCOMPATIBLE
                    else []
                ),
                *(t.sentence() for t in twins),
                *_suggestion_sentence(suggestions, result),
            ]
        ),
        modules=build_tree(_outcomes(result, explanations, model)),
        plan=plan,
        placement=placement,
        strict_loadable=strict_loadable(chosen.index, model),  # the file as stored, unaligned
        adaptations=(*computed, *fused.adaptations, *adapted.adaptations),
        adapter_notes=adapted.notes,
        suggestions=suggestions,
    )


def _suggestion_sentence(suggestions: Sequence[Suggestion], result: MatchResult) -> list[str]:
    """Point at the best suggestion when it loads more: a reader of the message alone (the
    CLI, a registry tag) must learn that pasting options turns the verdict around."""
    if not suggestions:
        return []
    best = max(suggestions, key=lambda s: s.loaded_parameter_fraction)
    if best.loaded_parameter_fraction <= result.loaded_parameter_fraction:
        return []
    names = ", ".join(sorted(best.options))
    return [
        f"suggested_options has options ({names}) that load "
        f"{share_of(best.loaded_parameter_fraction)} of the parameters "
        f"({best.verdict}): pass them as options to use them."
    ]


def _suggestions(
    checkpoint: CheckpointIndex,
    architecture: ArchitectureIndex,
    options: MatchOptions,
    mappings: tuple[tuple[tuple[str, str], ...], ...],
    result: MatchResult,
    explanations: Explanations,
) -> tuple[Suggestion, ...]:
    """Each structural ``key_map`` with the adapters it needs, or else the adapters that load
    what the current options leave: each checked as the user would pass it."""
    if mappings:
        base = MatchOptions(state_dict_key=options.state_dict_key, adapt=options.adapt)
        found = []
        for mapping in mappings:
            tried = replace(base, key_map=mapping)
            outcome = analyse(checkpoint, architecture, tried, suggest=False)
            tried, outcome = _adapted(checkpoint, architecture, tried, outcome)
            found.append(_suggestion(tried, outcome, architecture))
        return tuple(found)
    adapting = helpful_adapters(explanations, options.adapt)
    if not adapting:
        return ()
    tried = replace(options, adapt=adapting)
    outcome = analyse(checkpoint, architecture, tried, suggest=False)
    if outcome.result.loaded_parameter_numel <= result.loaded_parameter_numel:
        return ()
    return (_suggestion(tried, outcome, architecture),)


def _adapted(
    checkpoint: CheckpointIndex,
    architecture: ArchitectureIndex,
    tried: MatchOptions,
    outcome: Analysis,
) -> tuple[MatchOptions, Analysis]:
    """``tried`` with the adapters its outcome calls for, when they load more."""
    adapting = helpful_adapters(outcome.explanations, tried.adapt)
    if not adapting:
        return tried, outcome
    more = replace(tried, adapt=adapting)
    better = analyse(checkpoint, architecture, more, suggest=False)
    if better.result.loaded_parameter_numel <= outcome.result.loaded_parameter_numel:
        return tried, outcome
    return more, better


def _suggestion(
    tried: MatchOptions, outcome: Analysis, architecture: ArchitectureIndex
) -> Suggestion:
    """The options as a user pastes them (the wire names of ``CheckOptions``)."""
    pasted: dict[str, object] = {}
    if tried.state_dict_key != "auto":
        pasted["state_dict_key"] = tried.state_dict_key
    if tried.align != "auto":
        pasted["align"] = tried.align
    if tried.strip_prefix:
        pasted["strip_prefix"] = tried.strip_prefix
    if tried.add_prefix:
        pasted["add_prefix"] = tried.add_prefix
    if tried.rename:
        pasted["rename"] = [{"pattern": p, "replacement": r} for p, r in tried.rename]
    if tried.match_by_suffix:
        pasted["match_by_suffix"] = True
    if tried.key_map:
        pasted["key_map"] = dict(tried.key_map)
    if tried.adapt:
        pasted["adapt"] = list(tried.adapt)
    if architecture.kwargs:
        pasted["architecture_kwargs"] = dict(architecture.kwargs)
    return Suggestion(pasted, outcome.result.loaded_parameter_fraction, outcome.verdict)


def _base_model_prefix(architecture: ArchitectureIndex) -> str | None:
    prefixes = [r.base_model_prefix for r in architecture.renamings] + [
        f.base_model_prefix for f in architecture.fusions
    ]
    return next((p for p in prefixes if p), None)


def _with_leftovers(result: MatchResult, alignment: Alignment) -> MatchResult:
    if not alignment.leftover:
        return result
    return replace(result, unexpected=(*result.unexpected, *alignment.leftover))


def _outcomes(
    result: MatchResult, explanations: Explanations, model: TensorIndex
) -> list[KeyOutcome]:
    status = {k: "matched" for k in result.matched}
    status.update({k: "missing" for k in result.missing})
    status.update({m.key: "shape_mismatched" for m in result.shape_mismatched})
    reasons = {**explanations.missing, **explanations.shape_mismatched}
    outcomes = [
        KeyOutcome(
            info.key,
            status[info.key],
            reasons[info.key].reason if info.key in reasons else None,
            info.numel if info.kind is TensorKind.PARAMETER else 0,
        )
        for info in model
    ]
    outcomes += [
        KeyOutcome(key, "unexpected", explanations.unexpected[key].reason)
        for key in result.unexpected
    ]
    return outcomes
