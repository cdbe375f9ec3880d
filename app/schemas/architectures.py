"""Architecture listings and descriptions."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from app.enums import Verdict
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


class SuggestedOptions(Wire):
    architecture: str = Field(description="The architecture to name in the check.")
    options: dict[str, Any] = Field(description="Ready to paste into the check's options.")
    loaded_parameter_fraction: float
    verdict: Verdict


class ArchitectureFit(Wire):
    """How one catalogue architecture fits a checkpoint."""

    name: str = Field(description="Qualified name, source:name.")
    source: str
    kwargs: dict[str, Any] = Field(
        description="Constructor arguments to build it with: those inferred from the "
        "checkpoint's shapes ({} when the defaults fit)."
    )
    inferred_kwargs: list[str] = Field(description="The names of the inferred arguments.")
    loaded_parameter_fraction: float = Field(
        description="The architecture's parameter elements that load from the checkpoint."
    )
    checkpoint_fraction: float = Field(
        description="The checkpoint's elements that load into the architecture."
    )
    verdict: Verdict | None = Field(
        description="The verdict a check would give; null for an estimate."
    )
    estimated: bool = Field(
        description="True when the fractions are a shape-signature estimate: only the best "
        "few of a ranking are matched exactly."
    )
    suggested_options: list[SuggestedOptions] = Field(
        description="The check to submit for this architecture (empty for an estimate)."
    )


class ArchitectureFitList(Wire):
    check_id: str = Field(description="The check whose checkpoint was ranked.")
    items: list[ArchitectureFit] = Field(description="Best first.")
    total: int
    note: str | None = Field(
        default=None, description="Set when no architecture loads over half its parameters."
    )
