"""Load torch.save checkpoints (zip and legacy) with weights_only=True, never unsafely.

What both torch formats share (``torch_zip`` and ``torch_legacy`` are their readers).

Every load runs torch's own weights_only unpickler, after the guards; around it, the
service's allowlist of plain data (``allowlist``) when the file uses it, and the rewrite of
protocol 3 to 5 pickles into opcodes that unpickler reads (``framing``).
"""

from __future__ import annotations

import pickle
import pickletools
import re
import sys
import warnings
import zipfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

from app.errors import AppError, CorruptCheckpointError, UnsafeCheckpointError
from app.readers import framing
from app.readers.guards import allowlist
from app.readers.guards.torch_file import guard_torch_file, unsafe_error
from app.readers.guards.zip_archive import check_zip, stored_byteorder
from app.readers.lazy import SpanSource
from app.readers.limits import MAX_TENSORS_DEFAULT, check_tensor_count, current_limits
from app.readers.sniff import CheckpointFormat
from app.readers.state_dict import AUTO, find_state_dict, index_tensors, require_keys
from app.tensors import CheckpointIndex, Safety, TensorIndex

_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_GLOBAL = re.compile(r"GLOBAL ([A-Za-z_][\w.]*)")
_OPERAND = re.compile(r"Unsupported operand (\d+)")
_MAX_GLOBALS = 10


def read_index(
    path: Path,
    *,
    fmt: CheckpointFormat,
    state_dict_key: str = AUTO,
    max_tensors: int = MAX_TENSORS_DEFAULT,
) -> CheckpointIndex:
    """Index a torch.save checkpoint without reading tensor bytes (tensors load on meta).

    Args:
        path: The checkpoint file.
        fmt: ``TORCH_ZIP`` or ``TORCH_LEGACY`` (from ``sniff_format``).
        state_dict_key: ``"auto"`` or the dotted path of the dict to use.
        max_tensors: The most tensors the chosen state_dict may hold.

    Returns:
        The index of the chosen state_dict, its path, the candidates and notes.

    Raises:
        UnsafeCheckpointError: The file needs globals that weights_only loading refuses.
        CorruptCheckpointError: The file cannot be unpickled.
        NoTensorsError, StateDictKeyError, LimitExceededError: See ``find_state_dict``.
    """
    obj, safety = load_guarded(path, map_location="meta", mmap=False)
    found = find_state_dict(obj, state_dict_key=state_dict_key)
    check_tensor_count(len(found.tensors), max_tensors=max_tensors)
    candidate_indexes: dict[str, TensorIndex] = {}
    if state_dict_key == AUTO and len(found.candidates) > 1:
        # Every candidate is indexed (on meta, so cheap) for matching to score them.
        for candidate in found.candidates:
            if candidate.tensor_count <= max_tensors:
                tensors = find_state_dict(obj, state_dict_key=candidate.path).tensors
                candidate_indexes[candidate.path] = index_tensors(tensors)
    return CheckpointIndex(
        format=fmt.value,
        index=index_tensors(found.tensors),
        state_dict_path=found.path,
        candidates=found.candidates,
        notes=found.notes,
        candidate_indexes=candidate_indexes,
        safety=safety,
    )


def load_tensors(
    path: Path,
    keys: Iterable[str],
    *,
    fmt: CheckpointFormat,
    state_dict_path: str = "",
) -> dict[str, torch.Tensor]:
    """Load the given tensors of the state_dict at ``state_dict_path`` onto the CPU.

    Zip checkpoints are memory-mapped so only the touched tensors are paged in; the legacy
    format cannot be mapped and is read whole.

    Args:
        path: The checkpoint file.
        keys: The state_dict keys to return.
        fmt: ``TORCH_ZIP`` or ``TORCH_LEGACY``.
        state_dict_path: The dotted path chosen by ``read_index`` ("" = root).

    Returns:
        Key -> CPU tensor, in the order of ``keys``.

    Raises:
        KeyError: A key is not in the state_dict (the caller passed keys not from its index).
        UnsafeCheckpointError, CorruptCheckpointError, StateDictKeyError: As for ``read_index``.
    """
    obj, _safety = load_guarded(path, map_location="cpu", mmap=fmt is CheckpointFormat.TORCH_ZIP)
    found = find_state_dict(obj, state_dict_key=state_dict_path)
    wanted = list(keys)
    require_keys(found.tensors, wanted)
    return {k: found.tensors[k] for k in wanted}


