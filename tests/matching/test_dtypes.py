"""Tests of app.matching.dtypes."""

from __future__ import annotations

import doctest

import pytest

import app.matching.dtypes as dtypes_module
from app.matching.dtypes import describe_cast, is_lossless


def test_is_lossless_docstring_example_runs() -> None:
    assert doctest.testmod(dtypes_module).failed == 0


@pytest.mark.parametrize(
    ("source", "target", "expected"),
    [
        ("float16", "float32", True),
        ("bfloat16", "float32", True),
        ("float32", "bfloat16", False),
        ("float16", "bfloat16", False),
        ("uint8", "int16", True),
        ("uint8", "int8", False),
        ("int8", "uint8", False),
        ("bool", "uint8", True),
        ("int64", "float64", False),
        ("float32", "int64", False),
        ("complex64", "complex128", False),
        ("int64", "int64", True),
    ],
)
def test_is_lossless_table(source: str, target: str, expected: bool) -> None:
    assert is_lossless(source, target) is expected


def test_describe_cast_says_which() -> None:
    assert describe_cast("float32", "float16") == "float32 -> float16 loses precision"
