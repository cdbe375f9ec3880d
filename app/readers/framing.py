"""Let torch's weights_only unpickler read pickles written with protocol 4 or 5.

``torch.save(..., pickle_protocol=4)`` (and any file re-saved by code that asks for the
highest protocol) writes opcodes that torch's weights_only unpickler does not know: it stops
at ``FRAME`` (torch 2.14), and past it at ``SHORT_BINUNICODE``, ``MEMOIZE`` and
``STACK_GLOBAL``, so stripping ``FRAME`` alone does not make such a file load. None of these
opcodes carries an object; each has a protocol 2 equivalent that torch's unpickler reads:

- ``FRAME`` (a length prefix for buffered reading) is dropped;
- ``SHORT_BINUNICODE`` and ``BINUNICODE8`` become ``BINUNICODE`` (the same string);
- ``MEMOIZE`` becomes ``BINPUT``/``LONG_BINPUT`` with the index it implies;
- ``SHORT_BINBYTES``, ``BINBYTES`` and ``BINBYTES8`` (protocol 3, a numpy scalar's bytes)
  become ``_codecs.encode(text, "latin1")``, as protocol 2 spells bytes (torch allows it);
- ``STACK_GLOBAL`` becomes ``GLOBAL module name``, the strings it pops taken from the
  opcodes that pushed them (which are dropped, and a memo slot holding one is re-read as
  the literal it holds).

The pickle has already passed the scanner (``torch_guard``), which resolves ``STACK_GLOBAL``
names the same way, so the translation changes how objects are spelled, never which. Any
other opcode torch's unpickler cannot read is refused here with its name, not sent to torch.
``reading_protocol_4`` installs the translation in front of torch's own unpickler for the
duration of a ``torch.load`` (a private API of torch, pinned by
``tests/readers/test_framing.py``); pickles of protocol 2 and older pass through untouched.
"""

from __future__ import annotations

import io
import pickletools
import struct
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from app.errors import AppError, CorruptCheckpointError, UnsafeCheckpointError
from app.readers.limits import current_limits, limit_error

# Every opcode torch's weights_only Unpickler.load reads (torch 2.10 to 2.14), by name.
TORCH_OPCODES = frozenset(
    {
        "APPEND",
        "APPENDS",
        "BINFLOAT",
        "BINGET",
        "BININT",
        "BININT1",
        "BININT2",
        "BINPERSID",
        "BINPUT",
        "BINUNICODE",
        "BUILD",
        "EMPTY_DICT",
        "EMPTY_LIST",
        "EMPTY_SET",
        "EMPTY_TUPLE",
        "GLOBAL",
        "LONG1",
        "LONG_BINGET",
        "LONG_BINPUT",
        "MARK",
        "NEWFALSE",
        "NEWOBJ",
        "NEWTRUE",
        "NONE",
        "PROTO",
        "REDUCE",
        "SETITEM",
        "SETITEMS",
        "SHORT_BINSTRING",
        "STOP",
        "TUPLE",
        "TUPLE1",
        "TUPLE2",
        "TUPLE3",
    }
)
_STRINGS = frozenset({"SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8"})
_PUTS = frozenset({"BINPUT", "LONG_BINPUT", "MEMOIZE"})
_GETS = frozenset({"BINGET", "LONG_BINGET"})
_BYTES = frozenset({"SHORT_BINBYTES", "BINBYTES", "BINBYTES8"})
_MAX_NAME = 1024  # characters of a module or global name
_MARK = object()
_PROTO = 0x80


@dataclass(slots=True)
class _Slot:
    """A memo slot: the string it holds (None for other values), where it is put and read."""

    text: str | None
    puts: list[int] = field(default_factory=list)
    gets: list[int] = field(default_factory=list)
    literal: bool = False  # its put was dropped: reads are written as the string itself


@dataclass(slots=True)
class _Str:
    """A string on the stack: the chunk that pushed it and the slots it was put in."""

    text: str
    chunk: int
    slots: list[_Slot] = field(default_factory=list)


