"""``summary.message``: what the result means and what to do, in a few plain sentences."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Mapping

from app.enums import Reason, Verdict
from app.matching.advice import fused_attention_sentence, position_sentences
from app.matching.compare import MatchResult
from app.matching.dtypes import is_lossless
from app.matching.placement import Placement, within
from app.matching.reasons import Explanations, ancestors
from app.matching.shapes import head_cause
from app.matching.verdict import MIN_LOADED_SHARE, Weakness, find_weakness
from app.tensors import TensorIndex, TensorKind

MAX_NAMED = 3
"""The most modules named in one sentence before "and N more"."""


def human_count(n: int) -> str:
    """``7.0 B``, ``23.5 M``, ``9,472``: exact below a million, where "9.5 k" reads oddly.

    Example:
        >>> human_count(6_738_415_616), human_count(23_508_032), human_count(9_472)
        ('6.7 B', '23.5 M', '9,472')
    """
    for size, unit in ((1e9, "B"), (1e6, "M")):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n:,}"


def counted(n: int, singular: str, plural: str = "") -> str:
    """``1 parameter``, ``2,304 parameters``: a count with its noun in agreement.

    Example:
        >>> counted(1, "input channel"), counted(3, "input channel")
        ('1 input channel', '3 input channels')
    """
    return f"{human_count(n)} {singular if n == 1 else plural or singular + 's'}"


def _names(modules: list[str]) -> str:
    shown = ", ".join(modules[:MAX_NAMED])
    return shown + (f" and {len(modules) - MAX_NAMED} more" if len(modules) > MAX_NAMED else "")


def fully_loaded_modules(
    result: MatchResult, explanations: Explanations, model: TensorIndex
) -> list[str]:
    """The outermost modules whose every model tensor loads (ignorable ones aside)."""
    total: Counter[str] = Counter()
    good: Counter[str] = Counter()
    matched = set(result.matched)
    for info in model:
        ok = info.key in matched or (
            info.key in explanations.missing
            and explanations.missing[info.key].reason is Reason.IGNORABLE
        )
        for module in ancestors(info.key):
            total[module] += 1
            good[module] += ok
    full = [m for m in total if good[m] == total[m]]
    return [m for m in full if not any(good[a] == total[a] for a in ancestors(m))]


def compose_message(
    result: MatchResult,
    explanations: Explanations,
    verdict: Verdict,
    *,
    model: TensorIndex,
    kwargs: Mapping[str, object],
    placement: Placement | None = None,
) -> str:
    """One sentence on what loads, then one per kind of action needed.

    Example: "backbone.body loads fully (23.5 M parameters). New, so train them: backbone.fpn,
    rpn, roi_heads (18.3 M parameters). The checkpoint's fc is not used by this model."

    With a ``placement``, a backbone that does not load, is mostly new, or loads through one
    module is said first: the share of parameters alone would read as good news.
    """
    weakness = find_weakness(placement) if placement is not None else None
    sentences = [_loaded_sentence(result, explanations, verdict, model)]
    if placement is not None and weakness is not None and result.matched:
        shown = _weakness_sentence(placement, weakness)
        sentences = [shown] if weakness is Weakness.BACKBONE_NOT_LOADED else [*sentences, shown]
    if verdict is not Verdict.INCOMPATIBLE:  # no steps to follow for another architecture
        sentences += _action_sentences(result, explanations, model=model, kwargs=kwargs)
    return " ".join(sentences)


def _weakness_sentence(placement: Placement, weakness: Weakness) -> str:
    backbone = counted(placement.backbone_numel, "parameter")
    share = f"{placement.backbone_fraction:.1%}"
    if weakness is Weakness.BACKBONE_NOT_LOADED:
        where = (
            f"Only the head ({_names(list(placement.heads))}, "
            f"{counted(placement.head_loaded, 'parameter')}) loads"
            if placement.head_loaded
            else f"Only {counted(placement.backbone_loaded, 'parameter')} load"
        )
        return (
            f"{where}: the backbone gets {share} of its {backbone}, under the "
            f"{MIN_LOADED_SHARE:.0%} a pretrained backbone needs, so the model would compute on "
            "random features: this checkpoint is for another architecture or needs key options."
        )
    if weakness is Weakness.BACKBONE_MOSTLY_NEW:
        return (
            f"Most of the backbone is new ({human_count(placement.backbone_new)} of {backbone}"
            "): that is a model to train, not a pretrained one with changes."
        )
    return (
        f"Everything that loads sits in one module, {placement.loaded_modules[0]}: an alignment "
        f"carried by one module is no pretrained backbone ({share} of its {backbone})."
    )


def _loaded_sentence(
    result: MatchResult, explanations: Explanations, verdict: Verdict, model: TensorIndex
) -> str:
    loaded, total = result.loaded_parameter_numel, result.model_parameter_numel
    if not result.matched:
        return (
            f"Nothing in the checkpoint loads into this model (0 of {counted(total, 'parameter')}"
            "): check the architecture, its kwargs and the key options."
        )
    fraction = result.loaded_parameter_fraction
    share = share_of(fraction)
    if verdict is Verdict.INCOMPATIBLE:
        return (
            f"Only {share} of the model's parameters load ({human_count(loaded)} of "
            f"{human_count(total)}), under the {MIN_LOADED_SHARE:.0%} a compatible checkpoint "
            "fills: this checkpoint is for another architecture."
        )
    if verdict is Verdict.COMPATIBLE:
        return (
            f"Everything loads ({counted(loaded, 'parameter')} in "
            f"{counted(len(result.matched), 'tensor')})."
        )
    full = [
        m
        for m in fully_loaded_modules(result, explanations, model)
        if any(k.startswith(m + ".") for k in result.matched)
    ]
    if 0 < len(full) <= MAX_NAMED:
        verb = "loads" if len(full) == 1 else "load"
        return f"{', '.join(full)} {verb} fully ({counted(loaded, 'parameter')})."
    unloaded = _unloaded_modules(result, explanations)
    if unloaded is not None and 0 < len(unloaded) <= MAX_NAMED:
        return f"Everything but {', '.join(unloaded)} loads ({counted(loaded, 'parameter')})."
    verb = "loads" if loaded == 1 else "load"
    return f"{human_count(loaded)} of {counted(total, 'parameter')} {verb} ({share})."


def _unloaded_modules(result: MatchResult, explanations: Explanations) -> list[str] | None:
    """The outermost modules where nothing loads, if they hold every key that does not load."""
    loaded_modules = {m for key in result.matched for m in ancestors(key)}
    failing = [k for k, e in explanations.missing.items() if e.reason is not Reason.IGNORABLE]
    failing += [m.key for m in result.shape_mismatched]
    modules: dict[str, None] = {}
    for key in failing:
        outer = next((m for m in ancestors(key) if m not in loaded_modules), None)
        if outer is None:
            return None
        modules[outer] = None
    return list(modules)


def share_of(fraction: float) -> str:
    """A fraction as a percentage that reads 100.0% only when it is all (0.9996 is 99.9%)."""
    return f"{min(fraction, 0.999) if fraction < 1 else 1.0:.1%}"


def _module_numel(model: TensorIndex, modules: list[str]) -> int:
    return sum(i.numel for i in model if i.kind is TensorKind.PARAMETER and within(i.key, modules))


def _action_sentences(
    result: MatchResult,
    explanations: Explanations,
    *,
    model: TensorIndex,
    kwargs: Mapping[str, object],
) -> list[str]:
    out: list[str] = []
    new = list(explanations.new_modules)
    if new:
        verb, them = ("is", "it") if len(new) == 1 else ("are", "them")
        out.append(
            f"{_names(new)} {verb} new ({counted(_module_numel(model, new), 'parameter')}): "
            f"train {them}."
        )
    if explanations.structure is not None:  # depths and renames (app.matching.structure)
        out += explanations.structure.sentences()
    by_reason: dict[Reason, list[str]] = defaultdict(list)
    for key, e in explanations.shape_mismatched.items():
        by_reason[e.reason].append(key)
    shapes = {m.key: m for m in result.shape_mismatched}
    heads = list(dict.fromkeys(k.rsplit(".", 1)[0] for k in by_reason[Reason.HEAD_RESIZED]))
    if heads:
        first = shapes[by_reason[Reason.HEAD_RESIZED][0]]
        cause = head_cause(first.checkpoint_shape[0], first.model_shape[0], kwargs)
        out.append(f"The output layer {_names(heads)} is new because {cause}: train it.")
    for key in by_reason[Reason.INPUT_CHANNELS]:
        m = shapes[key]
        out.append(
            f"The stem {key.rsplit('.', 1)[0]} takes {counted(m.model_shape[1], 'input channel')}"
            f" instead of {m.checkpoint_shape[1]}: adapt it with timm's adapt_input_conv, or "
            "train it."
        )
    out += position_sentences(
        [shapes[k] for k in by_reason[Reason.POSITION_EMBEDDING_RESIZED]], kwargs
    )
    if by_reason[Reason.TRANSPOSED]:
        keys = by_reason[Reason.TRANSPOSED]
        out.append(
            f"{counted(len(keys), 'weight')} {'is' if len(keys) == 1 else 'are'} stored "
            f"transposed (Conv1D against Linear), e.g. {keys[0]}: "
            "transpose them before loading."
        )
    if by_reason[Reason.RESHAPED]:
        keys = by_reason[Reason.RESHAPED]
        out.append(
            f"{counted(len(keys), 'tensor')} {'has' if len(keys) == 1 else 'have'} another shape "
            "with as many elements, e.g. {keys[0]}: "
            "reshape them only if the layout is known."
        )
    out += fused_attention_sentence(explanations)
    unexplained = [k for k, e in explanations.missing.items() if e.reason is Reason.UNEXPLAINED]
    unexplained += by_reason[Reason.UNEXPLAINED]
    if unexplained:
        out.append(
            f"{counted(len(unexplained), 'model tensor')} "
            f"{'gets' if len(unexplained) == 1 else 'get'} no weights for no known reason, e.g. "
            f"{unexplained[0]}: see keys.missing and keys.shape_mismatched."
        )
    unused = [k for k, e in explanations.unexpected.items() if e.reason is Reason.UNEXPLAINED]
    if unused:
        out.append(
            f"{counted(len(unused), 'checkpoint tensor')} "
            f"{'is' if len(unused) == 1 else 'are'} unused for no known reason, e.g. {unused[0]}."
        )
    only = list(explanations.checkpoint_only_modules)
    if only:
        out.append(
            f"The checkpoint's {_names(only)} {'is' if len(only) == 1 else 'are'} not used "
            "by this model."
        )
    lossy = Counter(
        (d.checkpoint_dtype, d.model_dtype)
        for d in result.dtype_differs
        if not is_lossless(d.checkpoint_dtype, d.model_dtype)
    )
    for (source, target), count in lossy.items():
        out.append(f"{count} tensors are cast {source} -> {target}, which loses precision.")
    lossless = sum(
        1 for d in result.dtype_differs if is_lossless(d.checkpoint_dtype, d.model_dtype)
    )
    if lossless:
        out.append(f"{lossless} tensors are cast to the model's dtype without loss.")
    return out
