"""Architecture listings and descriptions."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from app.schemas.base import Wire


class ArchitectureItem(Wire):
    name: str = Field(description="Qualified name, source:name.")
    source: str


class ArchitectureList(Wire):
    items: list[ArchitectureItem]
    total: int


class ArchitectureTensor(Wire):
    key: str
    shape: list[int]
    dtype: str
    kind: Literal["parameter", "buffer", "tied"] = Field(
        description="tied: a second name of a parameter listed earlier (counted once)."
    )


class ArchitectureDetail(Wire):
    name: str
    source: str
    kwargs: dict[str, Any]
    parameter_count: int
    tensor_count: int
    tensors: list[ArchitectureTensor]