@dataclass(slots=True)
class _Out:
    chunks: list[bytes | None] = field(default_factory=list)
    size: int = 0
    limit: int = 0

    def emit(self, chunk: bytes) -> int:
        self.chunks.append(chunk)
        self._grow(len(chunk))
        return len(self.chunks) - 1

    def replace(self, at: int, chunk: bytes | None) -> None:
        old = self.chunks[at]
        self.chunks[at] = chunk
        self._grow(len(chunk or b"") - len(old or b""))

    def _grow(self, by: int) -> None:
        self.size += by
        if self.size > self.limit:
            raise limit_error(
                "The checkpoint's pickle grows past the allowed size when it is rewritten "
                "for safe loading.",
                limit="max_pickle_bytes",
                value=self.limit // 2,
            )


def to_protocol_2(data: bytes, *, max_bytes: int) -> bytes:
    """Rewrite one pickle (up to its STOP) with the opcodes torch's weights_only reader knows.

    Args:
        data: The pickle.
        max_bytes: The largest pickle allowed; the rewrite may grow to twice that.

    Raises:
        UnsafeCheckpointError: The pickle uses an opcode torch's reader refuses.
        CorruptCheckpointError: The pickle is malformed, or a ``STACK_GLOBAL`` takes other
            than strings pushed by the pickle itself.
        LimitExceededError: The rewrite grows past twice ``max_bytes``.

    Example:
        >>> import pickle
        >>> to_protocol_2(pickle.dumps({"a": 1}, protocol=4), max_bytes=1000)
        b'\\x80\\x02}q\\x00X\\x01\\x00\\x00\\x00aq\\x01K\\x01s.'
    """
    out, stack, memo = _Out(limit=2 * max_bytes), list[Any](), dict[int, _Slot]()
    stream = io.BytesIO(data)
    try:
        for opcode, arg, pos in pickletools.genops(stream):
            # genops yields an opcode once it has read its argument: tell() is its end.
            _translate(out, stack, memo, opcode, arg, data[pos : stream.tell()])
    except AppError:
        raise
    except (ValueError, IndexError, KeyError, TypeError, UnicodeError) as exc:
        raise _malformed() from exc
    return b"".join(c for c in out.chunks if c)


def _translate(
    out: _Out,
    stack: list[Any],
    memo: dict[int, _Slot],
    opcode: pickletools.OpcodeInfo,
    arg: Any,
    raw: bytes,
) -> None:
    name = opcode.name
    if name == "PROTO":
        out.emit(b"\x80\x02")
    elif name == "FRAME":
        return
    elif name in _STRINGS:
        stack.append(_Str(arg, out.emit(_binunicode(arg))))
    elif name in _PUTS:
        _put(out, stack, memo, len(memo) if name == "MEMOIZE" else int(arg))
    elif name in _GETS:
        _get(out, stack, memo, int(arg), raw)
    elif name == "STACK_GLOBAL":
        _stack_global(out, stack)
    elif name in _BYTES:
        # _codecs.encode(text, "latin1"): GLOBAL, two strings, TUPLE2, REDUCE.
        latin1 = _binunicode(arg.decode("latin-1")) + _binunicode("latin1")
        out.emit(b"c_codecs\nencode\n" + latin1 + b"\x86R")
        stack.append(None)
    elif name not in TORCH_OPCODES:
        raise unreadable_opcode_error(name)
    else:
        _generic(stack, opcode)
        out.emit(raw)


def _binunicode(text: str) -> bytes:
    raw = text.encode("utf-8", "surrogatepass")
    return b"X" + struct.pack("<I", len(raw)) + raw


def _put(out: _Out, stack: list[Any], memo: dict[int, _Slot], index: int) -> None:
    if not stack or stack[-1] is _MARK:
        raise _malformed()
    top = stack[-1]
    slot = _Slot(top.text if isinstance(top, _Str) else None)
    op = b"q" + bytes([index]) if index < 256 else b"r" + struct.pack("<I", index)
    slot.puts.append(out.emit(op))
    if isinstance(top, _Str):
        top.slots.append(slot)
    memo[index] = slot


def _get(out: _Out, stack: list[Any], memo: dict[int, _Slot], index: int, raw: bytes) -> None:
    slot = memo.get(index)
    if slot is None:
        raise _malformed()
    if slot.text is None:
        out.emit(raw)
        stack.append(None)
        return
    chunk = out.emit(_binunicode(slot.text) if slot.literal else raw)
    slot.gets.append(chunk)
    stack.append(_Str(slot.text, chunk))


