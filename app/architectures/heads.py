"""Find the modules an architecture itself calls its head, from the built model.

Verdicts weigh where loaded parameters sit (backbone or head): a checkpoint whose only loaded
tensors are a classifier says nothing about the features behind it. Each source knows its own
convention and calls the helper that reads it; the sources' ``head_modules(model)`` return
None when the model follows none, and matching then falls back to the last top-level module.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

TORCHVISION_HEADS = frozenset(
    {
        "fc",  # resnet, regnet, shufflenet, googlenet, inception, video resnets
        "classifier",  # vgg, alexnet, densenet, mobilenet, efficientnet, convnext, segmentation
        "heads",  # vit
        "head",  # swin, mvit, retinanet, fcos, ssd
        "aux_classifier",  # segmentation
        "AuxLogits",  # inception_v3
        "aux1",  # googlenet
        "aux2",
        "rpn",  # faster/mask/keypoint rcnn
        "roi_heads",
    }
)
"""Top-level torchvision module names that are classifiers or detection/segmentation heads."""


def _has_parameters(module: torch.nn.Module) -> bool:
    return next(module.parameters(), None) is not None


def named_top_level(model: torch.nn.Module, names: Collection[str]) -> tuple[str, ...] | None:
    """The top-level children named in ``names`` that hold parameters; None when none is.

    Example:
        >>> import torch
        >>> net = torch.nn.Module()
        >>> net.body, net.fc = torch.nn.Linear(2, 2), torch.nn.Linear(2, 3)
        >>> named_top_level(net, {"fc"})
        ('fc',)
    """
    found = tuple(
        name for name, child in model.named_children() if name in names and _has_parameters(child)
    )
    return found or None


def timm_classifier(model: torch.nn.Module) -> tuple[str, ...] | None:
    """The module names ``model.get_classifier()`` returns (timm's convention), else None.

    A classifier without parameters (``num_classes=0`` gives ``Identity``) means the model has
    no head: ``()``.
    """
    get_classifier = getattr(model, "get_classifier", None)
    if not callable(get_classifier):
        return None
    found = get_classifier()
    classifiers = found if isinstance(found, tuple | list) else (found,)
    names = {id(module): name for name, module in model.named_modules() if name}
    return tuple(names[id(c)] for c in classifiers if id(c) in names and _has_parameters(c))


def outside_base_model(model: torch.nn.Module) -> tuple[str, ...] | None:
    """transformers' convention: top-level modules outside ``base_model_prefix``, else None.

    A base model (``AutoModel``: no child named by its prefix) has no head: ``()``.
    """
    prefix = getattr(model, "base_model_prefix", None)
    if not isinstance(prefix, str) or not prefix:
        return None
    if not hasattr(model, prefix):
        return ()
    return tuple(
        name for name, child in model.named_children() if name != prefix and _has_parameters(child)
    )
