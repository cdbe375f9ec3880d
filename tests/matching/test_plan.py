"""Tests of app.matching.plan."""

from __future__ import annotations

import doctest

import app.matching.plan as plan_module
from app.matching.plan import plan_training
from tests.matching.helpers import B, model_of

MODEL = model_of(
    ("conv.weight", (4, 3, 3, 3)),
    ("bn.weight", (4,)),
    ("bn.bias", (4,)),
    ("bn.running_mean", (4,), B),
    ("fc.weight", (10, 4)),
    ("fc.bias", (10,)),
)
LOADED = {"conv.weight", "bn.weight", "bn.bias", "bn.running_mean"}


def test_plan_training_docstring_example_runs() -> None:
    assert doctest.testmod(plan_module).failed == 0


def test_plan_training_default_trains_what_did_not_load() -> None:
    plan = plan_training(MODEL, LOADED)
    assert plan.trainable == ("fc.weight", "fc.bias")
    assert plan.frozen == ("conv.weight", "bn.weight", "bn.bias")
    assert (plan.trainable_numel, plan.frozen_numel) == (50, 116)
    assert plan.notes[0].startswith("Default plan (no freeze option)")
    assert any("BatchNorm" in n and "'bn'" in n for n in plan.notes)
    assert any(n.startswith("Weight decay on frozen parameters") for n in plan.notes)


def test_plan_training_all_with_trainable_patterns() -> None:
    plan = plan_training(MODEL, LOADED, mode="all", trainable_patterns=[r"^bn\."], explicit=True)
    assert plan.trainable == ("bn.weight", "bn.bias")
    assert [(g.name, g.weight_decay) for g in plan.groups] == [("loaded_no_decay", False)]
    assert "Freeze mode 'all' as asked." in plan.notes


def test_plan_training_none_trains_everything_in_four_groups() -> None:
    plan = plan_training(MODEL, LOADED, mode="none", explicit=True)
    assert plan.frozen == ()
    assert [g.name for g in plan.groups] == ["new", "new_no_decay", "loaded", "loaded_no_decay"]
    assert not any("Weight decay" in n for n in plan.notes)


def test_plan_training_nothing_trainable_is_noted() -> None:
    plan = plan_training(MODEL, LOADED, mode="all", explicit=True)
    assert plan.groups == ()
    assert "Nothing is trainable under this plan: the model is used as it loads." in plan.notes
