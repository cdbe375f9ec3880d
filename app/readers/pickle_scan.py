"""List what a pickle would import and build, from its opcodes alone: nothing is executed.

Like the Hugging Face Hub's "Detected Pickle imports" (and picklescan, modelscan), this reads
the opcode stream with ``pickletools.genops``; unlike a plain opcode grep it keeps a symbolic
stack, so ``STACK_GLOBAL`` names built from memoised strings are resolved, the persistent
ids (storage declarations) are read back, and the nesting depth and the size the pickle
expands to (counting shared references again: a memo bomb) are bounded as it goes.
"""

from __future__ import annotations

import io
import pickletools
from _compat_pickle import IMPORT_MAPPING, NAME_MAPPING
from dataclasses import dataclass, field
from typing import Any

from app.errors import AppError, CorruptCheckpointError
from app.readers.limits import ReadLimits, limit_error

UNRESOLVED = "<unresolved>"


class _Mark:
    """The MARK sentinel on the symbolic stack."""


_MARK = _Mark()


@dataclass(eq=False, slots=True)
class _Value:
    """A symbolic value: a constant when known, its nesting depth and expanded size."""

    const: Any = None
    is_global: bool = False
    depth: int = 0
    size: int = 1


TENSOR_REBUILDERS = frozenset({"torch._utils._rebuild_tensor", "torch._utils._rebuild_tensor_v2"})


@dataclass(frozen=True, slots=True)
class StorageRef:
    """A storage the pickle loads by persistent id (``pid`` as in ``persistent_ids``)."""

    pid: tuple[Any, ...]


@dataclass(frozen=True, slots=True)
class PickleScan:
    """What a pickle references, found without executing it.

    Attributes:
        globals: Every ``module.name`` it imports (GLOBAL, STACK_GLOBAL, INST), first seen
            first; ``<unresolved>`` when a name is computed at load time.
        persistent_ids: Each persistent id whose parts are all constants, as a tuple
            (globals appear as their dotted name), e.g. ``("storage", "torch.FloatStorage",
            "0", "cpu", 3)``.
        tensors: The argument tuples of each ``_rebuild_tensor``/``_rebuild_tensor_v2`` call
            (storage as a ``StorageRef``, offset, size, stride, ...), constants where known.
        end: Offset just past the STOP opcode.
    """

    globals: tuple[str, ...]
    persistent_ids: tuple[tuple[Any, ...], ...]
    tensors: tuple[tuple[Any, ...], ...]
    end: int


@dataclass(slots=True)
class _State:
    limits: ReadLimits
    stack: list[_Value | _Mark] = field(default_factory=list)
    memo: dict[int, _Value | _Mark] = field(default_factory=dict)
    globals: dict[str, None] = field(default_factory=dict)
    pids: list[tuple[Any, ...]] = field(default_factory=list)
    tensors: list[tuple[Any, ...]] = field(default_factory=list)


def scan_pickle(stream: io.BytesIO, *, limits: ReadLimits) -> PickleScan:
    """Scan one pickle from the stream's position up to its STOP opcode.

    Args:
        stream: Positioned at the pickle; left just past its STOP.
        limits: ``max_depth`` and ``max_pickle_nodes`` are enforced here.

    Returns:
        The globals and persistent ids of the pickle.

    Raises:
        CorruptCheckpointError: The opcode stream is malformed or truncated.
        LimitExceededError: The pickle nests deeper or expands further than allowed.

    Example:
        >>> import pickle, os
        >>> scan_pickle(io.BytesIO(pickle.dumps(os.system, 0)), limits=ReadLimits()).globals
        ('posix.system',)
    """
    state = _State(limits)
    try:
        for opcode, arg, _pos in pickletools.genops(stream):
            if opcode.name == "STOP":
                return PickleScan(
                    tuple(state.globals), tuple(state.pids), tuple(state.tensors), stream.tell()
                )
            _step(state, opcode, arg)
    except AppError:
        raise
    except (ValueError, IndexError, KeyError, TypeError, UnicodeError):
        pass
    raise CorruptCheckpointError(
        "The checkpoint could not be read: its pickle stream is malformed or truncated. "
        "Upload the file again."
    )


