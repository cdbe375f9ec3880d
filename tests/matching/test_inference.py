"""Constructor arguments read off a checkpoint's shapes."""

from __future__ import annotations

from app.matching.inference import infer_kwargs
from app.matching.ranking import profile_of
from app.matching.signature import Anchor, ArchitectureSignature, count_blocks, group_tensors
from app.tensors import TensorIndex, TensorInfo


def _index(*entries: tuple[str, tuple[int, ...]]) -> TensorIndex:
    return TensorIndex.from_infos([TensorInfo(k, s, "float32") for k, s in entries])


VIT = _index(
    ("cls_token", (1, 1, 8)),
    ("pos_embed", (1, 17, 8)),  # 4 x 4 patches of 4 pixels and a class token: 16 pixels
    ("patch_embed.proj.weight", (8, 3, 4, 4)),
    ("head.weight", (1000, 8)),
)
VIT_SIGNATURE = ArchitectureSignature(
    "timm:toy",
    VIT.numel,
    group_tensors(VIT),
    head=Anchor("head.weight", (1000, 8), "num_classes", 1000),
    stem=Anchor("patch_embed.proj.weight", (8, 3, 4, 4), "in_chans"),
    position=Anchor("pos_embed", (1, 17, 8), "img_size"),
    patch=4,
)


def test_infer_kwargs_reads_classes_channels_and_image_size() -> None:
    ckpt = _index(
        ("model.cls_token", (1, 1, 8)),
        ("model.pos_embed", (1, 37, 8)),  # 6 x 6 patches: 24 pixels
        ("model.patch_embed.proj.weight", (8, 1, 4, 4)),
        ("model.head.weight", (5, 8)),
    )
    assert infer_kwargs(profile_of(ckpt), VIT_SIGNATURE).kwargs == {
        "num_classes": 5,
        "in_chans": 1,
        "img_size": 24,
    }


def test_infer_kwargs_is_empty_for_the_default_build_and_for_other_widths() -> None:
    assert infer_kwargs(profile_of(VIT), VIT_SIGNATURE).kwargs == {}
    wider = _index(("head.weight", (5, 16)), ("pos_embed", (1, 20, 8)))  # 19 is no square
    assert infer_kwargs(profile_of(wider), VIT_SIGNATURE).kwargs == {}


def _encoder(hidden: int, layers: int, vocab: int = 100) -> TensorIndex:
    entries = [("embeddings.word.weight", (vocab, hidden))]
    for i in range(layers):
        entries += [
            (f"encoder.layer.{i}.query.weight", (hidden, hidden)),
            (f"encoder.layer.{i}.up.weight", (4 * hidden, hidden)),
        ]
    return _index(*entries)


def test_infer_kwargs_maps_config_sizes_layers_and_heads_from_shapes() -> None:
    default = _encoder(64, 4)
    sig = ArchitectureSignature(
        "transformers:toy",
        default.numel,
        group_tensors(default),
        config={
            "hidden_size": 64,
            "intermediate_size": 256,
            "num_hidden_layers": 4,
            "num_attention_heads": 4,
            "vocab_size": 100,
        },
        blocks=count_blocks(default.keys()),
    )
    found = infer_kwargs(profile_of(_encoder(32, 2)), sig).kwargs
    assert found == {
        "hidden_size": 32,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,  # the default head width of 16 kept
    }
    assert infer_kwargs(profile_of(default), sig).names == []
