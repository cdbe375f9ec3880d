"""The module tree of a check: every module at every depth with its counts, repeated sibling
blocks folded the way transformers folds them (``layer1.{0..2}``) when their status is the same."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from app.enums import ModuleStatus, Reason

ROOT_MODULE = ""
"""The node of tensors that sit directly on the model (``cls_token``); it has no children."""

OUTCOMES = ("matched", "missing", "unexpected", "shape_mismatched")

MAX_TREE_DEPTH = 32
"""The deepest module level shown. A crafted key 500 modules deep would exceed the recursion
limit here and the report schema's nesting limit; real models stay under 20. Keys deeper than
this are counted in their ancestor at this level (their counts stay exact)."""

_MAX_BLOCK_DIGITS = 9


@dataclass(frozen=True, slots=True)
class KeyOutcome:
    """One key's outcome, placed in the tree by its dotted name.

    Attributes:
        key: Model key (or aligned checkpoint key for ``unexpected``).
        outcome: ``matched``, ``missing``, ``unexpected`` or ``shape_mismatched``.
        reason: The reason of a key that does not load, else None.
        parameter_numel: Elements when the key is a model parameter, else 0.
    """

    key: str
    outcome: str
    reason: Reason | None = None
    parameter_numel: int = 0


@dataclass(frozen=True, slots=True)
class ModuleTreeNode:
    """A module (or folded run of sibling blocks) with its whole subtree counted."""

    module: str
    repeat: int
    status: ModuleStatus
    counts: dict[str, int]
    parameter_count: int
    loaded_parameter_count: int
    reasons: dict[Reason, int]
    children: tuple[ModuleTreeNode, ...]

    @property
    def loaded_parameter_fraction(self) -> float | None:
        """Loaded over all parameter elements; None without parameters."""
        if not self.parameter_count:
            return None
        return self.loaded_parameter_count / self.parameter_count


@dataclass(slots=True)
class _Node:
    path: str
    own: list[KeyOutcome] = field(default_factory=list)
    children: dict[str, _Node] = field(default_factory=dict)
    items: list[tuple[str, KeyOutcome]] = field(default_factory=list)  # the whole subtree
    signature: tuple[tuple[str, str, str], ...] | None = None

    def outcomes(self) -> list[tuple[str, KeyOutcome]]:
        """(key relative to this node, outcome) over the subtree."""
        return self.items


def build_tree(outcomes: Sequence[KeyOutcome]) -> list[ModuleTreeNode]:
    """The module tree of the given outcomes, top-level modules in first-appearance order.

    Args:
        outcomes: Model keys in model order, then unexpected checkpoint keys.

    Returns:
        The top-level nodes; a ``""`` node first when tensors sit directly on the model.

    Example:
        >>> tree = build_tree(
        ...     [KeyOutcome(f"layer1.{i}.conv.weight", "matched", None, 9) for i in range(3)]
        ... )
        >>> [(n.module, n.children[0].module, n.children[0].repeat) for n in tree]
        [('layer1', 'layer1.{0..2}', 3)]
    """
    root = _Node(ROOT_MODULE)
    for item in outcomes:
        node = root
        start = 0
        end = item.key.find(".")
        depth = 0
        while end != -1 and depth < MAX_TREE_DEPTH:
            depth += 1
            part = item.key[start:end]
            child = node.children.get(part)
            if child is None:
                child = node.children[part] = _Node(item.key[:end])
            node = child
            start = end + 1
            node.items.append((item.key[start:], item))
            end = item.key.find(".", start)
        node.own.append(item)
    for item in root.own:
        root.items.append((item.key, item))
    nodes = _fold([([child], child.path) for child in root.children.values()])
    if root.own:
        own = _Node(ROOT_MODULE, own=root.own, items=[(i.key, i) for i in root.own])
        nodes.insert(0, _summarise([own], ROOT_MODULE))
    return nodes


_Group = tuple[list[_Node], str]
"""Alike nodes shown as one (a folded run, or the children of one), and the path shown."""


def _signature(node: _Node) -> tuple[tuple[str, str, str], ...]:
    if node.signature is None:
        node.signature = tuple(sorted((rel, o.outcome, str(o.reason)) for rel, o in node.items))
    return node.signature


def _fold(groups: list[_Group]) -> list[ModuleTreeNode]:
    """Summarise sibling groups, folding runs of consecutively numbered blocks alike."""
    out: list[ModuleTreeNode] = []
    i = 0
    while i < len(groups):
        j = i + 1
        parent, _, name = groups[i][1].rpartition(".")
        number = block_number(name)
        if number is not None:
            signature = _signature(groups[i][0][0])
            while (
                j < len(groups)
                and block_number(groups[j][1].rpartition(".")[2]) == number + (j - i)
                and _signature(groups[j][0][0]) == signature
            ):
                j += 1
        if j - i > 1:
            last = groups[j - 1][1].rpartition(".")[2]
            members = [node for members, _ in groups[i:j] for node in members]
            out.append(_summarise(members, f"{parent}{'.' if parent else ''}{{{name}..{last}}}"))
        else:
            out.append(_summarise(*groups[i]))
        i = j
    return out


def block_number(name: str) -> int | None:
    """The index of a repeated block (``"3"`` in ``layer1.3``), or None for any other name.

    Only short ASCII digit runs count: ``str.isdigit`` is also true for ``"²"``, which ``int``
    refuses, and ``int`` refuses more than 4300 digits; both come from crafted keys.

    Example:
        >>> block_number("12"), block_number("²"), block_number("conv1")
        (12, None, None)
    """
    if name.isascii() and name.isdecimal() and len(name) <= _MAX_BLOCK_DIGITS:
        return int(name)
    return None


def _summarise(members: list[_Node], path: str) -> ModuleTreeNode:
    """One output node for alike nodes (counts summed); children merged by name, then folded."""
    counts: Counter[str] = Counter()
    reasons: Counter[Reason] = Counter()
    parameters = loaded = model_keys = model_loaded = blocking = 0
    for node in members:
        for _, item in node.outcomes():
            counts[item.outcome] += 1
            if item.reason is not None:
                reasons[item.reason] += 1
            if item.outcome == "unexpected":
                continue
            model_keys += 1
            parameters += item.parameter_numel
            if item.outcome == "matched":
                model_loaded += 1
                loaded += item.parameter_numel
            elif item.reason is not Reason.IGNORABLE:
                blocking += 1
    children = _fold(
        [([m.children[name] for m in members], f"{path}.{name}") for name in members[0].children]
    )
    return ModuleTreeNode(
        module=path,
        repeat=len(members),
        status=_status(model_keys, model_loaded, blocking),
        counts={o: counts[o] for o in OUTCOMES},
        parameter_count=parameters,
        loaded_parameter_count=loaded,
        reasons=dict(sorted(reasons.items())),
        children=tuple(children),
    )


def _status(model_keys: int, model_loaded: int, blocking: int) -> ModuleStatus:
    if not model_keys:
        return ModuleStatus.CHECKPOINT_ONLY
    if not blocking:
        return ModuleStatus.LOADED
    if not model_loaded:
        return ModuleStatus.NOT_LOADED
    return ModuleStatus.PARTIAL
