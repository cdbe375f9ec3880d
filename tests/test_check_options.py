"""Tests of the matching options of app.schemas.CheckOptions (validated at submission)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from app.patterns import MAX_PATTERNS
from app.schemas import CheckOptions, Report


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
