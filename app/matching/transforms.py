"""Key transforms (strip or add a prefix, regex renames) applied to checkpoint keys in order."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from app.enums import TransformKind
from app.errors import InvalidOptionsError
from app.patterns import check_replacement, compile_pattern

AUTO = "auto"
OPTION = "option"


@dataclass(frozen=True, slots=True)
class Transform:
    """One transform of checkpoint keys.

    Attributes:
        kind: ``strip_prefix``, ``add_prefix``, ``rename`` or ``match_by_suffix``.
        prefix: The literal prefix (strip/add).
        pattern: The RE2 pattern (rename).
        replacement: The replacement (rename).
        origin: ``auto`` (chosen by alignment) or ``option`` (asked for).
        mapping: (stored checkpoint key, new name) pairs of a ``key_map``.
    """

    kind: TransformKind
    prefix: str = ""
    pattern: str = ""
    replacement: str = ""
    origin: str = OPTION
    mapping: tuple[tuple[str, str], ...] = ()

    def describe(self) -> str:
        """A short phrase for notes: ``strip 'module.'``."""
        if self.kind is TransformKind.STRIP_PREFIX:
            return f"strip {self.prefix!r}"
        if self.kind is TransformKind.ADD_PREFIX:
            return f"add {self.prefix!r}"
        if self.kind is TransformKind.RENAME:
            return f"rename {self.pattern!r} -> {self.replacement!r}"
        if self.kind is TransformKind.KEY_MAP:
            return f"key_map of {len(self.mapping)} keys"
        if self.kind is TransformKind.LEAF_SYNONYM:
            return f"leaf synonym {self.pattern!r} -> {self.replacement!r}"
        if self.kind is TransformKind.CONVERSION:
            return f"library conversion {self.pattern!r} -> {self.replacement!r}"
        return "match by suffix"


@dataclass(frozen=True, slots=True)
class AppliedStep:
    """A transform and how many checkpoint keys it changed."""

    transform: Transform
    keys_changed: int


def strip(prefix: str, *, origin: str = OPTION) -> Transform:
    """A ``strip_prefix`` transform."""
    return Transform(TransformKind.STRIP_PREFIX, prefix=prefix, origin=origin)


def add(prefix: str, *, origin: str = OPTION) -> Transform:
    """An ``add_prefix`` transform."""
    return Transform(TransformKind.ADD_PREFIX, prefix=prefix, origin=origin)


MAX_RENAMED_KEY_CHARS = 4096
"""The longest key a rename may produce. A replacement repeating ``\\g<0>`` multiplies key
lengths with every rule; each key is checked as it is renamed, so one rule costs at most a
replacement's length times a key's, and the next rule starts from keys under this bound."""


def rename(pattern: str, replacement: str) -> Transform:
    """A ``rename`` transform; the pattern is checked now.

    Raises:
        InvalidOptionsError: The pattern does not compile or the replacement is invalid.
    """
    try:
        check_replacement(pattern, replacement)
    except ValueError as exc:
        raise InvalidOptionsError(f"Invalid rename rule: {exc}.") from None
    return Transform(TransformKind.RENAME, pattern=pattern, replacement=replacement)


def transform_key(key: str, transform: Transform) -> str:
    """Apply one strip/add/rename transform to one key.

    Example:
        >>> transform_key("module.fc.weight", strip("module."))
        'fc.weight'
        >>> transform_key("fc.weight", add("backbone."))
        'backbone.fc.weight'
    """
    if transform.kind is TransformKind.STRIP_PREFIX:
        return key.removeprefix(transform.prefix)
    if transform.kind is TransformKind.ADD_PREFIX:
        return transform.prefix + key
    if transform.kind is TransformKind.RENAME:
        renamed = str(compile_pattern(transform.pattern).sub(transform.replacement, key))
        if len(renamed) > MAX_RENAMED_KEY_CHARS:
            raise InvalidOptionsError(
                f"The rule {transform.describe()} makes the key {key[:80]!r} "
                f"{len(renamed)} characters long, over {MAX_RENAMED_KEY_CHARS}: no model key "
                "is that long. Check the replacement's group references."
            )
        return renamed
    raise ValueError(f"transform_key does not apply {transform.kind.value}")


def apply_transforms(
    names: Mapping[str, str], transforms: Iterable[Transform]
) -> tuple[dict[str, str], tuple[AppliedStep, ...]]:
    """Apply strip/add/rename transforms in order to current key names.

    Args:
        names: Original checkpoint key -> current name, in checkpoint order.
        transforms: The transforms, in order.

    Returns:
        Original key -> new name, and each transform with the number of keys it changed.

    Raises:
        InvalidOptionsError: A transform maps two checkpoint keys onto one name.
    """
    current = dict(names)
    steps: list[AppliedStep] = []
    for transform in transforms:
        if transform.kind is TransformKind.KEY_MAP:  # keyed by the stored checkpoint key
            mapping = dict(transform.mapping)
            renamed = {orig: mapping.get(orig, name) for orig, name in current.items()}
        else:
            renamed = {orig: transform_key(name, transform) for orig, name in current.items()}
        check_unique(renamed, cause=transform.describe())
        changed = sum(1 for orig in current if renamed[orig] != current[orig])
        steps.append(AppliedStep(transform, changed))
        current = renamed
    return current, tuple(steps)


def check_unique(names: Mapping[str, str], *, cause: str) -> None:
    """Raise when two original keys have the same new name.

    Raises:
        InvalidOptionsError: Naming both original keys and the shared name.
    """
    seen: dict[str, str] = {}
    for orig, name in names.items():
        if name in seen:
            raise InvalidOptionsError(
                f"The transform {cause} maps two checkpoint keys onto {name!r}: "
                f"{seen[name]!r} and {orig!r}. Make the rule more specific.",
                key=name,
                checkpoint_keys=[seen[name], orig],
            )
        seen[name] = orig


def key_map(mapping: Sequence[tuple[str, str]], *, origin: str = OPTION) -> Transform:
    """A ``key_map`` transform: stored checkpoint key -> model key, for the keys listed."""
    return Transform(TransformKind.KEY_MAP, origin=origin, mapping=tuple(mapping))


def option_transforms(
    *,
    strip_prefix: str | None,
    add_prefix: str | None,
    rules: Sequence[tuple[str, str]],
    mapping: Sequence[tuple[str, str]] = (),
) -> list[Transform]:
    """The explicit transforms of a check's options, in the documented order (strip, add,
    rename, key_map)."""
    transforms: list[Transform] = []
    if strip_prefix:
        transforms.append(strip(strip_prefix))
    if add_prefix:
        transforms.append(add(add_prefix))
    transforms.extend(rename(pattern, replacement) for pattern, replacement in rules)
    if mapping:
        transforms.append(key_map(mapping))
    return transforms
