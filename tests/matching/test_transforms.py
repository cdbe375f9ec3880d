"""Tests of app.matching.transforms."""

from __future__ import annotations

import doctest

import pytest

import app.matching.transforms as transforms_module
from app.errors import InvalidOptionsError
from app.matching.transforms import (
    Transform,
    add,
    apply_transforms,
    option_transforms,
    rename,
    strip,
    transform_key,
)
from app.schemas import TransformKind


def test_transform_key_docstring_example_runs() -> None:
    assert doctest.testmod(transforms_module).failed == 0


def test_transform_key_strip_leaves_other_keys_alone() -> None:
    assert transform_key("fc.weight", strip("module.")) == "fc.weight"


def test_transform_key_rename_uses_groups() -> None:
    assert transform_key("stage2.0.w", rename(r"^stage(\d)", r"layer\1")) == "layer2.0.w"


def test_transform_key_refuses_match_by_suffix() -> None:
    with pytest.raises(ValueError, match="does not apply match_by_suffix"):
        transform_key("a.b", Transform(TransformKind.MATCH_BY_SUFFIX))


def test_rename_invalid_pattern_is_invalid_options() -> None:
    with pytest.raises(InvalidOptionsError, match=r"Invalid rename rule: pattern '\[' does not"):
        rename("[", "")


def test_apply_transforms_counts_changed_keys_in_order() -> None:
    names, steps = apply_transforms(
        {"module.a.w": "module.a.w", "b.w": "b.w"}, [strip("module."), add("net.")]
    )
    assert names == {"module.a.w": "net.a.w", "b.w": "net.b.w"}
    assert [(s.transform.describe(), s.keys_changed) for s in steps] == [
        ("strip 'module.'", 1),
        ("add 'net.'", 2),
    ]


def test_apply_transforms_collision_is_a_clear_error() -> None:
    with pytest.raises(
        InvalidOptionsError,
        match=r"strip 'module\.' maps two checkpoint keys onto 'fc\.w': 'module\.fc\.w' and "
        r"'fc\.w'",
    ):
        apply_transforms({"module.fc.w": "module.fc.w", "fc.w": "fc.w"}, [strip("module.")])


def test_apply_transforms_rename_collision_names_the_rule() -> None:
    with pytest.raises(InvalidOptionsError, match=r"rename '\^\(a\|b\)' -> 'c' maps two"):
        apply_transforms({"a": "a", "b": "b"}, [rename("^(a|b)", "c")])


def test_option_transforms_keep_the_documented_order() -> None:
    transforms = option_transforms(strip_prefix="m.", add_prefix="n.", rules=[("x", "y")])
    assert [t.kind for t in transforms] == [
        TransformKind.STRIP_PREFIX,
        TransformKind.ADD_PREFIX,
        TransformKind.RENAME,
    ]
    assert all(t.origin == "option" for t in transforms)


def test_apply_transforms_bounds_the_length_renames_produce() -> None:
    """64 rules doubling every key would need 2**64 characters; the first key over stops it."""
    from app.matching.transforms import MAX_RENAMED_KEY_CHARS

    doubling = [rename(r"^.*$", r"\g<0>\g<0>")] * 64
    with pytest.raises(InvalidOptionsError, match=f"over {MAX_RENAMED_KEY_CHARS}"):
        apply_transforms({"layer1.0.conv1.weight": "layer1.0.conv1.weight"}, doubling)
    widening = [rename(r"(?s).", r"\g<0>" * 100)]
    with pytest.raises(InvalidOptionsError, match="characters long"):
        apply_transforms({"k" * 1000: "k" * 1000}, widening)
    names, _steps = apply_transforms({"fc.w": "fc.w"}, doubling[:8])  # 4 * 256 = 1024: fine
    assert len(names["fc.w"]) == 1024
