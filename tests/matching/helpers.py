"""Tiny index builders for the matching unit tests."""

from __future__ import annotations

from app.tensors import TensorIndex, TensorInfo, TensorKind

P = TensorKind.PARAMETER
B = TensorKind.BUFFER


def model_of(
    *specs: tuple[str, tuple[int, ...]] | tuple[str, tuple[int, ...], TensorKind],
) -> TensorIndex:
    """A model index: (key, shape[, kind]) with kind parameter by default, float32."""
    return TensorIndex.from_infos(
        [TensorInfo(s[0], s[1], "float32", s[2] if len(s) > 2 else P) for s in specs]  # type: ignore[misc]
    )


def ckpt_of(*specs: tuple[str, tuple[int, ...]], dtype: str = "float32") -> TensorIndex:
    """A checkpoint index: (key, shape), kind unknown."""
    return TensorIndex.from_infos([TensorInfo(key, shape, dtype) for key, shape in specs])
