"""A report (its JSON) turned into what the report page shows: pure functions, no I/O.

The page must stay fast for reports of 100,000 keys, so the key table is not rendered as
HTML rows here: it becomes one compact JSON value (repeated strings stored once) that the
page's script filters and pages through, and the module tree becomes a flat list of rows the
template walks without recursion.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

MAX_TREE_ROWS = 2000
"""Module rows rendered; past them the page says so (the key table still lists every key)."""
MAX_PLAN_ROWS = 1000
"""Rows of the freeze/train table (parameters grouped by module, block numbers folded)."""

_KINDS = ("missing", "unexpected", "shape_mismatched", "dtype_differs", "ambiguous", "matched")
"""Row kinds, in the order of their indexes in the rows ``key_table`` builds."""
_CLASS_SAFE = re.compile(r"[^a-z0-9_]")
_BLOCK = re.compile(r"(?<=\.)\d{1,6}(?=\.|$)|^\d{1,6}(?=\.|$)")


@dataclass(frozen=True, slots=True)
class TreeRow:
    """One module of the tree, in depth-first order.

    Attributes:
        label: The name relative to the parent (``layer1.{0..2}`` folds repeats).
        path: The full dotted path, for the tooltip.
        depth: 0 for top-level modules.
        has_children: Rendered as an expandable ``<details>``.
        closes: How many ``<details>`` end after this row (its own, when it is a leaf, none).
        tone: The CSS class of its colour: ``loaded`` or the reason that weighs most.
        fraction: Loaded share of its parameter elements (None: it has none).
        width: The coverage bar's filled width, 0 to 100 (SVG units, not a style: the pages'
            Content-Security-Policy allows no inline style).
    """

    label: str
    path: str
    depth: int
    has_children: bool
    closes: int
    status: str
    tone: str
    repeat: int
    parameter_count: int
    loaded_parameter_count: int
    fraction: float | None
    width: str
    reasons: str


def css_name(value: object) -> str:
    """A value safe to put in a class attribute (reasons and statuses are engine words)."""
    return _CLASS_SAFE.sub("_", str(value).lower())[:40]


def _tone(node: dict[str, Any]) -> str:
    reasons: dict[str, int] = node.get("reasons") or {}
    status = str(node.get("status", ""))
    if status == "loaded" or not reasons:
        return css_name(status)
    top = max(reasons.items(), key=lambda item: (item[1], item[0]))[0]
    return css_name(top)


@dataclass(frozen=True, slots=True)
class Tree:
    """The rows of the module tree, and whether they stop before its end."""

    rows: list[TreeRow]
    cut: bool


def tree_rows(modules: list[dict[str, Any]], *, limit: int = MAX_TREE_ROWS) -> Tree:
    """The module tree flattened depth first (iteratively: trees may be 32 deep and wide).

    Example:
        >>> tree = tree_rows([{"module": "fc", "status": "loaded", "children": []}])
        >>> tree.rows[0].label, tree.rows[0].closes, tree.cut
        ('fc', 0, False)
    """
    rows: list[TreeRow] = []
    # Each entry: (node, parent path, depth).
    stack: list[tuple[dict[str, Any], str, int]] = [(m, "", 0) for m in reversed(modules)]
    open_depths: list[int] = []
    while stack and len(rows) < limit:
        node, parent, depth = stack.pop()
        while open_depths and open_depths[-1] >= depth:  # finished subtrees close first
            open_depths.pop()
            _close_last(rows)
        path = str(node.get("module", ""))
        children = node.get("children") or []
        label = path[len(parent) + 1 :] if parent and path.startswith(parent + ".") else path
        rows.append(_row(node, label=label or "(own tensors)", path=path, depth=depth))
        if children:
            rows[-1] = _with(rows[-1], has_children=True)
            open_depths.append(depth)
            stack.extend((c, path, depth + 1) for c in reversed(children))
    for _ in open_depths:
        _close_last(rows)
    return Tree(rows, cut=bool(stack))


def _row(node: dict[str, Any], *, label: str, path: str, depth: int) -> TreeRow:
    fraction = node.get("loaded_parameter_fraction")
    reasons: dict[str, int] = node.get("reasons") or {}
    return TreeRow(
        label=label,
        path=path,
        depth=depth,
        has_children=False,
        closes=0,
        status=css_name(node.get("status", "")),
        tone=_tone(node),
        repeat=int(node.get("repeat", 1)),
        parameter_count=int(node.get("parameter_count", 0)),
        loaded_parameter_count=int(node.get("loaded_parameter_count", 0)),
        fraction=float(fraction) if fraction is not None else None,
        width=f"{100 * float(fraction or 0):.2f}",
        reasons=", ".join(f"{name} {count}" for name, count in sorted(reasons.items())),
    )


def _with(row: TreeRow, **changes: Any) -> TreeRow:
    values = {name: getattr(row, name) for name in TreeRow.__slots__}
    values.update(changes)
    return TreeRow(**values)


def _close_last(rows: list[TreeRow]) -> None:
    rows[-1] = _with(rows[-1], closes=rows[-1].closes + 1)


def key_table(keys: dict[str, Any]) -> dict[str, Any]:
    """Every key as a compact row ``[kind, key, reason, detail, shapes]`` for the page script
    (matched keys as a plain list of names).

    Kinds, reasons and details are indexes into lists of their distinct values: a report of
    100,000 keys repeats a few hundred details, and the page stays a few MB.
    """
    reasons: dict[str, int] = {"": 0}
    details: dict[str, int] = {"": 0}
    rows: list[list[Any]] = []

    def add(
        kind: int, entries: list[dict[str, Any]], shapes: Callable[[dict[str, Any]], str]
    ) -> None:
        for entry in entries:
            r = reasons.setdefault(entry["reason"], len(reasons))
            d = details.setdefault(entry["detail"], len(details))
            rows.append([kind, entry["key"], r, d, shapes(entry)])

    add(0, keys.get("missing", []), lambda e: _shape(e["shape"]))
    add(1, keys.get("unexpected", []), _unexpected_shapes)
    add(
        2,
        keys.get("shape_mismatched", []),
        lambda e: f"{_shape(e['checkpoint_shape'])} -> {_shape(e['model_shape'])}",
    )
    add(
        3, keys.get("dtype_differs", []), lambda e: f"{e['checkpoint_dtype']} -> {e['model_dtype']}"
    )
    ambiguous = "match_by_suffix found several model keys for it"
    details.setdefault(ambiguous, len(details))
    rows.extend([4, key, 0, details[ambiguous], ""] for key in keys.get("ambiguous", []))
    return {
        "kinds": list(_KINDS),
        "reasons": list(reasons),
        "details": list(details),
        "rows": rows,
        # Matched keys are most keys and carry nothing else: a plain list, rows made in the page.
        "matched": list(keys.get("matched", [])),
    }


def _unexpected_shapes(entry: dict[str, Any]) -> str:
    aligned = entry.get("aligned_key")
    shapes = _shape(entry["shape"])
    return f"{shapes} as {aligned}" if aligned and aligned != entry["key"] else shapes


def _shape(shape: list[int] | None) -> str:
    return "[" + ", ".join(str(n) for n in shape or []) + "]"


def script_json(value: Any) -> str:
    """JSON safe inside ``<script type="application/json">``: no ``<``, ``>`` or ``&`` left,
    so no key can close the element or open a comment (keys are hostile strings)."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


