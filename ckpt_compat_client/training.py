"""Apply a report's training plan to a model: set ``requires_grad`` and build optimizer groups.

It ships with the client (``ckpt-compat-client``, no torch among its dependencies) and imports
torch only when called: the model, and so torch, is the training script's own. A script uses
the report of a check directly::

    import json, torch, torchvision
    from ckpt_compat_client.training import apply_training_plan, freeze_norm_statistics

    report = json.load(open("report.json"))          # GET /v1/checks/{id}/report
    model = torchvision.models.detection.fasterrcnn_resnet50_fpn()
    model.load_state_dict(torch.load("merged.pt"))   # GET /v1/checks/{id}/merged
    groups = apply_training_plan(model, report, weight_decay=1e-4)
    optimizer = torch.optim.AdamW(groups, lr=1e-4)
    model.train()
    freeze_norm_statistics(model, report)              # after every model.train()
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch


def _plan_of(plan_or_report: Mapping[str, Any]) -> Mapping[str, Any]:
    plan = plan_or_report.get("training_plan", plan_or_report)
    if not isinstance(plan, Mapping) or "trainable" not in plan or "frozen" not in plan:
        raise ValueError(
            "Expected a report or its training_plan (with 'trainable' and 'frozen' lists)."
        )
    return plan


def apply_training_plan(
    model: torch.nn.Module,
    plan_or_report: Mapping[str, Any],
    *,
    weight_decay: float | None = None,
) -> list[dict[str, Any]]:
    """Set ``requires_grad`` per parameter as the plan says and return the optimizer groups.

    Args:
        model: The model the report was computed for (same architecture and kwargs).
        plan_or_report: The report JSON (a dict), or its ``training_plan``.
        weight_decay: When given, each group gets ``weight_decay`` (this value, or 0.0 for
            the plan's no-decay groups: biases and normalisation weights); when None the
            optimizer's default applies to every group.

    Returns:
        Param groups for a ``torch.optim`` optimizer: ``{"name", "params"[, "weight_decay"]}``
        holding only trainable parameters, each parameter once (tied weights included).

    Raises:
        ValueError: The plan is malformed, or names parameters the model lacks, or the model
            has parameters the plan does not name (the plan is for another model).

    Example:
        >>> import torch
        >>> model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(2, 1))
        >>> plan = {"trainable": ["1.weight", "1.bias"], "frozen": ["0.weight", "0.bias"],
        ...         "optimizer_param_groups": [
        ...             {"name": "new", "params": ["1.weight"], "weight_decay": True},
        ...             {"name": "new_no_decay", "params": ["1.bias"], "weight_decay": False}]}
        >>> groups = apply_training_plan(model, plan, weight_decay=0.01)
        >>> [(g["name"], len(g["params"]), g["weight_decay"]) for g in groups]
        [('new', 1, 0.01), ('new_no_decay', 1, 0.0)]
        >>> model[0].weight.requires_grad, model[1].weight.requires_grad
        (False, True)
    """
    plan = _plan_of(plan_or_report)
    trainable, frozen = set(plan["trainable"]), set(plan["frozen"])
    named = dict(model.named_parameters(remove_duplicate=False))
    unknown = sorted((trainable | frozen) - named.keys())
    if unknown:
        raise ValueError(
            f"The plan names {len(unknown)} parameters the model lacks, e.g. {unknown[0]!r}: "
            "build the model with the architecture and kwargs of the check."
        )
    unplanned = sorted(named.keys() - trainable - frozen)
    if unplanned:
        raise ValueError(
            f"The model has {len(unplanned)} parameters the plan does not name, e.g. "
            f"{unplanned[0]!r}: the plan is for another model."
        )
    trains: dict[int, bool] = {}
    for name, param in named.items():  # a tied parameter trains if any of its names does
        trains[id(param)] = trains.get(id(param), False) or name in trainable
    for param in named.values():
        param.requires_grad_(trains[id(param)])
    seen: set[int] = set()
    groups: list[dict[str, Any]] = []
    for group in plan.get("optimizer_param_groups", []):
        params = []
        for name in group["params"]:
            param = named[name]
            if id(param) not in seen and param.requires_grad:
                seen.add(id(param))
                params.append(param)
        if not params:
            continue
        entry: dict[str, Any] = {"name": group["name"], "params": params}
        if weight_decay is not None:
            entry["weight_decay"] = weight_decay if group.get("weight_decay", True) else 0.0
        groups.append(entry)
    return groups


def freeze_norm_statistics(model: torch.nn.Module, plan_or_report: Mapping[str, Any]) -> list[str]:
    """Put BatchNorm modules whose parameters are all frozen in eval mode.

    ``model.train()`` puts every module back in train mode, where BatchNorm updates its running
    statistics even with frozen weights; call this after every ``model.train()``.

    Args:
        model: The model.
        plan_or_report: The report JSON, or its ``training_plan``.

    Returns:
        The names of the modules put in eval mode.
    """
    import torch

    frozen = set(_plan_of(plan_or_report)["frozen"])
    names: list[str] = []
    for name, module in model.named_modules():
        if not isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            continue
        params = [f"{name}.{p}" if name else p for p, _ in module.named_parameters(recurse=False)]
        if params and all(p in frozen for p in params):
            module.eval()
            names.append(name)
    return names
