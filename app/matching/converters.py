"""A library's own load-time key conversion (transformers 5's conversion mapping), applied as
a candidate alignment.

The architecture side extracts the rules from the model (``app.architectures.conversions``);
this module replays transformers' renaming on key names only, with the standard ``re`` module
because the library's patterns use look-aheads RE2 refuses. A well-kept converter beats an
inferred mapping, so it is scored like any other candidate and kept when it loads more.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from functools import lru_cache

from app.enums import TransformKind
from app.matching.transforms import AUTO, AppliedStep, Transform
from app.tensors import KeyFusion, KeyRenaming, TensorIndex


@lru_cache(maxsize=256)
def _compiled(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


def rename_key(key: str, renaming: KeyRenaming) -> str:
    """Apply one renaming to one key, as transformers' ``WeightTransform.rename_source_key``.

    Example:
        >>> rule = KeyRenaming(r"(?P<g0>LayerNorm.gamma(?!\\w))", ("LayerNorm.weight",))
        >>> rename_key("encoder.LayerNorm.gamma", rule)
        'encoder.LayerNorm.weight'
    """
    scoped = scope_key(key, renaming.scope_prefix, renaming.base_model_prefix)
    if scoped is None:
        return key
    prefix, rest = scoped
    compiled = _compiled(renaming.pattern)
    found = compiled.search(rest)
    if found is None:
        return key
    group = next(name for name, value in found.groupdict().items() if value is not None)
    replacement = renaming.replacements[int(group[1:])]
    if r"\1" in replacement:
        replacement = replacement.replace(r"\1", found.group(compiled.groupindex[group] + 1))
    renamed = rest.replace(found.group(0), replacement, 1)
    return prefix + renamed


def scope_key(
    key: str, scope_prefix: str | None, base_model_prefix: str | None
) -> tuple[str, str] | None:
    """(prefix, rest): the part of ``key`` a scoped rule sees, as transformers'
    ``WeightTransform._scoped_match`` strips it; None when the key is out of scope."""
    if scope_prefix is None:
        return "", key
    scope = f"{scope_prefix}." if scope_prefix else ""
    base = f"{base_model_prefix}." if base_model_prefix else ""
    if key.startswith(base + scope):
        prefix = base + scope
    elif key.startswith(scope):
        prefix = scope
    else:
        return None
    return prefix, key.removeprefix(prefix)


def convert_names(
    names: Mapping[str, str],
    renamings: Sequence[KeyRenaming],
    *,
    model: TensorIndex,
    base_model_prefix: str | None,
) -> tuple[dict[str, str], tuple[AppliedStep, ...]]:
    """Every renaming applied in order to the aligned names, then the base-model prefix added or
    removed where that names a model key (as transformers does after renaming).

    Returns:
        The new names and one step per renaming that changed keys.
    """
    current = dict(names)
    steps: list[AppliedStep] = []
    for renaming in renamings:
        renamed = {orig: rename_key(name, renaming) for orig, name in current.items()}
        changed = sum(1 for orig in current if renamed[orig] != current[orig])
        if changed:
            replacement = renaming.replacements[0] if renaming.replacements else ""
            transform = Transform(
                TransformKind.CONVERSION,
                pattern=renaming.pattern,
                replacement=replacement,
                origin=AUTO,
            )
            steps.append(AppliedStep(transform, changed))
        current = renamed
    if base_model_prefix:
        current = {o: fix_base_prefix(n, base_model_prefix, model) for o, n in current.items()}
    return current, tuple(steps)


def fix_base_prefix(name: str, base: str, model: TensorIndex) -> str:
    """Strip or add the base-model prefix where that names a model key, as transformers does
    after renaming (a ``ForCausalLM`` file into a base model, or the reverse)."""
    if name in model:
        return name
    if name.startswith(base + ".") and name[len(base) + 1 :] in model:
        return name[len(base) + 1 :]
    if f"{base}.{name}" in model:
        return f"{base}.{name}"
    return name


def fusion_sentences(fusions: Sequence[KeyFusion], unexpected: Sequence[str]) -> list[str]:
    """What to fuse, for each library fusion the service does not build whose source keys are
    among ``unexpected``.

    Fusions whose operations the merge replays (``buildable``) are built by
    ``app.matching.fusions.apply_fusions`` instead, which says what it built or why it left keys.
    """
    sentences = []
    for fusion in fusions:
        if buildable(fusion):
            continue
        compiled = _compiled(fusion.pattern)
        sources = [k for k in unexpected if compiled.search(k)]
        if sources:
            sentences.append(
                f"{len(sources)} checkpoint keys such as {sources[0]!r} are fused by "
                f"transformers at load time into '*{fusion.target}' "
                f"({', '.join(fusion.operations) or 'fused'}); the service does not replay "
                "these operations: load the file with from_pretrained and save it again."
            )
    return sentences


STACK = "MergeModulelist"
CONCATENATE = "Concatenate"


def buildable(fusion: KeyFusion) -> bool:
    """Whether the service builds this fusion: transformers' ``MergeModulelist(dim=0)`` (one
    tensor per expert stacked), then at most one ``Concatenate`` along a later dim. That chain
    is exact expert by expert, so the merge streams one expert at a time through the library's
    own operation classes (``app.merge.fusion``)."""
    steps = fusion.steps
    if not steps or steps[0] != (STACK, 0) or len(steps) > 2:
        return False
    return all(name == CONCATENATE and dim >= 1 for name, dim in steps[1:])


def compiled(pattern: str) -> re.Pattern[str]:
    """A library pattern compiled with ``re`` (cached): look-aheads that RE2 refuses."""
    return _compiled(pattern)
