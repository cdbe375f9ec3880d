"""Which checkpoint tensors a merge can copy or cast, decided before any byte is written.

A crafted file indexes fine (a report lists any dtype and layout) but used to fail a merge
with a 500, or worse "succeed": a sparse or meta tensor has no bytes to copy; packed and
bit dtypes (``bits8``, ``float4_e2m1fn_x2``) and quantised ones have no cast; complex32 and
the float8 ``fnuz`` variants have no safetensors code; safetensors ``F4`` stores two values
per byte, so its span is half what its shape says in torch's terms, and copied as it was it
made a file that safetensors refused to open. Each is an ``UnmergeableTensorError`` (422)
that names the key and says what would work.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from functools import cache
from typing import TYPE_CHECKING

import torch

from app.errors import UnmergeableTensorError
from app.readers.safetensors_reader import DTYPES

if TYPE_CHECKING:
    from app.readers.lazy import TensorSpan

# torch dtype -> safetensors code, only where the code stores one element per itemsize
# (F4 packs two values per byte: its shape counts values, torch's float4_e2m1fn_x2 bytes).
_CODES = {
    found: code
    for code, (name, bits) in DTYPES.items()
    if isinstance(found := getattr(torch, name, None), torch.dtype) and bits == found.itemsize * 8
}


def safetensors_code(key: str, dtype: torch.dtype) -> str:
    """The safetensors dtype code for ``dtype``.

    Raises:
        UnmergeableTensorError: safetensors has no code for it (complex32, fnuz, bits...).
    """
    code = _CODES.get(dtype)
    if code is None:
        raise UnmergeableTensorError(
            f"{_shown(key)} would be written as {_name(dtype)}, which safetensors cannot "
            'store. Ask for {"merge": {"format": "pt"}}, or dtype_policy "model" to cast it.',
            key=key,
            dtype=_name(dtype),
        )
    return code


def check_dense(tensors: Mapping[str, torch.Tensor], *, loaded_on_meta: bool = False) -> None:
    """Refuse tensors without bytes of their own to copy: sparse layouts and meta tensors.

    Args:
        tensors: Checkpoint key -> tensor.
        loaded_on_meta: The file was loaded on meta on purpose (to find spans): every tensor
            is a meta tensor then, and only layouts are checked.

    Raises:
        UnmergeableTensorError: Naming the first such key.
    """
    for key, tensor in tensors.items():
        if tensor.layout is not torch.strided:
            layout = str(tensor.layout).removeprefix("torch.")
            raise UnmergeableTensorError(
                f"{_shown(key)} is a {layout} tensor; a merge copies dense tensors only. "
                "Save it with tensor.to_dense().",
                key=key,
            )
        if tensor.is_meta and not loaded_on_meta:
            raise UnmergeableTensorError(
                f"{_shown(key)} is a meta tensor: the file records its shape but no values.",
                key=key,
            )


def check_span(key: str, span: TensorSpan) -> None:
    """Refuse a contiguous span whose byte count is not its elements times the itemsize.

    Raises:
        UnmergeableTensorError: e.g. safetensors ``F4``, two values per byte.
    """
    if span.contiguous and span.nbytes != math.prod(span.shape) * span.dtype.itemsize:
        raise UnmergeableTensorError(
            f"{_shown(key)} is stored packed ({span.nbytes} bytes for shape "
            f"{list(span.shape)} as {_name(span.dtype)}); a merge cannot copy or cast it.",
            key=key,
            dtype=_name(span.dtype),
        )


def check_cast(key: str, source: torch.dtype, target: torch.dtype) -> None:
    """Refuse a cast torch cannot do, or one that drops the imaginary part of complex values.

    Raises:
        UnmergeableTensorError: Naming the key, both dtypes, and what would work.
    """
    if source == target and _copyable(source):
        return
    if source == target or not _castable(source, target):
        what = f"cannot be cast to {_name(target)}" if source != target else "cannot be copied"
    elif source.is_complex and not target.is_complex:
        what = f"would lose its imaginary part as {_name(target)}"
    else:
        return
    raise UnmergeableTensorError(
        f"{_shown(key)} is {_name(source)} and {what}. Convert it in the checkpoint, or merge "
        'with dtype_policy "checkpoint" and {"merge": {"format": "pt"}} to keep it as it is.',
        key=key,
        dtype=_name(source),
    )


@cache
def _castable(source: torch.dtype, target: torch.dtype) -> bool:
    """Probed on one element, so a new torch's dtypes are judged by torch itself."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "ComplexHalf support is experimental"
            torch.empty(1, dtype=source).to(target)
    except (RuntimeError, NotImplementedError, TypeError):
        return False
    return True


@cache
def _copyable(dtype: torch.dtype) -> bool:
    """Whether a strided view of ``dtype`` can be cloned (int1..int7 and quantised cannot)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.empty(2, dtype=dtype).as_strided((1,), (2,)).clone()
    except (RuntimeError, NotImplementedError, TypeError):
        return False
    return True


def _name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _shown(key: str) -> str:
    return repr(key if len(key) <= 80 else key[:77] + "...")
