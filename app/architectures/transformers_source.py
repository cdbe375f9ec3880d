"""The transformers architecture source: ``transformers:<model_type>`` built from a config.

A model type (``bert``, ``llama``, ``gpt2``...) is built from its default config, updated by
the request: ``architecture_kwargs`` may hold a whole ``config.json`` as ``{"config": {...}}``,
single config fields to override (``{"num_labels": 3}``), and ``{"auto_class":
"AutoModelForCausalLM"}`` to pick the head (``AutoModel`` by default). Nothing is ever
fetched: the hub is switched off before transformers is imported, and configs come only
from the request.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from app.architectures.heads import outside_base_model
from app.architectures.safety import NO_DOWNLOAD
from app.errors import ArchitectureArgumentsError, ArchitectureNotFoundError

if TYPE_CHECKING:
    import torch

DEFAULT_AUTO_CLASS = "AutoModel"
CONFIG_KEY = "config"
AUTO_CLASS_KEY = "auto_class"
_AUTO_CLASS = re.compile(r"^AutoModel(For\w+)?$")
# Config entries that would run code from, or point at, somewhere other than the request.
_REFUSED = ("trust_remote_code", "pretrained_model_name_or_path", "cache_dir", "revision")
_DROPPED_CONFIG_FIELDS = ("auto_map", "_name_or_path", "transformers_version", "architectures")


def _offline() -> None:
    """Switch the Hugging Face hub off for this process (read when transformers is imported)."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"


def list_names() -> list[str]:
    """Every model type that ``AutoModel`` can build, sorted (``bert``, ``llama``...)."""
    _offline()
    from transformers.models.auto.modeling_auto import MODEL_MAPPING_NAMES

    return sorted(MODEL_MAPPING_NAMES)


def build(name: str, kwargs: Mapping[str, Any]) -> torch.nn.Module:
    """Build a transformers model of type ``name`` from a config, with no network access.

    Args:
        name: A model type from ``list_names()`` (``bert``).
        kwargs: ``config`` (a whole config.json), ``auto_class`` (``AutoModel``,
            ``AutoModelForCausalLM``, ...) and any config field to override.

    Returns:
        The model, on whatever default device the caller set; its dtype is the config's
        ``dtype`` (``torch_dtype``) when given, float32 otherwise.

    Raises:
        ArchitectureNotFoundError: ``name`` is not a transformers model type.
        ArchitectureArgumentsError: An argument is refused or not of the right kind.

    Example:
        >>> model = build("bert", {"config": {"num_hidden_layers": 2}})  # doctest: +SKIP
        >>> type(model).__name__  # doctest: +SKIP
        'BertModel'
    """
    _offline()
    import transformers
    from transformers import CONFIG_MAPPING

    if name not in CONFIG_MAPPING:
        raise ArchitectureNotFoundError(f"transformers has no model type {name!r}.")
    fields = config_fields(name, kwargs)
    auto_class = _auto_class(transformers, kwargs.get(AUTO_CLASS_KEY, DEFAULT_AUTO_CLASS))
    config = CONFIG_MAPPING[name].from_dict(fields)
    model: torch.nn.Module = auto_class.from_config(config, trust_remote_code=False)
    return model


def config_fields(name: str, kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """The config dict for ``name``: ``kwargs["config"]`` updated with the other fields.

    Raises:
        ArchitectureArgumentsError: A refused key, a config that is not an object, or a
            config whose ``model_type`` is not ``name``.
    """
    for key in _REFUSED:
        if key in kwargs or key in (kwargs.get(CONFIG_KEY) or {}):
            raise ArchitectureArgumentsError(
                f"Argument {key!r} is refused: {NO_DOWNLOAD}, and runs no remote code.",
                argument=key,
            )
    base = kwargs.get(CONFIG_KEY) or {}
    if not isinstance(base, Mapping):
        raise ArchitectureArgumentsError(
            "Argument 'config' must be a JSON object (the contents of config.json).",
            argument=CONFIG_KEY,
        )
    model_type = base.get("model_type", name)
    if model_type != name:
        raise ArchitectureArgumentsError(
            f"The config is for model_type {model_type!r}, not {name!r}: "
            f"name the architecture transformers:{model_type}.",
            argument=CONFIG_KEY,
        )
    fields = {k: v for k, v in base.items() if k not in _DROPPED_CONFIG_FIELDS}
    fields.update({k: v for k, v in kwargs.items() if k not in (CONFIG_KEY, AUTO_CLASS_KEY)})
    fields.pop("model_type", None)
    return fields


def _auto_class(transformers: Any, value: object) -> Any:
    if not isinstance(value, str) or not _AUTO_CLASS.match(value):
        raise ArchitectureArgumentsError(
            f"Argument auto_class={value!r} is not an Auto class; use AutoModel, "
            "AutoModelForCausalLM, AutoModelForSequenceClassification, ...",
            argument=AUTO_CLASS_KEY,
        )
    found = getattr(transformers, value, None)
    if found is None or not hasattr(found, "from_config"):
        raise ArchitectureArgumentsError(
            f"transformers has no Auto class {value!r}.", argument=AUTO_CLASS_KEY
        )
    return found


def head_modules(model: torch.nn.Module) -> tuple[str, ...] | None:
    """The modules outside ``base_model_prefix`` (``classifier``, ``lm_head``); a base model
    (``AutoModel``) has none."""
    return outside_base_model(model)