def _step(state: _State, opcode: pickletools.OpcodeInfo, arg: Any) -> None:
    name = opcode.name
    handler = _HANDLERS.get(name)
    if handler is not None:
        handler(state, arg)
    elif not opcode.stack_before and len(opcode.stack_after) == 1 and name not in _SPECIAL:
        state.stack.append(_Value(const=arg))  # a constant: string, number, bytes, None...
    else:
        _generic(state, opcode)


def _generic(state: _State, opcode: pickletools.OpcodeInfo) -> None:
    """Any other opcode: pop what it consumes, push one opaque value built from it."""
    popped: list[_Value] = []
    for before in reversed(opcode.stack_before):
        if before is pickletools.markobject:
            popped += _pop_mark(state)
        elif before is pickletools.stackslice:
            continue
        else:
            popped.append(_pop(state))
    for _ in opcode.stack_after:
        state.stack.append(_build(state, popped))


def _pop(state: _State) -> _Value:
    value = state.stack.pop()
    if isinstance(value, _Mark):
        raise ValueError("unexpected MARK")
    return value


def _pop_mark(state: _State) -> list[_Value]:
    items: list[_Value] = []
    while True:
        value = state.stack.pop()
        if isinstance(value, _Mark):
            items.reverse()
            return items
        items.append(value)


def _build(state: _State, children: list[_Value], *, const: Any = None) -> _Value:
    value = _Value(const=const)
    for child in children:
        _adopt(state, value, child)
    return value


def _adopt(state: _State, parent: _Value, child: _Value) -> None:
    """Account ``child`` inside ``parent``: depth and expanded size, checked on the way."""
    parent.depth = max(parent.depth, child.depth + 1)
    parent.size += child.size
    limits = state.limits
    if parent.depth > limits.max_depth:
        raise limit_error(
            f"The pickle nests containers more than {limits.max_depth} levels deep.",
            limit="max_depth",
            value=limits.max_depth,
        )
    if parent.size > limits.max_pickle_nodes:
        raise limit_error(
            "The pickle expands to more values than allowed (shared references counted "
            "each time: a memo bomb?).",
            limit="max_pickle_nodes",
            value=limits.max_pickle_nodes,
        )


def _global(state: _State, module: Any, name: Any) -> None:
    if isinstance(module, str) and isinstance(name, str):
        # Python 2 names, as pickle (fix_imports) and torch's unpickler rename them.
        if (module, name) in NAME_MAPPING:
            module, name = NAME_MAPPING[(module, name)]
        elif module in IMPORT_MAPPING:
            module = IMPORT_MAPPING[module]
        dotted = f"{module}.{name}"
    else:
        dotted = UNRESOLVED
    state.globals.setdefault(dotted, None)
    state.stack.append(_Value(const=dotted, is_global=True))


def _op_global(state: _State, arg: Any) -> None:
    module, _, name = str(arg).partition(" ")
    _global(state, module, name)


def _op_stack_global(state: _State, _arg: Any) -> None:
    name, module = _pop(state), _pop(state)
    _global(state, _plain(module), _plain(name))


def _plain(value: _Value) -> Any:
    return None if value.is_global else value.const


def _op_inst(state: _State, arg: Any) -> None:
    args = _pop_mark(state)
    _op_global(state, arg)
    cls = _pop(state)
    state.stack.append(_build(state, [cls, *args]))


def _op_mark(state: _State, _arg: Any) -> None:
    state.stack.append(_MARK)


def _op_put(state: _State, arg: Any) -> None:
    state.memo[int(arg)] = state.stack[-1]


def _op_memoize(state: _State, _arg: Any) -> None:
    state.memo[len(state.memo)] = state.stack[-1]


def _op_get(state: _State, arg: Any) -> None:
    state.stack.append(state.memo[int(arg)])


def _op_tuple(state: _State, _arg: Any) -> None:
    items = _pop_mark(state)
    state.stack.append(_build(state, items, const=_tuple_const(items)))


