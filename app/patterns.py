"""Bounded regular expressions from user options, compiled with RE2 (linear time, no backtracking).

Rename rules and ``freeze.trainable`` come from uploads' options; RE2 matches in time linear in
the key's length whatever the pattern, and the caps below bound compile time and memory, so no
pattern can hang a worker. The web process validates options with the same functions the
worker uses, so a bad pattern is a 422 at submission time.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import re2

MAX_PATTERN_CHARS = 500
"""The longest pattern or replacement accepted, in characters."""

MAX_PATTERNS = 64
"""The most rename rules, and separately the most ``trainable`` patterns, in one check."""

MAX_PROGRAM_BYTES = 1 << 20
"""RE2's memory budget per compiled pattern (bytes); a pattern needing more is refused."""

_GROUP_REF = re2.compile(r"\\([1-9][0-9]?)|\\g<(\w+)>")


def _options() -> Any:
    options = re2.Options()
    options.max_mem = MAX_PROGRAM_BYTES
    options.log_errors = False  # errors are raised, not printed to the worker's stderr
    return options


@lru_cache(maxsize=1024)
def compile_pattern(pattern: str) -> Any:
    """Compile ``pattern`` with RE2 under the caps of this module.

    Args:
        pattern: An RE2 regular expression (Python ``re`` syntax without backreferences
            or lookaround).

    Returns:
        The compiled pattern (``re2._Regexp``: ``search``, ``sub``, ``groups``).

    Raises:
        ValueError: The pattern is empty, longer than ``MAX_PATTERN_CHARS`` or does not compile.

    Example:
        >>> compile_pattern(r"^stage(\\d)\\.").sub(r"layer\\1.", "stage1.conv.weight")
        'layer1.conv.weight'
    """
    if not pattern:
        raise ValueError("a pattern must not be empty")
    if len(pattern) > MAX_PATTERN_CHARS:
        raise ValueError(f"a pattern must be at most {MAX_PATTERN_CHARS} characters")
    try:
        return re2.compile(pattern, _options())
    except re2.error as exc:
        raise ValueError(f"pattern {pattern!r} does not compile: {_message(exc)}") from None


def check_replacement(pattern: str, replacement: str) -> None:
    """Check that ``replacement`` only refers to groups ``pattern`` has.

    Only ``\\N`` (1-99) and ``\\g<name>`` escapes are allowed, so a replacement can never fail
    while keys are renamed.

    Raises:
        ValueError: Too long, an unknown group, or another backslash escape.
    """
    if len(replacement) > MAX_PATTERN_CHARS:
        raise ValueError(f"a replacement must be at most {MAX_PATTERN_CHARS} characters")
    compiled = compile_pattern(pattern)
    for match in _GROUP_REF.finditer(replacement):
        number, name = match.group(1), match.group(2)
        group = int(number) if number else (int(name) if name.isdigit() else name)
        known = (
            0 <= group <= compiled.groups
            if isinstance(group, int)
            else group in compiled.groupindex
        )
        if not known:
            raise ValueError(
                f"replacement {replacement!r} refers to group {match.group(0)!r}, which "
                f"pattern {pattern!r} does not have"
            )
    if "\\" in _GROUP_REF.sub("", replacement):
        raise ValueError(
            f"replacement {replacement!r} has a backslash escape other than \\N or \\g<name>"
        )


def _message(exc: BaseException) -> str:
    text = exc.args[0] if exc.args else str(exc)
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    return str(text)
