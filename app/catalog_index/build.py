"""Describe catalogue architectures on meta and reduce each to its shape signature.

This is the expensive part (about 4 CPU-minutes for the whole catalogue), so it runs in
chunks of names, each a worker call of its own, and never in the web process.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from typing import Any

from app.matching.signature import ArchitectureSignature, signature_of
from app.names import QualifiedName

log = logging.getLogger(__name__)

INDEXED_SOURCES = ("torchvision", "timm", "transformers")
"""Plugins are left out: they belong to one deployment, and the index is shared by all."""

ANCHOR_KWARGS: dict[str, dict[str, str]] = {
    "timm": {"head": "num_classes", "stem": "in_chans", "position": "img_size"},
    "torchvision": {"head": "num_classes", "position": "image_size"},
}
"""The constructor argument each anchor states, per source (transformers: from its config)."""

_SKIPPED_CONFIG_SUFFIXES = ("_id", "_ids", "_idx", "_index")


def catalogue_names() -> list[str]:
    """Every qualified name of the indexed sources, sorted."""
    from app.architectures import list_architectures

    return sorted(str(q) for s in INDEXED_SOURCES for q in list_architectures(source=s))


def build_signatures(names: Sequence[str]) -> tuple[list[ArchitectureSignature], list[str]]:
    """The signature of each architecture built with its default arguments.

    Returns:
        The signatures, and the names that could not be built (logged, left out).
    """
    signatures: list[ArchitectureSignature] = []
    failed: list[str] = []
    for name in names:
        try:
            signatures.append(describe_signature(name))
        except Exception as exc:  # one odd architecture must not stop the catalogue
            log.info("catalogue index: %s left out (%s: %s)", name, type(exc).__name__, exc)
            failed.append(name)
    return signatures, failed


def describe_signature(name: str) -> ArchitectureSignature:
    """Build ``name`` on meta with its default arguments and reduce it to its signature."""
    from app.architectures import describe, resolve

    qualified = resolve(name)
    arch = describe(str(qualified), {})
    kwargs = dict(ANCHOR_KWARGS.get(qualified.source, {}))
    config: dict[str, int] = {}
    num_classes: int | None = None
    if qualified.source == "transformers":
        config = _config_ints(qualified.name)
        kwargs.update(
            {r: k for r, k in (("stem", "num_channels"), ("position", "image_size")) if k in config}
        )
    elif qualified.source == "timm":
        num_classes = _timm_num_classes(qualified.name)
    return signature_of(
        arch, kwargs=kwargs, num_classes=num_classes, config=config, prior=_prior(qualified)
    )


def _config_ints(model_type: str) -> dict[str, int]:
    """The integer fields of a transformers model type's default config (no ids)."""
    from transformers import CONFIG_MAPPING

    values: dict[str, Any] = CONFIG_MAPPING[model_type]().to_dict()
    return {
        k: v
        for k, v in values.items()
        if type(v) is int and not k.endswith(_SKIPPED_CONFIG_SUFFIXES)
    }


def _timm_num_classes(name: str) -> int | None:
    import timm.models

    cfg = timm.models.get_pretrained_cfg(name)
    found = getattr(cfg, "num_classes", None)
    return found if isinstance(found, int) else None


def _prior(name: QualifiedName) -> int:
    """Pretrained weights the library publishes for the architecture."""
    if name.source == "timm":
        return _timm_tags().get(name.name, 0)
    if name.source == "torchvision":
        import torchvision

        try:
            return len(list(torchvision.models.get_model_weights(name.name)))
        except (ValueError, KeyError):
            return 0
    return 0


@functools.cache
def _timm_tags() -> dict[str, int]:
    import timm

    counts: dict[str, int] = {}
    for tagged in timm.list_pretrained():
        arch = tagged.partition(".")[0]
        counts[arch] = counts.get(arch, 0) + 1
    return counts
