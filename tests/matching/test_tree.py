"""Tests of app.matching.tree."""

from __future__ import annotations

import doctest

import app.matching.tree as tree_module
from app.matching.tree import KeyOutcome, ModuleTreeNode, build_tree
from app.schemas import ModuleStatus, Reason


def _find(nodes: tuple[ModuleTreeNode, ...] | list[ModuleTreeNode], module: str) -> ModuleTreeNode:
    for node in nodes:
        if node.module == module:
            return node
        if module.startswith(node.module.split("{")[0]):
            try:
                return _find(node.children, module)
            except LookupError:
                continue
    raise LookupError(module)


def test_build_tree_docstring_example_runs() -> None:
    assert doctest.testmod(tree_module).failed == 0


def test_build_tree_folds_alike_blocks_only() -> None:
    outcomes = [KeyOutcome(f"layer1.{i}.conv.w", "matched", None, 4) for i in range(4)]
    outcomes[0:0] = [KeyOutcome("layer1.0.down.w", "matched", None, 2)]
    (layer1,) = build_tree(outcomes)
    assert [(c.module, c.repeat) for c in layer1.children] == [
        ("layer1.0", 1),
        ("layer1.{1..3}", 3),
    ]
    folded = layer1.children[1]
    assert folded.counts["matched"] == 3
    assert folded.parameter_count == 12
    assert [c.module for c in folded.children] == ["layer1.{1..3}.conv"]


def test_build_tree_does_not_fold_blocks_with_other_status() -> None:
    outcomes = [
        KeyOutcome("blocks.0.w", "matched", None, 1),
        KeyOutcome("blocks.1.w", "missing", Reason.NEW_MODULE, 1),
        KeyOutcome("blocks.2.w", "matched", None, 1),
    ]
    (blocks,) = build_tree(outcomes)
    assert [(c.module, c.status) for c in blocks.children] == [
        ("blocks.0", ModuleStatus.LOADED),
        ("blocks.1", ModuleStatus.NOT_LOADED),
        ("blocks.2", ModuleStatus.LOADED),
    ]
    assert blocks.status is ModuleStatus.PARTIAL
    assert blocks.loaded_parameter_fraction == 2 / 3
    assert blocks.reasons == {Reason.NEW_MODULE: 1}


def test_build_tree_root_tensors_and_checkpoint_only_modules() -> None:
    outcomes = [
        KeyOutcome("cls_token", "matched", None, 8),
        KeyOutcome("bn.num_batches_tracked", "missing", Reason.IGNORABLE, 0),
        KeyOutcome("bn.weight", "matched", None, 2),
        KeyOutcome("old.w", "unexpected", Reason.NEW_MODULE),
    ]
    nodes = build_tree(outcomes)
    assert [(n.module, n.status) for n in nodes] == [
        ("", ModuleStatus.LOADED),
        ("bn", ModuleStatus.LOADED),
        ("old", ModuleStatus.CHECKPOINT_ONLY),
    ]
    assert nodes[0].children == ()
    assert nodes[2].loaded_parameter_fraction is None


def _depth(nodes: tuple[ModuleTreeNode, ...] | list[ModuleTreeNode]) -> int:
    deepest, level, pending = 0, 1, list(nodes)
    while pending:  # iterative: the tree under test may be deeper than the recursion limit
        deepest = level
        pending = [child for node in pending for child in node.children]
        level += 1
    return deepest


def test_build_tree_keys_500_modules_deep_are_counted_under_a_capped_depth() -> None:
    deep = ".".join(["a"] * 500)
    nodes = build_tree(
        [
            KeyOutcome(f"{deep}.weight", "unexpected", Reason.NEW_MODULE),
            KeyOutcome(f"{deep}.b.bias", "unexpected", Reason.NEW_MODULE),
            KeyOutcome("fc.weight", "matched", None, 4),
        ]
    )
    assert _depth(nodes) <= tree_module.MAX_TREE_DEPTH
    assert [(n.module, n.counts["unexpected"]) for n in nodes] == [("a", 2), ("fc", 0)]
    deepest = nodes[0]
    while deepest.children:
        deepest = deepest.children[0]
    assert deepest.counts["unexpected"] == 2  # both keys are in the last node shown


def test_build_tree_folds_ascii_block_numbers_only() -> None:
    outcomes = [
        KeyOutcome(f"blocks.{i}.w", "unexpected", Reason.NEW_MODULE)
        for i in ("²", "³", "0", "1", "٢", "٣", "1" * 5000)
    ]
    (blocks,) = build_tree(outcomes)
    assert [c.module for c in blocks.children] == [
        "blocks.²",
        "blocks.³",
        "blocks.{0..1}",
        "blocks.٢",
        "blocks.٣",
        f"blocks.{'1' * 5000}",
    ]
