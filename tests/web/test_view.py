"""The report turned into page values: tree rows, the compact key table, plan groups."""

from __future__ import annotations

import json

import pytest

from app.web.view import (
    css_name,
    human_count,
    key_table,
    plan_rows,
    script_json,
    suggested_options,
    tree_rows,
)


def _node(
    module: str, status: str = "loaded", children: list[dict] | None = None, **extra: object
) -> dict:
    return {"module": module, "status": status, "children": children or [], **extra}


def test_tree_rows_nest_children_and_close_every_details() -> None:
    tree = tree_rows(
        [
            _node("a", "partial", [_node("a.b", "loaded", [_node("a.b.c")]), _node("a.d")]),
            _node("e", "not_loaded", reasons={"new_module": 2}),
        ]
    )
    labels = [(r.label, r.depth, r.has_children, r.closes) for r in tree.rows]
    assert labels == [
        ("a", 0, True, 0),
        ("b", 1, True, 0),
        ("c", 2, False, 1),
        ("d", 1, False, 1),
        ("e", 0, False, 0),
    ]
    opened = sum(r.has_children for r in tree.rows)
    assert opened == sum(r.closes for r in tree.rows)
    assert tree.rows[-1].tone == "new_module"
    assert not tree.cut


def test_tree_rows_cut_at_the_limit_still_close_what_they_opened() -> None:
    deep = _node("x0")
    for i in range(1, 50):
        deep = _node(f"x{i}", children=[deep])
    tree = tree_rows([deep], limit=10)
    assert tree.cut and len(tree.rows) == 10
    assert sum(r.has_children for r in tree.rows) == sum(r.closes for r in tree.rows)


def test_tree_rows_handle_500_levels_without_recursion() -> None:
    node = _node("leaf")
    for _ in range(500):
        node = _node("m", children=[node])
    assert len(tree_rows([node], limit=1000).rows) == 501


def test_key_table_shares_repeated_details_and_reasons() -> None:
    detail = "The module 'head' is new: train it."
    table = key_table(
        {
            "matched": ["a.weight"],
            "missing": [
                {"key": f"head.{i}", "shape": [2], "reason": "new_module", "detail": detail}
                for i in range(3)
            ],
            "unexpected": [
                {
                    "key": "module.fc",
                    "aligned_key": "fc",
                    "shape": [1],
                    "reason": "unexplained",
                    "detail": "x",
                }
            ],
            "shape_mismatched": [
                {
                    "key": "fc.w",
                    "checkpoint_key": "fc.w",
                    "checkpoint_shape": [10, 4],
                    "model_shape": [2, 4],
                    "reason": "head_resized",
                    "detail": "y",
                }
            ],
            "dtype_differs": [],
            "ambiguous": ["amb"],
        }
    )
    assert table["details"].count(detail) == 1
    kinds = [table["kinds"][row[0]] for row in table["rows"]]
    assert kinds == ["missing"] * 3 + ["unexpected", "shape_mismatched", "ambiguous"]
    assert table["matched"] == ["a.weight"]
    unexpected = table["rows"][3]
    assert unexpected[4] == "[1] as fc" and table["reasons"][unexpected[2]] == "unexplained"
    assert table["rows"][4][4] == "[10, 4] -> [2, 4]"


@pytest.mark.parametrize("hostile", ["</script><script>alert(1)</script>", "<!--", "a&b", "\u2028"])
def test_script_json_cannot_close_its_script_element(hostile: str) -> None:
    text = script_json({"rows": [[0, hostile]]})
    assert "<" not in text and ">" not in text and "&" not in text
    assert json.loads(text) == {"rows": [[0, hostile]]}


def test_plan_rows_fold_block_numbers_per_module() -> None:
    rows = plan_rows(
        {"trainable": ["fc.weight", "fc.bias"], "frozen": [f"layers.{i}.attn.w" for i in range(12)]}
    )
    assert [(r.group, r.action, r.tensors) for r in rows] == [
        ("fc", "train", 2),
        ("layers.*.attn", "freeze", 12),
    ]


def test_suggested_options_include_the_report_s_and_the_applied_alignment() -> None:
    report = {
        "suggested_options": [
            {
                "architecture": "timm:resnet18",
                "options": {"architecture_kwargs": {"num_classes": 5}},
            }
        ],
        "applied_transforms": [
            {"kind": "strip_prefix", "prefix": "module.", "origin": "auto"},
            {"kind": "add_prefix", "prefix": "backbone.", "origin": "auto"},
            {"kind": "rename", "pattern": "a", "replacement": "b", "origin": "option"},
        ],
    }
    items = suggested_options(report)
    assert json.loads(items[0]["text"]) == {"architecture_kwargs": {"num_classes": 5}}
    assert json.loads(items[1]["text"]) == {"strip_prefix": "module.", "add_prefix": "backbone."}
    assert suggested_options({}) == []


def test_css_name_and_human_count() -> None:
    assert css_name('x" onmouseover="1') == "x__onmouseover__1"
    assert [human_count(n) for n in (950, 2300, 11_700_000, 6.7e9)] == [
        "950",
        "2.3 k",
        "11.7 M",
        "6.7 B",
    ]