def _stack_global(out: _Out, stack: list[Any]) -> None:
    if len(stack) < 2:
        raise _malformed()
    name, module = stack.pop(), stack.pop()
    if not (isinstance(module, _Str) and isinstance(name, _Str)):
        raise CorruptCheckpointError(
            "The checkpoint's pickle names a global with values that are not strings it "
            "wrote (STACK_GLOBAL); it cannot be read safely."
        )
    for part in (module, name):
        if "\n" in part.text or not 0 < len(part.text) <= _MAX_NAME:
            raise _malformed()
        out.replace(part.chunk, None)
        for slot in part.slots:
            for at in slot.puts:
                out.replace(at, None)
            slot.literal = True
            for at in slot.gets:
                if out.chunks[at] is not None:
                    out.replace(at, _binunicode(part.text))
    out.emit(b"c" + f"{module.text}\n{name.text}\n".encode("utf-8", "surrogatepass"))
    stack.append(None)


def _generic(stack: list[Any], opcode: pickletools.OpcodeInfo) -> None:
    """Pop what the opcode consumes and push opaque values for what it makes."""
    try:
        for before in reversed(opcode.stack_before):
            if before is pickletools.markobject:
                while stack.pop() is not _MARK:
                    pass
            elif before is not pickletools.stackslice and stack.pop() is _MARK:
                raise _malformed()
    except IndexError:
        raise _malformed() from None
    for after in opcode.stack_after:
        stack.append(_MARK if after is pickletools.markobject else None)


def _malformed() -> CorruptCheckpointError:
    return CorruptCheckpointError(
        "The checkpoint could not be read: its pickle stream is malformed or truncated. "
        "Upload the file again."
    )


def unreadable_opcode_error(opcode: str) -> UnsafeCheckpointError:
    """The problem for a pickle opcode torch's weights_only reader lacks (no object refused)."""
    return UnsafeCheckpointError(
        f"The checkpoint's pickle uses the opcode {opcode}, which safe (weights_only) "
        "loading cannot read; it holds no objects that are refused. Save the state_dict "
        "again with torch.save and its default pickle protocol (2).",
        globals=[],
    )


def _protocol_2_stream(file: BinaryIO) -> BinaryIO:
    """``file`` itself for a pickle of protocol 2 or older; else its next pickle, rewritten.

    ``file`` is left just past the pickle's STOP, as torch's own unpickler leaves it (the
    legacy format reads its next pickle and then the storages from there).
    """
    start = file.tell()
    head = file.read(2)
    file.seek(start)
    if len(head) < 2 or head[0] != _PROTO or head[1] < 3:
        return file
    try:
        for opcode, _arg, _pos in pickletools.genops(file):
            if opcode.name == "STOP":
                break
    except (ValueError, IndexError, KeyError, TypeError, UnicodeError) as exc:
        raise _malformed() from exc
    end = file.tell()
    file.seek(start)
    data = file.read(end - start)
    return io.BytesIO(to_protocol_2(data, max_bytes=current_limits().max_pickle_bytes))


_lock = threading.Lock()
_active = 0
_original: Any = None


@contextmanager
def reading_protocol_4() -> Iterator[None]:
    """Within: torch's weights_only unpickler reads protocol 3 to 5 pickles (rewritten).

    torch builds its unpickler from ``torch._weights_only_unpickler.Unpickler`` at each
    load (``torch.serialization._load`` subclasses it; the legacy format's
    ``_weights_only_unpickler.load`` calls it), so that class is replaced by a subclass
    that rewrites the stream it is given, then restored. Nested and concurrent uses share
    one replacement.
    """
    global _active, _original
    from torch import _weights_only_unpickler as weights_only

    with _lock:
        if _active == 0:
            _original = weights_only.Unpickler
            weights_only.Unpickler = _translating(_original)  # type: ignore[misc,assignment]
        _active += 1
    try:
        yield
    finally:
        with _lock:
            _active -= 1
            if _active == 0:
                weights_only.Unpickler = _original  # type: ignore[misc]


def _translating(base: Any) -> type:
    class TranslatingUnpickler(base):  # type: ignore[misc]
        """torch's weights_only Unpickler, reading protocol 3 to 5 pickles rewritten."""

        def __init__(self, file: BinaryIO, *, encoding: str = "bytes") -> None:
            super().__init__(_protocol_2_stream(file), encoding=encoding)

    return TranslatingUnpickler
