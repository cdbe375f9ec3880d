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

MAX_GLOB_CHARS = 200
"""The longest ``q`` glob of ``GET /v1/architectures``, in characters."""

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


@lru_cache(maxsize=128)
def compile_glob(glob: str) -> Any:
    """A shell glob (``*``, ``?``, ``[...]``) as a bounded RE2 pattern, for ``fullmatch``.

    ``fnmatch`` compiles each glob into a backtracking ``re`` pattern and caches up to
    32,768 of them; a 65 KB glob per request grew the web process by 1.5 MB each. Here the
    glob is capped at ``MAX_GLOB_CHARS``, matched in linear time and at most 128 are kept.

    Raises:
        ValueError: Longer than ``MAX_GLOB_CHARS``, or not a pattern RE2 accepts.

    Example:
        >>> compile_glob("resnet*").fullmatch("resnet50") is not None
        True
    """
    if len(glob) > MAX_GLOB_CHARS:
        raise ValueError(f"a glob must be at most {MAX_GLOB_CHARS} characters")
    translated = "(?s:" + _glob_to_regex(glob) + r")\z"
    try:
        return re2.compile(translated, _options())
    except re2.error as exc:
        raise ValueError(f"the glob does not compile: {_message(exc)}") from None


def _glob_to_regex(glob: str) -> str:
    """``*`` -> ``.*``, ``?`` -> ``.``, ``[...]`` / ``[!...]`` -> a class, the rest literal.

    ``fnmatch.translate`` emits atomic groups that RE2 does not accept, so globs are
    translated here, with ``fnmatch``'s own rules for classes, into the plain subset RE2
    runs in linear time.
    """
    out: list[str] = []
    i, n = 0, len(glob)
    while i < n:
        char = glob[i]
        i += 1
        if char == "*":
            if not out or out[-1] != ".*":  # runs of stars are one
                out.append(".*")
        elif char == "?":
            out.append(".")
        elif char == "[":
            end = _class_end(glob, i)
            if end < 0:
                out.append(r"\[")
            else:
                out.append(_glob_class(glob[i:end]))
                i = end + 1
        else:
            out.append(re2.escape(char))
    return "".join(out)


def _class_end(glob: str, start: int) -> int:
    """Index of the ``]`` closing a class opened before ``start`` (-1: a literal ``[``)."""
    i = start
    if glob[i : i + 1] == "!":
        i += 1
    if glob[i : i + 1] == "]":  # a leading ']' is a member
        i += 1
    return glob.find("]", i)


def _glob_class(body: str) -> str:
    """A glob class body as an RE2 class; reversed ranges are dropped, as ``fnmatch`` does."""
    negate = body.startswith("!")
    members = body[1:] if negate else body
    items: list[tuple[str, str]] = []  # (low, high) ranges, single characters as (c, c)
    k = 0
    while k < len(members):
        if k + 2 < len(members) and members[k + 1] == "-":
            low, high = members[k], members[k + 2]
            if low <= high:
                items.append((low, high))
            k += 3
        else:
            items.append((members[k], members[k]))
            k += 1
    if not items:
        return "." if negate else r"\b\B"  # fnmatch: '[!]...' any character, empty: none
    escaped = "".join(
        _class_char(lo) if lo == hi else f"{_class_char(lo)}-{_class_char(hi)}" for lo, hi in items
    )
    return "[" + ("^" if negate else "") + escaped + "]"


def _class_char(char: str) -> str:
    return "\\" + char if char in "\\^[]-" else char
