"""Stacks of repeated blocks with another depth on each side (resnet50 against resnet101).

A block the checkpoint's stack lacks (``layer3.6``) looks like a new module, but its siblings
load and share its shapes: the two architectures differ in depth, which no training of "new"
blocks repairs, since every later layer was trained on the shallower stack. The same holds for
blocks only the checkpoint has.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

from app.matching.reasons import IGNORABLE_NAMES, ancestors
from app.tensors import TensorIndex

Signature = tuple[tuple[str, tuple[int, ...]], ...]
"""A block's keys (relative to the block) and shapes, sorted."""


@dataclass(frozen=True, slots=True)
class DepthChange:
    """A stack of repeated blocks with another number of blocks on each side."""

    stack: str
    model_blocks: int
    checkpoint_blocks: int
    model_only: tuple[str, ...]
    checkpoint_only: tuple[str, ...]

    def sentence(self) -> str:
        """What the difference means, for ``summary.message`` and the keys' details.

        Example:
            >>> DepthChange("layer3", 23, 6, ("layer3.6", "layer3.7"), ()).sentence()[:76]
            'layer3 has 23 blocks in the model and 6 in the checkpoint: the depth differs'
        """
        extra = self.model_only or self.checkpoint_only
        side = "model's" if self.model_only else "checkpoint's"
        return (
            f"{self.stack} has {self.model_blocks} blocks in the model and "
            f"{self.checkpoint_blocks} in the checkpoint: the depth differs, so the {side} "
            f"{span(extra)} {'is' if len(extra) == 1 else 'are'} no new module to train but "
            "another architecture (use the checkpoint's depth, or expect a partial load)."
        )


def kept(key: str) -> bool:
    """Whether a key counts in a module's shapes (buffers without learned state do not)."""
    return key.rsplit(".", 1)[-1] not in IGNORABLE_NAMES


def span(blocks: Sequence[str]) -> str:
    """``layer3.{6..22}`` for consecutive blocks of one stack, else the names.

    Example:
        >>> span(["layer3.6", "layer3.7", "layer3.8"]), span(["a.1", "b.1"])
        ('layer3.{6..8}', 'a.1, b.1')
    """
    stack = {b.rpartition(".")[0] for b in blocks}
    numbers = [int(b.rpartition(".")[2]) for b in blocks]
    if len(blocks) > 1 and len(stack) == 1 and numbers == list(range(numbers[0], numbers[-1] + 1)):
        return f"{stack.pop()}.{{{numbers[0]}..{numbers[-1]}}}"
    return ", ".join(blocks)


def _blocks(index: TensorIndex) -> dict[str, Signature]:
    """Numbered modules (``layer3.6``, not at the top level) -> their keys and shapes."""
    found: dict[str, list[tuple[str, tuple[int, ...]]]] = defaultdict(list)
    for info in index:
        if not kept(info.key):
            continue
        for module in ancestors(info.key):
            parent, _, name = module.rpartition(".")
            if parent and name.isdigit():
                found[module].append((info.key[len(module) + 1 :], info.shape))
    return {m: tuple(sorted(v)) for m, v in found.items()}


def find_depth_changes(
    model: TensorIndex, checkpoint: TensorIndex, *, present: Collection[str]
) -> tuple[DepthChange, ...]:
    """Blocks one side lacks while a sibling of the same shapes loads, per stack.

    Args:
        model: The model index.
        checkpoint: The aligned checkpoint index.
        present: Model modules holding a key found on both sides.

    Returns:
        One change per stack, in model order (then checkpoint order).
    """
    model_blocks, ckpt_blocks = _blocks(model), _blocks(checkpoint)
    loaded = {
        (block.rpartition(".")[0], signature)
        for block, signature in model_blocks.items()
        if block in present
    }
    model_only: dict[str, list[str]] = defaultdict(list)
    ckpt_only: dict[str, list[str]] = defaultdict(list)
    for ours, theirs, out in (
        (model_blocks, ckpt_blocks, model_only),
        (ckpt_blocks, model_blocks, ckpt_only),
    ):
        for block, signature in ours.items():
            stack = block.rpartition(".")[0]
            if block not in theirs and (stack, signature) in loaded:
                out[stack].append(block)
    return tuple(
        DepthChange(
            stack=stack,
            model_blocks=_count_children(model_blocks, stack),
            checkpoint_blocks=_count_children(ckpt_blocks, stack),
            model_only=tuple(model_only[stack]),
            checkpoint_only=tuple(ckpt_only[stack]),
        )
        for stack in dict.fromkeys([*model_only, *ckpt_only])
    )


def _count_children(blocks: Mapping[str, Signature], stack: str) -> int:
    return sum(1 for b in blocks if b.rpartition(".")[0] == stack)