def _op_tuple_n(count: int) -> Any:
    def handler(state: _State, _arg: Any) -> None:
        items = [_pop(state) for _ in range(count)][::-1]
        state.stack.append(_build(state, items, const=_tuple_const(items)))

    return handler


def _tuple_const(items: list[_Value]) -> tuple[Any, ...]:
    return tuple(item.const for item in items)


def _op_append(state: _State, _arg: Any) -> None:
    item = _pop(state)
    _adopt(state, _top(state), item)


def _op_extend(state: _State, _arg: Any) -> None:
    items = _pop_mark(state)
    target = _top(state)
    for item in items:
        _adopt(state, target, item)


def _op_setitem(state: _State, _arg: Any) -> None:
    value, key = _pop(state), _pop(state)
    target = _top(state)
    _adopt(state, target, key)
    _adopt(state, target, value)


def _op_pop(state: _State, _arg: Any) -> None:
    state.stack.pop()


def _op_pop_mark(state: _State, _arg: Any) -> None:
    _pop_mark(state)


def _op_dup(state: _State, _arg: Any) -> None:
    state.stack.append(state.stack[-1])


def _op_binpersid(state: _State, _arg: Any) -> None:
    pid = _pop(state)
    storage = _build(state, [pid])
    if isinstance(pid.const, tuple):
        state.pids.append(pid.const)
        storage.const = StorageRef(pid.const)
    state.stack.append(storage)


def _op_reduce(state: _State, _arg: Any) -> None:
    args, fn = _pop(state), _pop(state)
    if fn.is_global and fn.const in TENSOR_REBUILDERS and isinstance(args.const, tuple):
        state.tensors.append(args.const)
    state.stack.append(_build(state, [fn, args]))


def _op_persid(state: _State, arg: Any) -> None:
    state.pids.append((arg,))
    state.stack.append(_Value())


def _op_ext(state: _State, _arg: Any) -> None:
    state.globals.setdefault(UNRESOLVED, None)  # the copyreg extension registry
    state.stack.append(_Value(const=UNRESOLVED, is_global=True))


def _op_ignore(_state: _State, _arg: Any) -> None:
    return None


def _top(state: _State) -> _Value:
    value = state.stack[-1]
    if isinstance(value, _Mark):
        raise ValueError("unexpected MARK")
    return value


_HANDLERS: dict[str, Any] = {
    "GLOBAL": _op_global,
    "STACK_GLOBAL": _op_stack_global,
    "INST": _op_inst,
    "MARK": _op_mark,
    "PUT": _op_put,
    "BINPUT": _op_put,
    "LONG_BINPUT": _op_put,
    "MEMOIZE": _op_memoize,
    "GET": _op_get,
    "BINGET": _op_get,
    "LONG_BINGET": _op_get,
    "TUPLE": _op_tuple,
    "EMPTY_TUPLE": _op_tuple_n(0),
    "TUPLE1": _op_tuple_n(1),
    "TUPLE2": _op_tuple_n(2),
    "TUPLE3": _op_tuple_n(3),
    "APPEND": _op_append,
    "APPENDS": _op_extend,
    "ADDITEMS": _op_extend,
    "SETITEM": _op_setitem,
    "SETITEMS": lambda state, _arg: _op_setitems(state),
    "POP": _op_pop,
    "POP_MARK": _op_pop_mark,
    "DUP": _op_dup,
    "BINPERSID": _op_binpersid,
    "REDUCE": _op_reduce,
    "PERSID": _op_persid,
    "EXT1": _op_ext,
    "EXT2": _op_ext,
    "EXT4": _op_ext,
    "PROTO": _op_ignore,
    "FRAME": _op_ignore,
}
_SPECIAL = frozenset({"NEXT_BUFFER", "READONLY_BUFFER"})


def _op_setitems(state: _State) -> None:
    items = _pop_mark(state)
    if len(items) % 2:
        raise ValueError("odd SETITEMS")
    target = _top(state)
    for item in items:
        _adopt(state, target, item)
