"""Find the state_dict inside a loaded checkpoint object (pure: no I/O)."""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

import torch

from app.errors import LimitExceededError, NoTensorsError, StateDictKeyError
from app.tensors import StateDictCandidate, TensorIndex, TensorInfo

AUTO = "auto"
# Wrapper keys tried in this order (after a root made only of tensors); the EMA weights
# first, as timm's load_checkpoint does (BasicSR's params_ema, ema-pytorch's ema_model too).
# Among equal keys, the shallower path wins. When several candidates load as much, matching
# chooses by the conventions in app.matching.twins and says why; this order only breaks
# what no convention settles.
PREFERRED_KEYS = (
    "state_dict_ema",
    "model_ema",
    "params_ema",
    "ema_model",
    "ema_state_dict",
    "state_dict",
    "model",
    "module",
    "net",
    "network",
    "params",
    "weights",
    "ema",
    "shadow",
    "teacher",
    "student",
)
YOLOX_KEYS = frozenset({"start_epoch", "model", "optimizer", "best_ap"})
"""The top-level keys of YOLOX's ``Trainer.save_ckpt``, which stores the EMA model's weights
(``self.ema_model.ema``) under ``model`` when EMA is on, its default: no raw copy is saved."""
MAX_DEPTH = 32
MAX_NODES = 1_000_000
_MAX_LISTED = 10


@dataclass(frozen=True, slots=True)
class StateDict:
    """The chosen state_dict: its path in the file, its tensors and how it was found.

    Attributes:
        path: Dotted path of the chosen dict ("" = the loaded object itself).
        tensors: The string-keyed tensor values of the chosen dict, in file order.
        candidates: Every dict holding tensors, in breadth-first order.
        notes: Sentences on unwrapping and on skipped entries.
    """

    path: str
    tensors: dict[str, torch.Tensor]
    candidates: tuple[StateDictCandidate, ...]
    notes: tuple[str, ...]


def find_state_dict(obj: object, *, state_dict_key: str = AUTO) -> StateDict:
    """Locate the state_dict inside ``obj``, a checkpoint loaded with weights_only.

    Args:
        obj: The unpickled checkpoint.
        state_dict_key: ``"auto"`` to choose, or the dotted path of the dict to use
            (``""`` for the root, ``"checkpoint.model"`` for a nested dict).

    Returns:
        The chosen dict's tensors with its path, the candidates and notes.

    Raises:
        NoTensorsError: No dict in ``obj`` holds a tensor.
        StateDictKeyError: ``state_dict_key`` names no dict, or a dict without tensors.
        LimitExceededError: The object has more than ``MAX_NODES`` values.

    Example:
        >>> find_state_dict({"epoch": 3, "state_dict": {"w": torch.zeros(2)}}).path
        'state_dict'
    """
    if not isinstance(obj, dict):
        raise NoTensorsError(_describe_non_dict(obj), found=type(obj).__name__)
    dicts, candidates, notes = _walk(obj)
    if not candidates:
        raise NoTensorsError(
            "No tensors found anywhere in the file. Top-level keys: "
            f"{_summarise_items(obj)}. Save model.state_dict() with torch.save."
        )
    if state_dict_key == AUTO:
        path = _choose(obj, candidates)
    else:
        path = state_dict_key
        if path not in dicts or not any(c.path == path for c in candidates):
            raise StateDictKeyError(
                f"state_dict_key {path!r} does not name a dict holding tensors. "
                f"Candidates: {_list_candidates(candidates)}.",
                candidates=[c.path for c in candidates],
            )
    chosen = dicts[path]
    if path:
        found = f"{len(candidates)} candidate{'s' if len(candidates) != 1 else ''} found"
        notes.append(f"Used the state_dict at {path!r} ({found}).")
    if path == "model" and obj.keys() >= YOLOX_KEYS:
        notes.append(
            "The file is laid out as YOLOX saves it: 'model' holds the EMA weights when the "
            "run used EMA (YOLOX's default, exp.ema = True), so there is no other copy to "
            "choose."
        )
    tensors, skip_notes = _split_tensors(chosen)
    return StateDict(path, tensors, tuple(candidates), tuple(notes + skip_notes))


def index_tensors(tensors: dict[str, torch.Tensor]) -> TensorIndex:
    """Turn tensors (real or on the meta device) into a ``TensorIndex``.

    Args:
        tensors: Key -> tensor, in the order to keep.

    Returns:
        The index of keys, shapes and dtype names (``float32``).
    """
    return TensorIndex.from_infos(
        [
            TensorInfo(key, tuple(int(s) for s in t.shape), str(t.dtype).removeprefix("torch."))
            for key, t in tensors.items()
        ]
    )


