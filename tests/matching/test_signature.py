"""Shape signatures: folded keys, block counts, anchors and the compact JSON form."""

from __future__ import annotations

from app.matching.signature import (
    ArchitectureSignature,
    count_blocks,
    fold_key,
    group_tensors,
    signature_of,
)
from app.tensors import ArchitectureIndex, TensorIndex, TensorInfo, TensorKind

P = TensorKind.PARAMETER


def _index(*entries: tuple[str, tuple[int, ...]]) -> TensorIndex:
    return TensorIndex.from_infos([TensorInfo(k, s, "float32", P) for k, s in entries])


def test_fold_key_drops_prefixes_and_block_numbers() -> None:
    assert fold_key("module.layer1.0.conv1.weight") == fold_key("layer1.1.conv1.weight")
    assert fold_key("bert.encoder.layer.3.output.dense.bias") == "output.dense.bias"
    assert fold_key("fc.weight") == "fc.weight"
    assert fold_key("blocks.12345.w") == "blocks.12345.w"  # a long digit run is a name


def test_count_blocks_counts_distinct_blocks_per_container() -> None:
    keys = [f"encoder.layer.{i}.dense.weight" for i in range(6)] + [
        f"stages.{s}.blocks.{b}.conv.weight" for s in range(2) for b in range(3)
    ]
    assert count_blocks(keys) == {"encoder.layer": 6, "stages": 2, "#.blocks": 3}


def test_group_tensors_counts_repeats_in_first_seen_order() -> None:
    index = _index(("a.0.w", (4, 4)), ("a.1.w", (4, 4)), ("b.w", (2,)))
    assert group_tensors(index) == (("a.#.w", (4, 4), 2), ("b.w", (2,), 1))


def test_signature_of_finds_the_classifier_stem_and_position_table() -> None:
    index = _index(
        ("cls_token", (1, 1, 8)),
        ("pos_embed", (1, 17, 8)),
        ("patch_embed.proj.weight", (8, 3, 4, 4)),
        ("blocks.0.mlp.fc1.weight", (16, 8)),
        ("head.weight", (1000, 8)),
    )
    arch = ArchitectureIndex("timm:toy", "timm", {}, index, head_modules=("head",))
    kwargs = {"head": "num_classes", "stem": "in_chans", "position": "img_size"}
    sig = signature_of(arch, kwargs=kwargs, num_classes=1000, prior=3)
    assert sig.head is not None and (sig.head.fold, sig.head.default) == ("head.weight", 1000)
    assert sig.stem is not None and sig.stem.shape == (8, 3, 4, 4)
    assert sig.position is not None and sig.position.fold == "pos_embed"
    assert (sig.patch, sig.prior, sig.source) == (4, 3, "timm")
    folds: dict[str, int] = {}
    data = sig.to_json(folds)
    assert ArchitectureSignature.from_json(data, list(folds)) == sig


def test_signature_of_keeps_no_anchor_its_source_takes_no_argument_for() -> None:
    index = _index(("conv.weight", (8, 3, 3, 3)), ("fc.weight", (10, 8)))
    arch = ArchitectureIndex("torchvision:toy", "torchvision", {}, index, head_modules=("fc",))
    sig = signature_of(arch, kwargs={"head": "num_classes"})
    assert sig.stem is None and sig.head is not None and sig.head.kwarg == "num_classes"
