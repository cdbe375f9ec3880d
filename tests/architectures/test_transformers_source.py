"""Tests of the transformers source: model types built from request configs, never the hub."""

from __future__ import annotations

import os

import pytest

from app.architectures import describe, list_architectures, resolve
from app.architectures.transformers_source import config_fields
from app.errors import ArchitectureArgumentsError, ArchitectureNotFoundError

TINY_BERT = {
    "hidden_size": 32,
    "num_hidden_layers": 1,
    "num_attention_heads": 2,
    "intermediate_size": 64,
    "vocab_size": 100,
}


def test_transformers_source_lists_model_types_and_is_offline() -> None:
    names = {q.name for q in list_architectures(source="transformers")}
    assert {"bert", "llama", "gpt2"} <= names
    assert os.environ["HF_HUB_OFFLINE"] == "1"


def test_transformers_bare_names_resolve_after_torchvision_and_timm() -> None:
    assert str(resolve("bert")) == "transformers:bert"
    assert str(resolve("resnet50")) == "torchvision:resnet50"
    assert str(resolve("vit_base_patch16_224")) == "timm:vit_base_patch16_224"


def test_transformers_bert_config_override_and_auto_class() -> None:
    arch = describe(
        "transformers:bert",
        {
            "config": {"model_type": "bert", "architectures": ["BertModel"], **TINY_BERT},
            "num_labels": 3,
            "auto_class": "AutoModelForSequenceClassification",
        },
    )
    assert arch.name == "transformers:bert"
    assert arch.index.get("classifier.weight").shape == (3, 32)  # type: ignore[union-attr]
    assert arch.index.get("bert.embeddings.word_embeddings.weight").shape == (100, 32)  # type: ignore[union-attr]
    base = describe("transformers:bert", TINY_BERT)
    assert "embeddings.word_embeddings.weight" in base.index
    assert "classifier.weight" not in base.index


def test_transformers_config_dtype_sets_the_model_dtype() -> None:
    arch = describe(
        "transformers:llama",
        {
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "num_key_value_heads": 2,
            "vocab_size": 50,
            "dtype": "bfloat16",
            "auto_class": "AutoModelForCausalLM",
        },
    )
    assert arch.index.get("lm_head.weight").dtype == "bfloat16"  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"trust_remote_code": True}, "'trust_remote_code' is refused"),
        ({"config": {"trust_remote_code": True}}, "'trust_remote_code' is refused"),
        ({"config": {"model_type": "gpt2"}}, "name the architecture transformers:gpt2"),
        ({"config": [1, 2]}, "must be a JSON object"),
        ({"auto_class": "BertModel"}, "is not an Auto class"),
        ({"auto_class": "AutoModelForNothing"}, "no Auto class 'AutoModelForNothing'"),
    ],
)
def test_transformers_refused_arguments(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ArchitectureArgumentsError, match=message):
        describe("transformers:bert", kwargs)


def test_transformers_unknown_model_type_is_not_found() -> None:
    with pytest.raises(ArchitectureNotFoundError, match="transformers:no_such_model"):
        describe("transformers:no_such_model", {})


def test_transformers_config_fields_merge_and_drop_pointers() -> None:
    fields = config_fields(
        "bert",
        {
            "config": {"model_type": "bert", "auto_map": {"AutoModel": "x.Y"}, "hidden_size": 8},
            "hidden_size": 16,
            "auto_class": "AutoModel",
        },
    )
    assert fields == {"hidden_size": 16}
