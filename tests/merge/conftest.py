"""Fixtures for merge tests: the matching tests' index builders."""

from tests.matching.conftest import checkpoint_index, model_index

__all__ = ["checkpoint_index", "model_index"]
