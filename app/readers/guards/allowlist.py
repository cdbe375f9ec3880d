"""The few globals a checkpoint may import beyond torch's own weights_only allowlist.

Training scripts save more than weights: DINO, DeiT, ConvNeXt and timm's ``train.py`` put
their ``args`` (an ``argparse.Namespace``) in the checkpoint, pytorch/examples' imagenet
saves ``best_acc1``, which is often a numpy scalar. torch's weights_only unpickler refuses
both, so today such files are refused although they hold only plain data; timm allowlists
``argparse.Namespace`` for the same reason. This module is the one list of those extra
globals: the scanner (``torch_guard``) accepts their names, and ``allowing`` hands the same
entries to ``torch.serialization.safe_globals`` around the load.

Each entry is a constructor of plain data, and the scanner admits only the form its own
writer pickles (``check_uses``), because an allowlisted class is also something a hostile
pickle can call and BUILD:

- ``argparse.Namespace``: made by ``NEWOBJ`` with no arguments, its state set once from a
  dict (a second BUILD could call a ``__setstate__`` the first one stored; a
  ``(dict, slots)`` state would ``setattr`` anything, ``__class__`` included).
- ``numpy.dtype``: called exactly as numpy pickles it, ``dtype(code, False, True)``, for a
  bool, integer, float or complex code only (never ``O``, strings, voids or records), and its
  state set once to the plain ``(3, byteorder, None, None, None, -1, -1, 0)``: no fields,
  subarrays or object flags. ``copy=True`` keeps numpy's shared dtype singletons untouched.
- ``numpy.{core,_core}.multiarray.scalar``: numpy's scalar constructor (numpy 1 and 2
  names); with only plain dtypes above, it can only read a number from bytes.
- ``numpy.dtypes.*DType``: the classes of those dtypes, which torch checks before it BUILDs
  a dtype; numpy never pickles them by name, so a pickle may not call them.

No entry is used inside ``_rebuild_from_type_v2``, which would set attributes on it.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from typing import Any

from app.readers.guards.pickle_scan import PickleScan

NAMESPACE = "argparse.Namespace"
NUMPY_DTYPE = "numpy.dtype"
NUMPY_SCALARS = ("numpy.core.multiarray.scalar", "numpy._core.multiarray.scalar")
# numpy's codes for the plain dtypes, as ``numpy.dtype.__reduce__`` writes them.
NUMERIC_CODES = frozenset(
    {"b1", "i1", "u1", "i2", "u2", "i4", "u4", "i8", "u8", "f2", "f4", "f8", "c8", "c16"}
)
NUMPY_DTYPE_CLASSES = tuple(
    f"numpy.dtypes.{name}DType"
    for name in (
        "Bool",
        "Int8",
        "UInt8",
        "Int16",
        "UInt16",
        "Int32",
        "UInt32",
        "Int64",
        "UInt64",
        "Float16",
        "Float32",
        "Float64",
        "Complex64",
        "Complex128",
    )
)
ALLOWED_GLOBALS: tuple[str, ...] = (NAMESPACE, NUMPY_DTYPE, *NUMPY_SCALARS, *NUMPY_DTYPE_CLASSES)
_DICT_STATES = frozenset({"EMPTY_DICT", "DICT"})
_BYTE_ORDERS = frozenset({"<", ">", "|", "="})


def allowed_in(found: tuple[str, ...]) -> tuple[str, ...]:
    """The globals of ``found`` that this allowlist admits, in their order."""
    return tuple(name for name in found if name in ALLOWED_GLOBALS)


def check_uses(scan: PickleScan) -> str | None:
    """Why the pickle uses an allowlisted global as its writer never would, or None.

    Example:
        >>> import io, pickle, argparse
        >>> from app.readers.limits import ReadLimits
        >>> from app.readers.guards.pickle_scan import scan_pickle
        >>> data = pickle.dumps(argparse.Namespace(lr=0.1), protocol=2)
        >>> check_uses(scan_pickle(io.BytesIO(data), limits=ReadLimits())) is None
        True
    """
    for call in scan.object_calls:
        if call.name not in ALLOWED_GLOBALS:
            continue
        if call.wrapped:
            return f"{call.name} is made by _rebuild_from_type_v2"
        if call.name == NAMESPACE and call.args != ():
            return f"{NAMESPACE} is called with arguments"
        if call.name == NUMPY_DTYPE and not _plain_dtype_args(call.args):
            return f"{NUMPY_DTYPE} is called with {call.args!r:.80}, not a plain numeric dtype"
        if call.name in NUMPY_DTYPE_CLASSES:
            return f"{call.name} is called (numpy never pickles it by name)"
    for build in scan.builds:
        if build.target not in ALLOWED_GLOBALS:
            continue
        if build.again:
            return f"the state of {build.target} is set twice"
        if build.target == NAMESPACE and build.state_origin not in _DICT_STATES:
            return f"the state of {NAMESPACE} is not a dict"
        if build.target == NUMPY_DTYPE and not _plain_dtype_state(build.state):
            return f"{NUMPY_DTYPE} gets the state {build.state!r:.80}, not a plain one"
        if build.target not in (NAMESPACE, NUMPY_DTYPE):
            return f"{build.target} gets a state"
    return None


def _plain_dtype_args(args: Any) -> bool:
    return (
        isinstance(args, tuple)
        and len(args) == 3
        and args[0] in NUMERIC_CODES
        and args[1] is False
        and args[2] is True
    )


def _plain_dtype_state(state: Any) -> bool:
    return (
        isinstance(state, tuple)
        and len(state) == 8
        and state[0] == 3
        and state[1] in _BYTE_ORDERS
        and state[2:] == (None, None, None, -1, -1, 0)
    )


@cache
def torch_safe_globals() -> tuple[tuple[Any, str], ...]:
    """``(object, name)`` for each entry, as ``torch.serialization.safe_globals`` takes them.

    Entries whose module is missing (numpy not installed, or too old for ``numpy.dtypes``)
    are left out: torch then refuses them, as it did before.
    """
    found: list[tuple[Any, str]] = []
    for name in ALLOWED_GLOBALS:
        value = _resolve(name)
        if value is not None:
            found.append((value, name))
    return tuple(found)


def _resolve(name: str) -> Any:
    module, _, attr = name.rpartition(".")
    # numpy 2 moved numpy.core to numpy._core; importing the old name warns.
    candidates = [module.replace("numpy.core", "numpy._core", 1), module]
    for candidate in dict.fromkeys(candidates):
        try:
            return getattr(importlib.import_module(candidate), attr)
        except (ImportError, AttributeError):
            continue
    return None


@contextmanager
def allowing(used: tuple[str, ...]) -> Iterator[None]:
    """Let torch's weights_only unpickler build the allowlist's entries while it loads.

    Only when the scanner found one of them in the file (``used``): other loads run with
    torch's own allowlist alone, exactly as before.
    """
    if not used:
        yield
        return
    import torch

    with torch.serialization.safe_globals(list(torch_safe_globals())):
        yield
