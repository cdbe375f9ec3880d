"""The base of every wire model: unknown fields are refused."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Wire(BaseModel):
    """A wire model; unknown fields are a validation error (a 422 at the edge)."""

    model_config = ConfigDict(extra="forbid")
