"""Whether casting a tensor from one dtype to another keeps every value exactly."""

from __future__ import annotations

# Floating dtypes: (exponent bits, mantissa bits).
_FLOATS: dict[str, tuple[int, int]] = {
    "float8_e4m3fn": (4, 3),
    "float8_e5m2": (5, 2),
    "float16": (5, 10),
    "bfloat16": (8, 7),
    "float32": (8, 23),
    "float64": (11, 52),
}
# Integer dtypes: (signed, bits).
_INTS: dict[str, tuple[bool, int]] = {
    "bool": (False, 1),
    "uint8": (False, 8),
    "uint16": (False, 16),
    "uint32": (False, 32),
    "uint64": (False, 64),
    "int8": (True, 8),
    "int16": (True, 16),
    "int32": (True, 32),
    "int64": (True, 64),
}


def is_lossless(source: str, target: str) -> bool:
    """Whether every value of dtype ``source`` is exactly representable in ``target``.

    Unknown dtypes (complex, packed 4-bit) count as lossy unless equal.

    Example:
        >>> is_lossless("float16", "float32"), is_lossless("float32", "float16")
        (True, False)
        >>> is_lossless("bfloat16", "float16"), is_lossless("int8", "float16")
        (False, True)
    """
    if source == target:
        return True
    if source in _FLOATS and target in _FLOATS:
        (se, sm), (te, tm) = _FLOATS[source], _FLOATS[target]
        return te >= se and tm >= sm
    if source in _INTS and target in _INTS:
        (ss, sb), (ts, tb) = _INTS[source], _INTS[target]
        if ss and not ts:
            return False  # negative values do not fit an unsigned type
        return tb >= sb + (1 if ts and not ss and source != "bool" else 0)
    if source in _INTS and target in _FLOATS:
        signed, bits = _INTS[source]
        return _FLOATS[target][1] + 1 >= bits - (1 if signed else 0)
    return False


def describe_cast(source: str, target: str) -> str:
    """``float16 -> float32 is lossless`` or ``float32 -> float16 loses precision``."""
    outcome = "is lossless" if is_lossless(source, target) else "loses precision"
    return f"{source} -> {target} {outcome}"
