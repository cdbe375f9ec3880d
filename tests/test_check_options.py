"""Tests of the matching options of app.schemas.CheckOptions (validated at submission)."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from app.api.submissions import parse_options
from app.errors import InvalidOptionsError
from app.patterns import MAX_PATTERNS
from app.schemas import CheckOptions, Report
from app.schemas.options import MAX_OPTION_DEPTH


def test_check_options_defaults_align_auto_without_freeze() -> None:
    options = CheckOptions()
    assert (options.align, options.rename, options.freeze) == ("auto", [], None)
    assert options.explicit_key_options is False


def test_check_options_explicit_key_options() -> None:
    assert CheckOptions(strip_prefix="module.").explicit_key_options is True


def test_check_options_rename_pattern_must_compile() -> None:
    with pytest.raises(ValidationError, match=r"pattern '\(' does not compile"):
        CheckOptions.model_validate({"rename": [{"pattern": "(", "replacement": ""}]})


def test_check_options_rename_replacement_must_know_its_groups() -> None:
    with pytest.raises(ValidationError, match="which pattern 'a' does not have"):
        CheckOptions.model_validate({"rename": [{"pattern": "a", "replacement": r"\1"}]})


def test_check_options_rename_rule_count_is_capped() -> None:
    rules = [{"pattern": "a", "replacement": "b"}] * (MAX_PATTERNS + 1)
    with pytest.raises(ValidationError, match=f"at most {MAX_PATTERNS} items"):
        CheckOptions.model_validate({"rename": rules})


def test_check_options_trainable_patterns_must_compile() -> None:
    with pytest.raises(ValidationError, match=r"pattern '\[' does not compile"):
        CheckOptions.model_validate({"freeze": {"trainable": ["["]}})


def test_check_options_freeze_mode_is_one_of_three() -> None:
    with pytest.raises(ValidationError, match="'loaded', 'all' or 'none'"):
        CheckOptions.model_validate({"freeze": {"mode": "some"}})


def test_report_schema_describes_the_new_blocks() -> None:
    schema = Report.model_json_schema()
    for name in ("applied_transforms", "alternatives", "training_plan", "modules"):
        assert name in schema["properties"]
    assert "compatible_with_changes" in schema["$defs"]["Verdict"]["enum"]
    assert "children" in schema["$defs"]["ModuleNode"]["properties"]


def _nested(depth: int) -> str:
    return '{"architecture_kwargs": {"x": ' + "[" * depth + "]" * depth + "}}"


@pytest.mark.parametrize(
    ("raw", "match"),
    [
        (_nested(300), "nests deeper than"),
        ('{"architecture_kwargs": {"x": ' + '{"a": ' * 300 + "1" + "}" * 302, "nests deeper than"),
        ('{"architecture_kwargs": {"num_classes": ' + "9" * 5000 + "}}", "too large"),
        ('{"architecture_kwargs": {"num_classes": -' + "9" * 4000 + "}}", "too large"),
    ],
    ids=["lists-300", "dicts-300", "int-5000-digits", "int-4000-digits"],
)
def test_check_options_deep_or_huge_values_are_invalid_options(raw: str, match: str) -> None:
    with pytest.raises(InvalidOptionsError, match=match):
        parse_options(raw)


def test_check_options_architecture_kwargs_at_the_bounds_are_accepted() -> None:
    depth = MAX_OPTION_DEPTH - 1  # architecture_kwargs itself is the first level
    kwargs = json.loads(_nested(depth))["architecture_kwargs"]
    kwargs["seed"] = 2**64 - 1
    options = CheckOptions.model_validate({"architecture_kwargs": kwargs})
    assert json.loads(options.model_dump_json())["architecture_kwargs"] == kwargs
    with pytest.raises(ValidationError, match="nests deeper than"):
        CheckOptions.model_validate({"architecture_kwargs": {"x": [kwargs["x"]]}})


def test_check_options_adapt_is_one_order_for_one_meaning() -> None:
    options = CheckOptions.model_validate({"adapt": ["qkv", "transpose", "qkv"]})
    assert options.adapt == ["transpose", "qkv"]  # part of the result-reuse identity
    assert CheckOptions().adapt == []


def test_check_options_adapt_refuses_an_unknown_adapter() -> None:
    with pytest.raises(ValidationError, match="input_channels"):
        CheckOptions.model_validate({"adapt": ["interpolate"]})
