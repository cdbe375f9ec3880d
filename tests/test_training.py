"""Tests of ckpt_compat_client.training: applying a report's training plan to a real model."""

from __future__ import annotations

import doctest
from typing import Any

import pytest
import torch

import ckpt_compat_client.training as training_module
from ckpt_compat_client.training import apply_training_plan, freeze_norm_statistics


class Net(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3)
        self.bn = torch.nn.BatchNorm2d(4)
        self.emb = torch.nn.Embedding(10, 4)
        self.head = torch.nn.Linear(4, 10)
        self.head.weight = self.emb.weight  # tied


def _plan(trainable: list[str], frozen: list[str]) -> dict[str, Any]:
    return {
        "training_plan": {
            "trainable": trainable,
            "frozen": frozen,
            "optimizer_param_groups": [
                {
                    "name": "new",
                    "params": [t for t in trainable if t.endswith("weight")],
                    "weight_decay": True,
                },
                {
                    "name": "new_no_decay",
                    "params": [t for t in trainable if t.endswith("bias")],
                    "weight_decay": False,
                },
            ],
        }
    }


ALL = ["conv.weight", "conv.bias", "bn.weight", "bn.bias", "emb.weight", "head.weight", "head.bias"]


def test_apply_training_plan_docstring_example_runs() -> None:
    assert doctest.testmod(training_module).failed == 0


def test_apply_training_plan_sets_requires_grad_and_groups() -> None:
    model = Net()
    trainable = ["head.weight", "head.bias", "emb.weight"]
    groups = apply_training_plan(model, _plan(trainable, [k for k in ALL if k not in trainable]))
    assert not model.conv.weight.requires_grad and not model.bn.bias.requires_grad
    assert model.head.bias.requires_grad and model.emb.weight.requires_grad
    assert [(g["name"], len(g["params"])) for g in groups] == [("new", 1), ("new_no_decay", 1)]
    assert "weight_decay" not in groups[0]
    torch.optim.SGD(groups, lr=0.1)  # the groups are accepted as they are


def test_apply_training_plan_tied_weight_trains_if_any_name_does() -> None:
    model = Net()
    trainable = ["head.weight", "head.bias"]
    apply_training_plan(model, _plan(trainable, [k for k in ALL if k not in trainable]))
    assert model.emb.weight.requires_grad


def test_apply_training_plan_weight_decay_per_group() -> None:
    groups = apply_training_plan(Net(), _plan(ALL, []), weight_decay=0.05)
    assert [g["weight_decay"] for g in groups] == [0.05, 0.0]


def test_apply_training_plan_refuses_unknown_names() -> None:
    with pytest.raises(
        ValueError, match=r"names 1 parameters the model lacks, e\.g\. 'fc\.weight'"
    ):
        apply_training_plan(Net(), _plan(["fc.weight"], ALL))


def test_apply_training_plan_refuses_a_plan_for_another_model() -> None:
    with pytest.raises(ValueError, match=r"the plan does not name, e\.g\. 'bn\.bias'"):
        apply_training_plan(Net(), _plan(["conv.weight"], []))


def test_apply_training_plan_refuses_a_malformed_plan() -> None:
    with pytest.raises(ValueError, match="Expected a report or its training_plan"):
        apply_training_plan(Net(), {"summary": {}})


def test_freeze_norm_statistics_puts_frozen_batchnorm_in_eval() -> None:
    model = Net()
    report = _plan(["head.weight", "head.bias"], [k for k in ALL if not k.startswith("head")])
    model.train()
    assert freeze_norm_statistics(model, report) == ["bn"]
    assert not model.bn.training and model.conv.training
