"""Adapted tensors: a model key's value computed from checkpoint tensors by the library's helper.

``app.matching.adapters`` decides, from shapes, which keys an adapter of ``options.adapt``
loads and with which sizes; here the tensors are converted as they are streamed. Where timm
has the helper its own loader uses (``adapt_input_conv``, ``resample_abs_pos_embed``,
``resize_rel_pos_bias_table``), that very function is called, so the merged file equals what
timm gives on the same tensor; the rest (transpose, q/k/v blocks, text tables) are exact
rearrangements that a forward test proves.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING

from app.errors import UnmergeableTensorError
from app.matching.adapters import Adaptation
from app.merge.dequantize import OPERATIONS as DEQUANTIZE

if TYPE_CHECKING:
    import torch

Reader = Callable[[str], "torch.Tensor"]


def adapt_tensor(adaptation: Adaptation, read: Reader) -> torch.Tensor:
    """The model key's value, computed from the checkpoint tensors it names.

    Args:
        adaptation: What to compute (``Analysis.adaptations``).
        read: Checkpoint key (as stored) -> its tensor.

    Returns:
        A tensor of the model's shape, in the checkpoint's dtype (the caller casts).

    Raises:
        UnmergeableTensorError: The result does not have the model's shape (the file's
            tensor is not what its header said).

    Example:
        >>> adapt_tensor(transpose_of_c_attn, source.read).shape  # doctest: +SKIP
        torch.Size([2304, 768])
    """
    convert = _OPERATIONS.get(adaptation.operation)
    if adaptation.adapter == "dequantize":
        convert = DEQUANTIZE.get(adaptation.operation)
    if convert is None:
        raise ValueError(f"unknown adapter operation {adaptation.operation!r}")
    out = convert(adaptation, read)
    if tuple(out.shape) != adaptation.shape:
        raise UnmergeableTensorError(
            f"The {adaptation.adapter} adapter made {list(out.shape)} for {adaptation.key!r}, "
            f"which the model holds as {list(adaptation.shape)}."
        )
    return out.contiguous()


def _transpose(a: Adaptation, read: Reader) -> torch.Tensor:
    return read(a.checkpoint_keys[0]).t()


def _input_channels(a: Adaptation, read: Reader) -> torch.Tensor:
    from timm.models import adapt_input_conv

    # timm's own function: its .float() can return the very tensor it scales in place.
    return adapt_input_conv(a.shape[1], read(a.checkpoint_keys[0]).clone())


def _image(a: Adaptation, read: Reader) -> torch.Tensor:
    from timm.layers.pos_embed import resample_abs_pos_embed

    table = read(a.checkpoint_keys[0])
    out: torch.Tensor = resample_abs_pos_embed(
        table.reshape(1, table.shape[-2], table.shape[-1]),  # CLIP keeps (tokens, dim)
        new_size=list(a.new_grid),
        old_size=list(a.old_grid),
        num_prefix_tokens=a.prefix_tokens,
    )
    return out.reshape(a.shape)


def _relative(a: Adaptation, read: Reader) -> torch.Tensor:
    from timm.layers.pos_embed_rel import resize_rel_pos_bias_table

    with warnings.catch_warnings():
        # torch's notes on timm's own grid interpolator (a strided bucketize input, an
        # indexing style): about speed and a future version, not about these values.
        warnings.filterwarnings("ignore", category=UserWarning, module=r"timm\.layers\.interpolate")
        out: torch.Tensor = resize_rel_pos_bias_table(
            read(a.checkpoint_keys[0]), new_window_size=a.new_grid, new_bias_shape=a.shape
        )
    return out


def _text(a: Adaptation, read: Reader) -> torch.Tensor:
    import torch

    table = read(a.checkpoint_keys[0])
    # Truncate to the first rows, or repeat the rows in order (Longformer's extension).
    return table[torch.arange(a.shape[0]) % table.shape[0]]


def _fuse(a: Adaptation, read: Reader) -> torch.Tensor:
    import torch

    return torch.cat([read(key) for key in a.checkpoint_keys], dim=a.dim)


def _split(a: Adaptation, read: Reader) -> torch.Tensor:
    return read(a.checkpoint_keys[0]).narrow(a.dim, a.start, a.shape[a.dim])


def _library_fusion(a: Adaptation, read: Reader) -> torch.Tensor:
    from app.merge.fusion import fuse_experts

    return fuse_experts(a, read)


def _library_filter(a: Adaptation, read: Reader) -> torch.Tensor:
    from app.merge.timm_filter import filtered_tensor

    return filtered_tensor(a, read)


_OPERATIONS: dict[str, Callable[[Adaptation, Reader], torch.Tensor]] = {
    "transpose": _transpose,
    "input_channels": _input_channels,
    "image": _image,
    "relative": _relative,
    "text": _text,
    "fuse": _fuse,
    "split": _split,
    "library_fusion": _library_fusion,
    "library_filter": _library_filter,
}
