"""Reasons that only a whole module shows: a replaced head, another depth, a renamed module.

Key by key, these three look like a new module to train, or like nothing known; seen per
module they are something else, and the advice differs:

- A head the checkpoint replaced by another structure (MoCo's ``fc`` MLP projector, DINO's
  ``head`` projection) is the linear-probe recipe: the model's head is new, train it.
- A repeated block that one side lacks while its same-shaped siblings load (resnet50 into
  resnet101: ``layer3.6`` to ``layer3.22``) is a different depth, not a module to train.
- A module whose shapes are those of an unused module of the checkpoint (DistilBERT's
  ``transformer`` for BERT's ``encoder``) is in the file under another name: map it.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace

from app.enums import Reason
from app.matching.compare import MatchResult
from app.matching.depth import DepthChange, find_depth_changes, kept
from app.matching.placement import within
from app.matching.reasons import Explanations, ancestors, holders
from app.matching.shapes import Explanation
from app.tensors import TensorIndex

MAX_PAIRS = 3
"""The most renamed modules named in the message before "and N more"."""

MOVED = frozenset({Reason.RENAMED, Reason.DEPTH_CHANGED})
"""Reasons under which a module is not new (model) or not merely unused (checkpoint)."""


@dataclass(frozen=True, slots=True)
class Structure:
    """Module-level findings.

    Attributes:
        replaced: Model head -> the checkpoint's module of that name with another structure
            (its name in the file).
        renamed: Model module -> the unused checkpoint module with its shapes (name in the
            file).
        depth: Stacks whose depth differs.
    """

    replaced: Mapping[str, str]
    renamed: Mapping[str, str]
    depth: tuple[DepthChange, ...]

    def sentences(self) -> list[str]:
        """Sentences for ``summary.message`` (replaced heads are in the "new" sentence)."""
        out = [change.sentence() for change in self.depth]
        pairs = [f"{module} as {found}" for module, found in self.renamed.items()]
        if len(pairs) == 1:
            out.append(
                f"The model's {pairs[0].replace(' as ', ' is in the checkpoint as ')} (the same "
                "shapes under another name): map it with a rename option instead of training it."
            )
        elif pairs:
            shown = ", ".join(pairs[:MAX_PAIRS])
            more = f" and {len(pairs) - MAX_PAIRS} more" if len(pairs) > MAX_PAIRS else ""
            out.append(
                f"{len(pairs)} model modules are in the checkpoint under other names with the "
                f"same shapes ({shown}{more}): map them with rename options instead of training "
                "them."
            )
        return out


def refine_structure(
    explanations: Explanations,
    *,
    result: MatchResult,
    checkpoint: TensorIndex,
    model: TensorIndex,
    sources: Mapping[str, str],
    heads: Sequence[str],
) -> Explanations:
    """Re-explain keys whose module, seen whole, is a replaced head, a depth or a rename.

    Args:
        explanations: ``explain(result, ...)``.
        result: The comparison (without alignment leftovers).
        checkpoint: The aligned checkpoint index.
        model: The model index.
        sources: Aligned key -> original checkpoint key.
        heads: The model's head modules (``app.matching.placement.resolve_heads``).

    Returns:
        The explanations with those keys' reasons, ``new_modules`` and
        ``checkpoint_only_modules`` updated, and ``structure`` set.
    """
    sides = _Sides(
        missing=dict(explanations.missing),
        unexpected=dict(explanations.unexpected),
        checkpoint=checkpoint,
        model=model,
        sources=sources,
        present=_modules((*result.matched, *(m.key for m in result.shape_mismatched))),
    )
    depth = find_depth_changes(model, checkpoint, present=sides.present)
    for change in depth:
        _mark(sides.missing, change.model_only, Reason.DEPTH_CHANGED, change.sentence())
        _mark(sides.unexpected, change.checkpoint_only, Reason.DEPTH_CHANGED, change.sentence())
    first = _first_index(model.tensors)
    renamed = _renamed(sides, heads=heads)
    renamed = dict(sorted(renamed.items(), key=lambda item: first[item[0]]))
    replaced = _replaced(sides, heads=heads)
    still_new = holders(k for k, e in sides.missing.items() if e.reason is Reason.NEW_MODULE)
    new = [m for m in explanations.new_modules if m in still_new]
    new = sorted(dict.fromkeys([*new, *replaced]), key=lambda m: first[m])
    reasons_in = _reasons_by_holder(sides.unexpected, sources)
    only = [o for o in explanations.checkpoint_only_modules if _still_unused(reasons_in.get(o, []))]
    return replace(
        explanations,
        missing=sides.missing,
        unexpected=sides.unexpected,
        new_modules=tuple(new),
        checkpoint_only_modules=tuple(only),
        structure=Structure(replaced=replaced, renamed=renamed, depth=depth),
    )


@dataclass(frozen=True, slots=True)
class _Sides:
    """Both indexes and the reasons being refined (the two dicts are updated in place)."""

    missing: dict[str, Explanation]
    unexpected: dict[str, Explanation]
    checkpoint: TensorIndex
    model: TensorIndex
    sources: Mapping[str, str]
    present: set[str]  # modules holding a key found on both sides

    def file_name(self, key: str, module: str) -> str:
        """The name in the file of ``module``, an ancestor of the aligned checkpoint ``key``."""
        origin = self.sources.get(key, key)
        tail = key[len(module) :]
        return origin[: len(origin) - len(tail)] if origin.endswith(tail) else module


def _modules(keys: Iterable[str]) -> set[str]:
    return {m for key in keys for m in ancestors(key)}


def _first_index(keys: Iterable[str]) -> dict[str, int]:
    first: dict[str, int] = {}
    for i, key in enumerate(keys):
        for module in (*ancestors(key), key):  # a top-level tensor stands for itself
            first.setdefault(module, i)
    return first


def _reasons_by_holder(
    unexpected: Mapping[str, Explanation], sources: Mapping[str, str]
) -> dict[str, list[Reason]]:
    """The reasons of the unexpected keys under each file module (and of each key itself)."""
    found: dict[str, list[Reason]] = {}
    for key, why in unexpected.items():
        origin = sources.get(key, key)
        for holder in (*ancestors(origin), origin):
            found.setdefault(holder, []).append(why.reason)
    return found


def _still_unused(reasons: Sequence[Reason]) -> bool:
    moved = [r for r in reasons if r is not Reason.IGNORABLE]
    return not moved or any(r not in MOVED for r in moved)


def _mark(
    explanations: dict[str, Explanation], modules: Sequence[str], reason: Reason, detail: str
) -> None:
    """Give ``reason`` to the keys under ``modules`` that were new or unexplained."""
    if not modules:
        return
    for key, why in explanations.items():
        if why.reason in (Reason.NEW_MODULE, Reason.UNEXPLAINED) and within(key, modules):
            explanations[key] = Explanation(reason, detail)


def _shapes(index: TensorIndex, keys: Iterable[str]) -> tuple[tuple[int, ...], ...]:
    return tuple(sorted(index.tensors[k].shape for k in keys if kept(k)))


def _renamed(sides: _Sides, *, heads: Sequence[str]) -> dict[str, str]:
    """New model modules whose shapes are those of a wholly unused checkpoint module.

    Larger modules choose first, and a checkpoint module serves once (nor its parts after
    it). Only modules of two or more parameterised modules count: a lone Linear or norm
    matches an unused one by chance (RoBERTa's new ``pooler.dense`` and its unused
    ``lm_head.dense``). A head stays new (training a head is expected); its detail names the
    same-shaped module (BERT's next-sentence ``cls.seq_relationship`` is no 2-label classifier).
    """
    ckpt_keys: dict[str, list[str]] = defaultdict(list)
    for key in sides.checkpoint.tensors:
        for module in ancestors(key):
            ckpt_keys[module].append(key)
    unused = {
        module: _shapes(sides.checkpoint, keys)
        for module, keys in sorted(ckpt_keys.items(), key=lambda item: item[0].count("."))
        if all(
            k in sides.unexpected and sides.unexpected[k].reason is Reason.NEW_MODULE
            for k in keys
            if kept(k)
        )
    }
    new: dict[str, list[str]] = defaultdict(list)
    for key, why in sides.missing.items():
        outer = next((m for m in ancestors(key) if m not in ckpt_keys), None)
        if why.reason is Reason.NEW_MODULE and outer is not None:
            new[outer].append(key)
    claimed: list[str] = []
    found: dict[str, str] = {}
    for module in sorted(new, key=lambda m: -sum(sides.model.tensors[k].numel for k in new[m])):
        keys = [k for k in sides.model.tensors if within(k, [module])]
        signature = _shapes(sides.model, keys)
        match = next(
            (
                c
                for c, shapes in unused.items()
                if shapes == signature
                and not any(within(c, [o]) or within(o, [c]) for o in claimed)
            ),
            None,
        )
        if match is None or not signature:
            continue
        name = sides.file_name(ckpt_keys[match][0], match)
        if _in_head(module, heads) or len({k.rsplit(".", 1)[0] for k in keys}) < 2:
            for key in new[module]:
                why = sides.missing[key]
                hint = f" (The checkpoint's unused {name!r} has its shapes, if it is the same.)"
                sides.missing[key] = Explanation(why.reason, why.detail + hint)
            continue
        claimed.append(match)
        found[module] = name
        _mark(
            sides.missing,
            [module],
            Reason.RENAMED,
            f"The checkpoint's unused {name!r} has the shapes of {module!r}: probably this "
            "module under another name; map it with a rename option rather than train it.",
        )
        _mark(
            sides.unexpected,
            [match],
            Reason.RENAMED,
            f"Unused, though it has the shapes of the model's {module!r}: probably that "
            "module under another name; map it with a rename option.",
        )
    return found


def _in_head(module: str, heads: Sequence[str]) -> bool:
    """Whether ``module`` is a head, lies in one or holds one."""
    return within(module, heads) or any(within(h, [module]) for h in heads)


def _replaced(sides: _Sides, *, heads: Sequence[str]) -> dict[str, str]:
    """Model heads whose name the checkpoint uses for another structure (a projector)."""
    found: dict[str, str] = {}
    done: set[str] = set()
    unused = [k for k in sides.unexpected if k in sides.checkpoint.tensors]
    for key, why in list(sides.missing.items()):
        module = next((m for m in ancestors(key) if m not in sides.present), None)
        if why.reason is not Reason.UNEXPLAINED or module is None or module in done:
            continue
        done.add(module)
        parts = [k for k in unused if within(k, [module])]
        if not parts:
            continue
        name = sides.file_name(parts[0], module)
        listing = ", ".join(parts[:3]) + (f" and {len(parts) - 3} more" if len(parts) > 3 else "")
        other = f"The checkpoint's {name!r} has another structure ({listing})"
        if not _in_head(module, heads):
            _mark(sides.missing, [module], Reason.UNEXPLAINED, f"{other}: nothing in it fits.")
            continue
        found[module] = name
        _mark(
            sides.missing,
            [module],
            Reason.NEW_MODULE,
            f"{other}, a projector or another head that this model does not use: the head "
            f"{module!r} is new, train it.",
        )
        _mark(
            sides.unexpected,
            [module],
            Reason.NEW_MODULE,
            f"Part of the checkpoint's {name!r}, another structure than the model's head "
            f"{module!r} (a projector or another head): not used.",
        )
    return found
