"""List what a pickle would import and build, from its opcodes alone: nothing is executed.

Like the Hugging Face Hub's "Detected Pickle imports" (and picklescan, modelscan), this reads
the opcode stream with ``pickletools.genops``; unlike a plain opcode grep it keeps a symbolic
stack, so ``STACK_GLOBAL`` names built from memoised strings are resolved, the persistent
ids (storage declarations) are read back, and the nesting depth and the size the pickle
expands to (counting shared references again: a memo bomb) are bounded as it goes. Every
view of a storage the pickle asks torch to make is collected, whichever way it is asked
(a rebuilder, ``_rebuild_from_type_v2`` around one, BUILD on a tensor), for the guard to
bound it by its storage. Calls of other globals and BUILDs on the objects they make are
collected too, so the allowlist (``allowlist``) can admit only the plain forms its entries
are written in.
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
    """A symbolic value: a constant when known, its nesting depth and expanded size.

    ``origin`` is the opcode that made it, which tells a dict (``EMPTY_DICT``) from a list
    when neither has a constant.
    """

    const: Any = None
    is_global: bool = False
    depth: int = 0
    size: int = 1
    origin: str = ""
    made_by: str | None = None  # the global whose call made it (REDUCE, NEWOBJ, then BUILD)
    built: bool = False  # a BUILD has already set its state


# Every tensor rebuilder torch's weights_only unpickler accepts (tests/security/
# test_rebuilders.py checks this against torch itself). Those that view a storage take
# (storage, storage_offset, size, stride) first; the value is the position of an explicit
# dtype argument (v3 views a storage as any dtype), None when the storage's own dtype is used.
STORAGE_REBUILDERS: dict[str, int | None] = {
    "torch._utils._rebuild_tensor": None,
    "torch._utils._rebuild_tensor_v2": None,
    "torch._utils._rebuild_tensor_v3": 6,
    "torch._utils._rebuild_qtensor": None,
}
# These view no storage themselves: they wrap tensors that a rebuilder above made (and the
# guard bounded), make tensors without data (meta, wrapper subclasses), are bounds-checked
# by torch against the tensors they are given (sparse, nested), or need numpy arrays that
# weights_only refuses.
WRAPPING_REBUILDERS = frozenset(
    {
        "torch._utils._rebuild_parameter",
        "torch._utils._rebuild_parameter_with_state",
        "torch._utils._rebuild_sparse_tensor",
        "torch._utils._rebuild_nested_tensor",
        "torch._utils._rebuild_meta_tensor_no_storage",
        "torch._utils._rebuild_wrapper_subclass",
        "torch._utils._rebuild_device_tensor_from_numpy",
        "torch._utils._rebuild_device_tensor_from_cpu_tensor",
    }
)
# ``_rebuild_from_type_v2(func, new_type, args, state)`` calls ``func(*args)``: the call
# inside is collected as if the pickle made it directly.
REBUILD_FROM_TYPE = "torch._tensor._rebuild_from_type_v2"
KNOWN_REBUILDERS = frozenset({*STORAGE_REBUILDERS, *WRAPPING_REBUILDERS, REBUILD_FROM_TYPE})
_DICT_OR_NONE = frozenset({"EMPTY_DICT", "DICT", "NONE"})  # BUILD states that set attributes


@dataclass(frozen=True, slots=True)
class StorageRef:
    """A storage the pickle loads by persistent id (``pid`` as in ``persistent_ids``)."""

    pid: tuple[Any, ...]


@dataclass(frozen=True, slots=True)
class TensorView:
    """A view of a storage the pickle asks torch to make, constants where known.

    Attributes:
        via: What makes it: a rebuilder's dotted name, or ``BUILD`` (``Tensor.set_``).
        storage: A ``StorageRef`` for a storage of the file; anything else is not one.
        offset: The storage offset, in elements of the view's dtype.
        size: The shape.
        stride: The strides, in elements.
        dtype: The dotted name of an explicit dtype (``torch.float64``), None when the view
            has its storage's dtype.
    """

    via: str
    storage: Any = None
    offset: Any = None
    size: Any = None
    stride: Any = None
    dtype: Any = None


@dataclass(frozen=True, slots=True)
class GlobalCall:
    """A call of a global that is not a tensor rebuilder, as torch would make it.

    Attributes:
        name: The global's dotted name.
        args: The arguments' constants (None where one is not a constant).
        wrapped: True when ``_rebuild_from_type_v2`` makes the call (with a state to set).
    """

    name: str
    args: Any
    wrapped: bool = False


@dataclass(frozen=True, slots=True)
class BuildSite:
    """A BUILD on an object a call of a global made.

    Attributes:
        target: The dotted name of the global that made the object.
        state: The state's constant (None where not constant).
        state_origin: The opcode that made the state (``EMPTY_DICT``, ``TUPLE``...).
        again: True when the object had been built before (its state set twice).
    """

    target: str
    state: Any
    state_origin: str
    again: bool


@dataclass(frozen=True, slots=True)
class PickleScan:
    """What a pickle references, found without executing it.

    Attributes:
        globals: Every ``module.name`` it imports (GLOBAL, STACK_GLOBAL, INST), first seen
            first; ``<unresolved>`` when a name is computed at load time.
        persistent_ids: Each persistent id whose parts are all constants, as a tuple
            (globals appear as their dotted name), e.g. ``("storage", "torch.FloatStorage",
            "0", "cpu", 3)``.
        tensors: Every view of a storage it asks for (see ``TensorView``); one whose
            arguments are not constants has None fields.
        calls: Every global it calls with arguments (REDUCE, NEWOBJ), first seen first.
        end: Offset just past the STOP opcode.
        object_calls: Every call of a global other than a tensor rebuilder, in order.
        builds: Every BUILD on an object that a call of a global made, in order.
    """

    globals: tuple[str, ...]
    persistent_ids: tuple[tuple[Any, ...], ...]
    tensors: tuple[TensorView, ...]
    calls: tuple[str, ...]
    end: int
    object_calls: tuple[GlobalCall, ...] = ()
    builds: tuple[BuildSite, ...] = ()


@dataclass(slots=True)
class _State:
    limits: ReadLimits
    stack: list[_Value | _Mark] = field(default_factory=list)
    memo: dict[int, _Value | _Mark] = field(default_factory=dict)
    globals: dict[str, None] = field(default_factory=dict)
    pids: list[tuple[Any, ...]] = field(default_factory=list)
    tensors: list[TensorView] = field(default_factory=list)
    calls: dict[str, None] = field(default_factory=dict)
    object_calls: list[GlobalCall] = field(default_factory=list)
    builds: list[BuildSite] = field(default_factory=list)


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
                    tuple(state.globals),
                    tuple(state.pids),
                    tuple(state.tensors),
                    tuple(state.calls),
                    stream.tell(),
                    tuple(state.object_calls),
                    tuple(state.builds),
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
        state.stack.append(_Value(const=arg, origin=name))  # a string, number, None, {}...
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
        value = _build(state, popped)
        value.origin = opcode.name
        state.stack.append(value)


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
    _call(state, fn, args)
    state.stack.append(_made(state, fn, args))


def _op_newobj(state: _State, _arg: Any) -> None:
    args, cls = _pop(state), _pop(state)
    _call(state, cls, args)
    state.stack.append(_made(state, cls, args))


def _made(state: _State, fn: _Value, args: _Value) -> _Value:
    value = _build(state, [fn, args])
    value.made_by = fn.const if fn.is_global else None
    return value


def _call(state: _State, fn: _Value, args: _Value) -> None:
    """Note a call of a global; collect the view it makes when it is a rebuilder."""
    if not fn.is_global:
        return
    if args.const != ():
        state.calls.setdefault(fn.const, None)
    name, arguments, wrapped = fn.const, args.const, False
    # Unwrap _rebuild_from_type_v2(func, new_type, args, state), however deeply nested.
    while name == REBUILD_FROM_TYPE:
        if not (isinstance(arguments, tuple) and len(arguments) == 4):
            state.tensors.append(TensorView(REBUILD_FROM_TYPE))  # cannot tell what it calls
            return
        name, arguments, wrapped = arguments[0], arguments[2], True
    if name in STORAGE_REBUILDERS:
        state.tensors.append(_view(name, arguments, STORAGE_REBUILDERS[name]))
    elif isinstance(name, str) and name not in KNOWN_REBUILDERS:
        state.object_calls.append(GlobalCall(name, arguments, wrapped))


def _view(via: str, arguments: Any, dtype_at: int | None) -> TensorView:
    """The view a rebuilder's (or ``set_``'s) arguments describe; empty when not constants.

    ``func(*args)`` accepts any iterable, so arguments that are not a tuple (a list, a set,
    a dict's keys) are not read: the view stays empty and the guard refuses it.
    """
    needed = 4 if dtype_at is None else dtype_at + 1
    if not isinstance(arguments, tuple) or len(arguments) < needed:
        return TensorView(via)
    storage, offset, size, stride = arguments[:4]
    dtype = arguments[dtype_at] if dtype_at is not None else None
    return TensorView(via, storage, offset, size, stride, dtype)


def _op_build(state: _State, _arg: Any) -> None:
    # BUILD on a tensor or a Parameter runs ``set_(*state)``: a view like a rebuilder's.
    # torch.save only ever builds attributes from a dict; anything else is collected.
    build_state, inst = _pop(state), _pop(state)
    const = build_state.const
    if build_state.origin not in _DICT_OR_NONE and not (
        isinstance(const, tuple) and len(const) != 4
    ):
        state.tensors.append(_view("BUILD", const, None))
    if inst.made_by is not None:
        state.builds.append(BuildSite(inst.made_by, const, build_state.origin, inst.built))
    built = _build(state, [inst, build_state])
    built.made_by, built.built, inst.built = inst.made_by, True, True
    state.stack.append(built)


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
    "NEWOBJ": _op_newobj,
    "BUILD": _op_build,
    "PERSID": _op_persid,
    "EXT1": _op_ext,
    "EXT2": _op_ext,
    "EXT4": _op_ext,
    "NEWTRUE": lambda state, _arg: state.stack.append(_Value(const=True, origin="NEWTRUE")),
    "NEWFALSE": lambda state, _arg: state.stack.append(_Value(const=False, origin="NEWFALSE")),
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
