"""The catalogue ranked for real checkpoints, against a small index built in tmp_path."""

from __future__ import annotations

from typing import Any

import pytest

from app.catalog_index.closest import custom_model_note, rank_catalogue
from app.catalog_index.store import CatalogIndex, load_index
from tests.catalog_index.helpers import (
    SMALL_CATALOGUE,
    build_small_index,
    custom_state_dict,
    index_of,
)


@pytest.fixture(scope="module")
def small_index(tmp_path_factory: pytest.TempPathFactory) -> CatalogIndex:
    cache = tmp_path_factory.mktemp("cache")
    summary = build_small_index(cache)
    assert summary["architectures"] == len(SMALL_CATALOGUE)
    index = load_index(cache)
    assert index is not None
    return index


def _on_meta(build: Any) -> dict[str, Any]:
    import torch

    with torch.device("meta"):
        return dict(build().state_dict())


def test_rank_catalogue_names_convnext_tiny_first_with_its_classifier_width(
    small_index: CatalogIndex,
) -> None:
    import timm

    state = _on_meta(lambda: timm.create_model("convnext_tiny", num_classes=10))
    fits = rank_catalogue(index_of(state), small_index)
    best = fits[0]
    assert best.name == "timm:convnext_tiny"
    assert best.kwargs == {"num_classes": 10}
    assert best.inferred == ["num_classes"]
    assert (best.loaded_parameter_fraction, best.verdict) == (1.0, "compatible")
    assert custom_model_note(fits) is None


def test_rank_catalogue_prefers_the_vit_with_published_weights_among_identical_networks(
    small_index: CatalogIndex,
) -> None:
    import timm

    state = _on_meta(lambda: timm.create_model("vit_small_patch16_224"))
    fits = rank_catalogue(index_of(state), small_index)
    # deit_small_patch16_224 is the same network: it ties, and timm publishes fewer weights.
    assert [f.name for f in fits[:2]] == [
        "timm:vit_small_patch16_224",
        "timm:deit_small_patch16_224",
    ]
    assert fits[0].kwargs == {} and fits[0].verdict == "compatible"
    by_name = {f.name: f for f in fits}
    assert by_name["timm:vit_small_patch16_384"].kwargs == {"img_size": 224}


def test_rank_catalogue_infers_input_channels_image_size_and_classes(
    small_index: CatalogIndex,
) -> None:
    import timm

    state = _on_meta(
        lambda: timm.create_model("vit_small_patch16_224", in_chans=4, img_size=288, num_classes=7)
    )
    best = rank_catalogue(index_of(state), small_index)[0]
    assert best.name == "timm:vit_small_patch16_224"
    assert best.kwargs == {"in_chans": 4, "img_size": 288, "num_classes": 7}
    assert best.inferred == ["img_size", "in_chans", "num_classes"]
    assert best.loaded_parameter_fraction == 1.0


def test_rank_catalogue_recognises_a_narrow_shallow_bert_with_its_sizes_inferred(
    small_index: CatalogIndex,
) -> None:
    state = {f"module.{k}": v for k, v in _on_meta(lambda: _bert_model()).items()}
    best = rank_catalogue(index_of(state), small_index)[0]
    assert best.name == "transformers:bert"
    assert best.kwargs["hidden_size"] == 384
    assert best.kwargs["num_hidden_layers"] == 6
    assert best.kwargs["intermediate_size"] == 1536
    assert best.kwargs["num_attention_heads"] * 64 == 384  # the default head width kept
    assert {"hidden_size", "num_hidden_layers", "num_attention_heads"} <= set(best.inferred)
    assert (best.loaded_parameter_fraction, best.verdict) == (1.0, "compatible")


def _bert_model() -> Any:
    import transformers

    config = transformers.BertConfig(
        hidden_size=384, num_hidden_layers=6, num_attention_heads=12, intermediate_size=1536
    )
    return transformers.BertModel(config)


def test_rank_catalogue_says_when_a_custom_model_fits_nothing(small_index: CatalogIndex) -> None:
    fits = rank_catalogue(index_of(custom_state_dict()), small_index)
    assert all(f.loaded_parameter_fraction <= 0.5 for f in fits)
    note = custom_model_note(fits)
    assert note is not None and "probably a custom model" in note


def test_rank_catalogue_ranks_only_the_names_given_and_estimates_past_the_exact_few(
    small_index: CatalogIndex,
) -> None:
    import timm

    state = _on_meta(lambda: timm.create_model("convnext_tiny"))
    names = {"timm:resnet50", "torchvision:resnet50", "transformers:bert"}
    fits = rank_catalogue(index_of(state), small_index, names=names, exact=1)
    assert {f.name for f in fits} == names
    assert [f.estimated for f in fits] == [False, True, True]
    wire = fits[1].to_wire()
    assert wire["verdict"] is None and wire["suggested_options"] == []
    exact = fits[0].to_wire()
    assert exact["suggested_options"] == [
        {
            "architecture": fits[0].name,
            "options": {"architecture_kwargs": fits[0].kwargs},
            "loaded_parameter_fraction": exact["loaded_parameter_fraction"],
            "verdict": exact["verdict"],
        }
    ]