def require_keys(available: Collection[str], wanted: list[str]) -> None:
    """Raise one KeyError listing the wanted keys that are not available.

    Args:
        available: The keys present in the state_dict.
        wanted: The keys asked for.

    Raises:
        KeyError: Some keys are absent (the caller passed keys not taken from the index).
    """
    missing = [k for k in wanted if k not in available]
    if missing:
        raise KeyError(f"{len(missing)} keys not in the state_dict, e.g. {missing[:5]}")


def _walk(
    root: dict[Any, Any],
) -> tuple[dict[str, dict[Any, Any]], list[StateDictCandidate], list[str]]:
    """Breadth-first, iterative walk through string-keyed nested dicts."""
    dicts: dict[str, dict[Any, Any]] = {}
    candidates: list[StateDictCandidate] = []
    notes: list[str] = []
    seen: set[int] = set()
    queue: deque[tuple[str, dict[Any, Any], int]] = deque([("", root, 0)])
    nodes = 0
    while queue:
        path, node, depth = queue.popleft()
        if id(node) in seen or path in dicts:
            continue  # a pickle may share or cycle its dicts
        seen.add(id(node))
        dicts[path] = node
        count = 0
        for key, value in node.items():
            nodes += 1
            if nodes > MAX_NODES:
                raise LimitExceededError(
                    f"The checkpoint holds more than {MAX_NODES} nested values.",
                    limit="max_nodes",
                    value=MAX_NODES,
                )
            if isinstance(value, torch.Tensor):
                count += 1
            elif isinstance(value, dict) and isinstance(key, str):
                if depth + 1 > MAX_DEPTH:
                    if not any(n.startswith("Dicts nested deeper") for n in notes):
                        notes.append(f"Dicts nested deeper than {MAX_DEPTH} levels were skipped.")
                    continue
                queue.append((f"{path}.{key}" if path else key, value, depth + 1))
        if count:
            candidates.append(StateDictCandidate(path, count))
    return dicts, candidates, notes


def _choose(root: dict[Any, Any], candidates: list[StateDictCandidate]) -> str:
    if root and all(isinstance(v, torch.Tensor) for v in root.values()):
        return ""
    for preferred in PREFERRED_KEYS:
        matches = [c for c in candidates if c.path.rsplit(".", 1)[-1] == preferred]
        if matches:
            return min(matches, key=lambda c: c.path.count(".")).path
    return max(candidates, key=lambda c: c.tensor_count).path


def _split_tensors(chosen: dict[Any, Any]) -> tuple[dict[str, torch.Tensor], list[str]]:
    tensors: dict[str, torch.Tensor] = {}
    bad_keys: list[object] = []
    non_tensors: Counter[str] = Counter()
    examples: list[str] = []
    for key, value in chosen.items():
        if not isinstance(key, str):
            bad_keys.append(key)
        elif isinstance(value, torch.Tensor):
            tensors[key] = value
        else:
            non_tensors[type(value).__name__] += 1
            if len(examples) < 3:
                examples.append(_short_repr(key))
    notes: list[str] = []
    if bad_keys:
        shown = ", ".join(_short_repr(k) for k in bad_keys[:3])
        notes.append(f"Skipped {len(bad_keys)} entries with non-string keys (e.g. {shown}).")
    if non_tensors:
        kinds = ", ".join(f"{n} {kind}" for kind, n in non_tensors.most_common())
        notes.append(
            f"Skipped {non_tensors.total()} non-tensor values ({kinds}; "
            f"e.g. {', '.join(examples)})."
        )
    return tensors, notes


def _describe_non_dict(obj: object) -> str:
    if isinstance(obj, torch.Tensor):
        return (
            f"The file holds a single tensor (shape {list(obj.shape)}), not a state_dict. "
            "Save a dict of named tensors, e.g. torch.save(model.state_dict(), path)."
        )
    if isinstance(obj, list | tuple):
        return (
            f"The file holds a {type(obj).__name__} of {len(obj)} items, not a dict of named "
            "tensors. Save model.state_dict() with torch.save."
        )
    return (
        f"The file holds a {type(obj).__name__}, not a dict of named tensors. "
        "Save model.state_dict() with torch.save."
    )


def _summarise_items(obj: dict[Any, Any]) -> str:
    items = [f"{_short_repr(k)} ({type(v).__name__})" for k, v in list(obj.items())[:_MAX_LISTED]]
    more = f" and {len(obj) - _MAX_LISTED} more" if len(obj) > _MAX_LISTED else ""
    return (", ".join(items) + more) if items else "none (empty dict)"


def _list_candidates(candidates: list[StateDictCandidate]) -> str:
    shown = [f"{c.path!r} ({c.tensor_count} tensors)" for c in candidates[:_MAX_LISTED]]
    more = f" and {len(candidates) - _MAX_LISTED} more" if len(candidates) > _MAX_LISTED else ""
    return ", ".join(shown) + more


def _short_repr(value: object, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