@dataclass(frozen=True, slots=True)
class PlanRow:
    """Parameters of one module group and what the plan does with them."""

    group: str
    action: str
    tensors: int


def plan_rows(plan: dict[str, Any]) -> list[PlanRow]:
    """The training plan grouped by module, block numbers folded (``layers.*.attn``).

    Example:
        >>> rows = plan_rows({"trainable": ["fc.weight", "fc.bias"], "frozen": ["l.0.w", "l.1.w"]})
        >>> [(r.group, r.action, r.tensors) for r in rows]
        [('fc', 'train', 2), ('l.*', 'freeze', 2)]
    """
    counts: Counter[tuple[str, str]] = Counter()
    for action, names in (("train", plan.get("trainable", [])), ("freeze", plan.get("frozen", []))):
        # Count per module first (in C), then fold each distinct module once.
        per_module = Counter(name.rpartition(".")[0] for name in names)
        for module, n in per_module.items():
            counts[(_BLOCK.sub("*", module or "(model)"), action)] += n
    return [PlanRow(group, action, n) for (group, action), n in counts.items()]


def human_count(value: int | float) -> str:
    """Parameter counts as people read them: 950, 2.3 k, 11.7 M, 6.7 B."""
    for size, unit in ((1e9, " B"), (1e6, " M"), (1e3, " k")):
        if abs(value) >= size:
            return f"{value / size:.1f}{unit}"
    return f"{int(value)}"


def human_bytes(value: int) -> str:
    """Sizes in binary units (1.1 GiB)."""
    size = float(value)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TiB"  # pragma: no cover  (the loop returns at GiB)


def suggested_options(report: dict[str, Any]) -> list[dict[str, str]]:
    """Options the report suggests, each as JSON text ready to copy.

    Reports may carry ``suggested_options`` (``[{"architecture", "options", ...}]``); the
    automatic alignment applied is also offered as explicit options, so a pipeline can pin it.
    """
    items: list[dict[str, str]] = []
    for entry in report.get("suggested_options") or []:
        if isinstance(entry, dict) and isinstance(entry.get("options"), dict):
            items.append(
                {
                    "title": f"For {entry.get('architecture', 'this architecture')}",
                    "text": json.dumps(entry["options"], indent=2, ensure_ascii=False),
                }
            )
    pinned = _pinned_alignment(report.get("applied_transforms") or [])
    if pinned:
        items.append(
            {"title": "The alignment applied, as explicit options", "text": json.dumps(pinned)}
        )
    return items


def _pinned_alignment(transforms: list[dict[str, Any]]) -> dict[str, Any]:
    """Automatic prefix transforms as ``strip_prefix`` / ``add_prefix`` options (one each)."""
    options: dict[str, Any] = {}
    for transform in transforms:
        if transform.get("origin") != "auto":
            continue
        kind = transform.get("kind")
        if kind in ("strip_prefix", "add_prefix") and kind not in options:
            options[kind] = transform.get("prefix")
    return options