def loaded_source(path: Path, *, state_dict_path: str = "") -> SpanSource:
    """A tensor source over the whole state_dict loaded on the CPU, for files without spans.

    Raises:
        UnsafeCheckpointError, CorruptCheckpointError, StateDictKeyError: As for ``read_index``.
    """
    obj, _safety = load_guarded(path, map_location="cpu", mmap=False)
    return SpanSource({}, find_state_dict(obj, state_dict_key=state_dict_path).tensors)


# The rebuilder of torch.ao quantized tensors (qint8/quint8 with their scales in the pickle).
_QTENSOR_REBUILDER = "torch._utils._rebuild_qtensor"


def load_guarded(path: Path, *, map_location: str, mmap: bool) -> tuple[object, Safety]:
    """``torch.load(weights_only=True)`` after the guards: how this package loads any pickle.

    Raises the reader's problems (corrupt, unsafe, over a limit), never torch's exceptions.
    """
    # The zip layout, the pickle's imports and size, and the declared storage sizes are
    # checked before torch sees the file (see torch_guard); the listing goes in the report.
    safety = guard_torch_file(path)
    if map_location == "meta" and not _in_machine_order(path, safety):
        # torch 2.14 byteswaps the meta storages of an other-endian zip and crashes the
        # process (SIGSEGV): read such a file on the CPU, as the legacy format is read.
        map_location, mmap = "cpu", False
    if map_location == "meta" and _QTENSOR_REBUILDER in safety.pickle_globals:
        # torch.ao quantized tensors cannot be made on meta (NotImplementedError, which read
        # as a damaged file): map them on the CPU, paged in only when touched.
        map_location = "cpu"
    with (
        allowlist.allowing(safety.allowed_globals),
        framing.reading_protocol_4(),
        _load_errors(),
        warnings.catch_warnings(),
    ):
        # torch's own deprecation notes while it rebuilds tensors (quantized tensors, typed
        # storages) say nothing about the file: they are not the file's errors.
        warnings.filterwarnings("ignore", category=UserWarning, module=r"torch(\.|$)")
        # weights_only=True always: uploads are hostile and there is no unsafe fallback.
        obj = torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    return obj, safety


def _in_machine_order(path: Path, safety: Safety) -> bool:
    """False for a zip whose byteorder record (found as torch finds it) is not ours."""
    if safety.format != CheckpointFormat.TORCH_ZIP.value:
        return True  # the legacy format is never byteswapped on meta
    records = check_zip(path, max_entries=current_limits().max_zip_entries)
    return stored_byteorder(path, records) == sys.byteorder


@contextmanager
def _load_errors() -> Iterator[None]:
    """Map every failure of torch.load to an AppError whose detail holds no path."""
    try:
        yield
    except (AppError, FileNotFoundError, MemoryError):
        raise
    except Exception as exc:
        message = _ANSI.sub("", str(exc))
        if isinstance(exc, pickle.UnpicklingError | RuntimeError) and (
            "Weights only load failed" in message or "Unsupported global" in message
        ):
            raise _unsafe(message) from None
        raise CorruptCheckpointError(_corrupt_detail(exc)) from None


def _unsafe(message: str) -> UnsafeCheckpointError:
    names = list(dict.fromkeys(m.rstrip(".") for m in _GLOBAL.findall(message)))[:_MAX_GLOBALS]
    operand = _OPERAND.search(message)
    if not names and operand is not None:
        # An opcode torch's reader lacks is not an object it refuses: say which it is.
        code = chr(int(operand.group(1)))
        name = next((op.name for op in pickletools.opcodes if op.code == code), f"#{ord(code)}")
        return framing.unreadable_opcode_error(name)
    return unsafe_error(names)


def _corrupt_detail(exc: Exception) -> str:
    if isinstance(exc, EOFError):
        reason = "it ends early (truncated)"
    elif isinstance(exc, zipfile.BadZipFile):
        reason = "its zip structure is damaged"
    else:
        reason = f"unpickling failed ({type(exc).__name__})"
    return f"The checkpoint could not be read: {reason}. Upload the file again."
