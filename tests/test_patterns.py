"""Tests of app.patterns."""

from __future__ import annotations

import doctest

import pytest
from hypothesis import given
from hypothesis import strategies as st

import app.patterns as patterns_module
from app.patterns import MAX_PATTERN_CHARS, check_replacement, compile_pattern


def test_compile_pattern_docstring_example_runs() -> None:
    assert doctest.testmod(patterns_module).failed == 0


def test_compile_pattern_returns_a_searchable_pattern() -> None:
    assert compile_pattern(r"^layer\d").search("layer1.conv") is not None


def test_compile_pattern_refuses_empty() -> None:
    with pytest.raises(ValueError, match="must not be empty"):
        compile_pattern("")


def test_compile_pattern_refuses_too_long() -> None:
    with pytest.raises(ValueError, match=f"at most {MAX_PATTERN_CHARS} characters"):
        compile_pattern("a" * (MAX_PATTERN_CHARS + 1))


def test_compile_pattern_refuses_what_does_not_compile() -> None:
    with pytest.raises(ValueError, match=r"pattern '\(' does not compile: missing \)"):
        compile_pattern("(")


def test_compile_pattern_refuses_backreferences() -> None:
    with pytest.raises(ValueError, match="does not compile"):
        compile_pattern(r"(a)\1")


def test_check_replacement_accepts_known_groups() -> None:
    check_replacement(r"^(?P<stage>\w+)\.(\d)", r"\g<stage>_\2")


def test_check_replacement_refuses_unknown_group() -> None:
    with pytest.raises(ValueError, match=r"refers to group '\\\\2', which pattern"):
        check_replacement("a(b)", r"\2")


def test_check_replacement_refuses_unknown_group_name() -> None:
    with pytest.raises(ValueError, match="refers to group"):
        check_replacement("a(b)", r"\g<nope>")


def test_check_replacement_refuses_other_escapes() -> None:
    with pytest.raises(ValueError, match="backslash escape other than"):
        check_replacement("a", r"x\n")


def test_check_replacement_refuses_too_long() -> None:
    with pytest.raises(ValueError, match="a replacement must be at most"):
        check_replacement("a", "b" * (MAX_PATTERN_CHARS + 1))


@given(
    glob=st.text(alphabet="ab[]!*?-.\\", max_size=12),
    name=st.text(alphabet="ab[]!-.\\", max_size=10),
)
def test_compile_glob_matches_like_fnmatchcase(glob: str, name: str) -> None:
    import fnmatch

    from app.patterns import compile_glob

    assert (compile_glob(glob).fullmatch(name) is not None) == fnmatch.fnmatchcase(name, glob)


def test_compile_glob_refuses_long_globs_and_caches_few() -> None:
    from app.patterns import MAX_GLOB_CHARS, compile_glob

    with pytest.raises(ValueError, match=f"at most {MAX_GLOB_CHARS} characters"):
        compile_glob("*a" * MAX_GLOB_CHARS)
    assert compile_glob.cache_info().maxsize == 128
    many_stars = compile_glob("*a" * (MAX_GLOB_CHARS // 2))  # linear, however many stars
    assert many_stars.fullmatch("a" * 5000) is not None
