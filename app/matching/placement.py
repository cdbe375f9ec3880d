"""Where the loaded parameters sit: in the model's backbone or in its head.

A share of loaded parameters says little on its own: a classifier is a large tensor, so a file
whose only match is the classifier can load a quarter of a model and still leave every feature
random. Verdicts therefore weigh the backbone (everything outside the head) on its own.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from app.enums import Reason
from app.matching.compare import MatchResult
from app.matching.reasons import Explanations
from app.tensors import TensorIndex, TensorKind


def resolve_heads(model: TensorIndex, declared: Sequence[str] | None) -> tuple[str, ...]:
    """The head modules: what the architecture declared, else its last top-level module.

    The fallback needs at least two top-level modules with parameters: a model that is one
    module has no separate head.

    Example:
        >>> from app.tensors import TensorInfo
        >>> p = TensorKind.PARAMETER
        >>> model = TensorIndex.from_infos(
        ...     [TensorInfo("body.w", (4,), "float32", p), TensorInfo("out.w", (4,), "float32", p)]
        ... )
        >>> resolve_heads(model, None), resolve_heads(model, ("body",)), resolve_heads(model, ())
        (('out',), ('body',), ())
    """
    if declared is not None:
        return tuple(declared)
    tops = list(
        dict.fromkeys(
            i.key.split(".", 1)[0] for i in model if i.kind is TensorKind.PARAMETER and "." in i.key
        )
    )
    return (tops[-1],) if len(tops) > 1 else ()


def within(key: str, modules: Iterable[str]) -> bool:
    """Whether ``key`` is one of ``modules`` or lies under one."""
    return any(key == m or key.startswith(m + ".") for m in modules)


@dataclass(frozen=True, slots=True)
class Placement:
    """Parameter elements of the backbone and of the head, and what of them loads.

    Attributes:
        heads: The head modules.
        backbone_numel: Parameter elements outside the head.
        backbone_loaded: Of those, the elements that load.
        backbone_new: Of those, the elements of modules reported ``new_module``.
        head_numel: Parameter elements of the head.
        head_loaded: Of those, the elements that load.
        loaded_modules: The modules (a tensor's parent) of the loaded parameters, model order.
        backbone_modules: How many modules hold backbone parameters.
    """

    heads: tuple[str, ...]
    backbone_numel: int
    backbone_loaded: int
    backbone_new: int
    head_numel: int
    head_loaded: int
    loaded_modules: tuple[str, ...]
    backbone_modules: int

    @property
    def backbone_fraction(self) -> float:
        """Loaded over all backbone elements (1.0 for a model without backbone parameters)."""
        return self.backbone_loaded / self.backbone_numel if self.backbone_numel else 1.0


def place(
    result: MatchResult, explanations: Explanations, *, model: TensorIndex, heads: Sequence[str]
) -> Placement:
    """Count loaded and new parameter elements in the backbone and in the head.

    Example:
        >>> from app.matching.compare import compare
        >>> from app.matching.reasons import explain
        >>> from app.tensors import TensorInfo
        >>> p = TensorKind.PARAMETER
        >>> model = TensorIndex.from_infos(
        ...     [TensorInfo("body.w", (90,), "float32", p), TensorInfo("fc.w", (10,), "float32", p)]
        ... )
        >>> ckpt = TensorIndex.from_infos([TensorInfo("fc.w", (10,), "float32")])
        >>> result = compare(ckpt, model)
        >>> why = explain(result, checkpoint=ckpt, model=model, sources={"fc.w": "fc.w"})
        >>> found = place(result, why, model=model, heads=("fc",))
        >>> found.backbone_fraction, found.head_loaded, found.backbone_new
        (0.0, 10, 90)
    """
    matched = set(result.matched)
    backbone = backbone_loaded = backbone_new = head = head_loaded = 0
    loaded_modules: dict[str, None] = {}
    backbone_modules: set[str] = set()
    for info in model:
        if info.kind is not TensorKind.PARAMETER:
            continue
        module = info.key.rsplit(".", 1)[0] if "." in info.key else ""
        loaded = info.numel if info.key in matched else 0
        if loaded:
            loaded_modules[module] = None
        if within(info.key, heads):
            head += info.numel
            head_loaded += loaded
            continue
        backbone += info.numel
        backbone_loaded += loaded
        backbone_modules.add(module)
        why = explanations.missing.get(info.key)
        if why is not None and why.reason is Reason.NEW_MODULE:
            backbone_new += info.numel
    return Placement(
        heads=tuple(heads),
        backbone_numel=backbone,
        backbone_loaded=backbone_loaded,
        backbone_new=backbone_new,
        head_numel=head,
        head_loaded=head_loaded,
        loaded_modules=tuple(loaded_modules),
        backbone_modules=len(backbone_modules),
    )


def describe_placement(placement: Placement) -> tuple[str, ...]:
    """The note that lets a reader check the verdict's backbone rules by hand.

    Example:
        >>> describe_placement(Placement(("fc",), 900, 900, 0, 100, 0, ("body",), 1))
        ('Head and backbone: the head is fc (100 parameter elements, 0.0% loaded); the backbone, everything else, has 900 (100.0% loaded, 0.0% in new modules).',)
    """  # noqa: E501
    if not placement.heads or not placement.backbone_numel:
        return ()
    head_share = placement.head_loaded / placement.head_numel if placement.head_numel else 0.0
    new_share = placement.backbone_new / placement.backbone_numel
    return (
        f"Head and backbone: the head is {', '.join(placement.heads)} ({placement.head_numel} "
        f"parameter elements, {head_share:.1%} loaded); the backbone, everything else, has "
        f"{placement.backbone_numel} ({placement.backbone_fraction:.1%} loaded, {new_share:.1%} "
        "in new modules).",
    )
