"""A registry of buildable architectures that yields their expected tensor index."""

from app.architectures.building import build_model
from app.architectures.registry import clear_caches, describe, list_architectures, resolve
from app.names import SOURCE_PRECEDENCE, QualifiedName, parse_name

__all__ = [
    "SOURCE_PRECEDENCE",
    "QualifiedName",
    "build_model",
    "clear_caches",
    "describe",
    "list_architectures",
    "parse_name",
    "resolve",
]
