"""Ranking by counting: shapes, structure and agreeing dimensions."""

from __future__ import annotations

from app.matching.ranking import common_prefix, paired, profile_of, rank, score
from app.matching.signature import ArchitectureSignature, group_tensors
from app.tensors import TensorIndex, TensorInfo


def _index(*entries: tuple[str, tuple[int, ...]]) -> TensorIndex:
    return TensorIndex.from_infos([TensorInfo(k, s, "float32") for k, s in entries])


def _signature(
    name: str, *entries: tuple[str, tuple[int, ...]], prior: int = 0
) -> ArchitectureSignature:
    index = _index(*entries)
    return ArchitectureSignature(name, index.numel, group_tensors(index), prior=prior)


def test_score_is_one_for_the_same_tensors_under_a_prefix() -> None:
    sig = _signature("a:x", ("enc.0.w", (4, 8)), ("enc.1.w", (4, 8)), ("fc.w", (3, 4)))
    ckpt = _index(("module.enc.0.w", (4, 8)), ("module.enc.1.w", (4, 8)), ("module.fc.w", (3, 4)))
    found = score(profile_of(ckpt), sig)
    assert (found.shapes, found.structure, found.dims, found.loaded_estimate) == (1, 1, 1, 1)


def test_score_keeps_structure_when_every_size_changed() -> None:
    sig = _signature("a:x", ("emb.w", (100, 8)), ("ln.w", (8,)))
    ckpt = _index(("emb.w", (100, 4)), ("ln.w", (4,)))
    found = score(profile_of(ckpt), sig)
    assert found.shapes == 0 and found.structure == 1
    assert found.dims == 2 * 1 / (3 + 3)  # only the vocabulary agrees


def test_rank_puts_agreeing_sizes_first_and_breaks_ties_by_prior() -> None:
    ckpt = profile_of(_index(("emb.w", (100, 4)), ("ln.w", (4,))))
    same_vocab = _signature("t:same", ("emb.w", (100, 8)), ("ln.w", (8,)))
    other_vocab = _signature("t:other", ("emb.w", (50, 8)), ("ln.w", (8,)))
    twin_a = _signature("t:a", ("emb.w", (100, 4)), ("ln.w", (4,)))
    twin_b = _signature("t:b", ("emb.w", (100, 4)), ("ln.w", (4,)), prior=2)
    ranked = [s.name for s in rank(ckpt, [other_vocab, twin_a, same_vocab, twin_b])]
    assert ranked == ["t:b", "t:a", "t:same", "t:other"]


def test_paired_expands_counts_in_order() -> None:
    left = [((1,), 2), ((2,), 1)]
    right = [((1,), 1), ((3,), 3)]
    assert list(paired(left, right)) == [((1,), (1,), 1), ((1,), (3,), 1), ((2,), (3,), 1)]


def test_common_prefix_is_whole_parts_every_key_shares() -> None:
    assert common_prefix(["module.fc.w", "module.conv.w"]) == "module."
    assert common_prefix(["a.b.w", "a.b.c.w"]) == "a.b."
    assert common_prefix(["fc.w", "module.fc.w"]) == ""
    assert common_prefix(["w"]) == ""
