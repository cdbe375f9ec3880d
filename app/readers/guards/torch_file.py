"""Vet a torch.save file before ``torch.load`` sees it, and list how safe it is.

For the zip format: the archive layout (``zip_archive``), then the pickle's size, imports,
nesting and expansion (``pickle_scan``), then every storage it declares against the record
that holds it. For the legacy format: the same pickle checks over its leading pickles, and
the declared storage sizes against the file size, because torch allocates them before
reading a byte. For both, every view of a storage the pickle asks for must lie inside the
storage (loaded on ``meta``, torch does not check, and a merge reads the view's bytes from
the file), and no tensor or storage may be allocated by the pickle itself (its bytes would
be uninitialized memory). Globals of the small allowlist of plain data (``allowlist``:
``argparse.Namespace``, numpy scalars) are accepted in the forms their writers pickle them
and listed as ``allowed_globals``. A refused file's problem carries the ``safety`` listing a
report does.
"""

from __future__ import annotations

import io
from functools import cache
from pathlib import Path
from typing import Any

from app.errors import CorruptCheckpointError, UnsafeCheckpointError
from app.readers.guards import allowlist
from app.readers.guards.pickle_scan import PickleScan, StorageRef, TensorView, scan_pickle
from app.readers.guards.zip_archive import ZipRecords, check_zip
from app.readers.limits import ReadLimits, current_limits, limit_error
from app.readers.registry import sniff_file
from app.readers.sniff import CheckpointFormat
from app.tensors import Safety

# magic number, protocol version, sys info, the object, the storage keys.
_LEGACY_PICKLES = 5
_LEGACY_SIZE_PREFIX = 8  # each legacy storage's data starts with its element count
_MODULE_PREFIXES = ("torch.nn.", "torchvision.models.", "timm.models.", "transformers.models.")
_MODEL_SUFFIXES = (
    "Net",
    "Model",
    "Module",
    "Network",
    "Sequential",
    "ModuleList",
    "ModuleDict",
    "Transformer",
    "Encoder",
    "Decoder",
    "Classifier",
    "Backbone",
)
_MAX_SHOWN = 10


def guard_torch_file(
    path: Path, *, fmt: CheckpointFormat | None = None, limits: ReadLimits | None = None
) -> Safety:
    """Refuse a torch.save file that torch.load should not see; list its imports.

    Args:
        path: A file sniffed as ``TORCH_ZIP`` or ``TORCH_LEGACY``.
        fmt: Its format (sniffed when not given).
        limits: Defaults to this process's limits.

    Returns:
        The safety listing (nothing refused).

    Raises:
        ArchiveLayoutError: The zip archive is not laid out as torch.save writes it.
        CorruptCheckpointError: The pickle is malformed, or a storage declares more bytes
            than the file holds.
        LimitExceededError: The pickle is too large, nests too deep or expands too far.
        UnsafeCheckpointError: The pickle imports globals that weights_only refuses
            (``safety`` lists them), or uses an allowlisted one in another form than its
            writer does.
    """
    limits = limits or current_limits()
    sniffed = fmt or sniff_file(path)
    if sniffed not in (CheckpointFormat.TORCH_ZIP, CheckpointFormat.TORCH_LEGACY):
        raise CorruptCheckpointError(f"A {sniffed} file was given to the torch reader.")
    fmt = CheckpointFormat(sniffed)
    if fmt is CheckpointFormat.TORCH_ZIP:
        scans = _scan_zip(path, limits)
    else:
        scans = _scan_legacy(path, limits)
    found = tuple(dict.fromkeys(g for scan in scans for g in scan.globals))
    allowed = _allowed_globals() | frozenset(allowlist.ALLOWED_GLOBALS)
    refused = tuple(g for g in found if g not in allowed)
    safety = Safety(fmt.value, True, found, refused, allowlist.allowed_in(found))
    if refused:
        raise unsafe_error(list(refused), safety=safety.to_dict())
    for scan in scans:
        _check_allowlisted(scan, safety)
        _check_allocations(scan)
        for view in scan.tensors:
            _check_view(view)
    return safety


def unsafe_error(names: list[str], **extensions: Any) -> UnsafeCheckpointError:
    """The problem for a file that needs globals weights_only refuses, with advice."""
    shown = ", ".join(names[:_MAX_SHOWN]) + (" and more" if len(names) > _MAX_SHOWN else "")
    if any(_looks_like_module(name) for name in names):
        detail = (
            f"The file holds a pickled nn.Module ({shown}), which cannot be loaded "
            "safely. Save the weights instead: torch.save(model.state_dict(), path)."
        )
    elif names:
        detail = (
            f"The file needs Python objects that safe loading refuses ({shown}). "
            "Only tensors and plain containers are accepted; save model.state_dict() "
            "with torch.save."
        )
    else:
        detail = (
            "The file holds Python objects that safe (weights_only) loading refuses. "
            "Only tensors and plain containers are accepted; save model.state_dict() "
            "with torch.save."
        )
    return UnsafeCheckpointError(detail, globals=names[:_MAX_SHOWN], **extensions)


def _check_allowlisted(scan: PickleScan, safety: Safety) -> None:
    """Refuse an allowlisted global used in a form its writer never pickles (see allowlist)."""
    misuse = allowlist.check_uses(scan)
    if misuse is not None:
        raise UnsafeCheckpointError(
            f"The file cannot be loaded safely: {misuse}. argparse.Namespace and numpy "
            "scalars are accepted only as pickle writes them (plain numeric dtypes, a dict of "
            "attributes); save model.state_dict() with torch.save.",
            globals=list(safety.allowed_globals[:_MAX_SHOWN]),
            safety=safety.to_dict(),
        )


def _looks_like_module(name: str) -> bool:
    class_name = name.rsplit(".", 1)[-1]
    return name.startswith(_MODULE_PREFIXES) or class_name.endswith(_MODEL_SUFFIXES)


@cache
def _allowed() -> dict[str, Any]:
    # The default allowlist of torch's weights_only unpickler (this service never adds to
    # it), so "refused" here is exactly what torch.load(weights_only=True) refuses.
    from torch import _weights_only_unpickler

    return dict(_weights_only_unpickler._get_allowed_globals())


def _allowed_globals() -> frozenset[str]:
    return frozenset(_allowed())


def _scan_zip(path: Path, limits: ReadLimits) -> list[PickleScan]:
    records = check_zip(path, max_entries=limits.max_zip_entries)
    # The record torch loads: its reader matches names as ``records`` does (case aside).
    record = records.get(f"{records.prefix}/data.pkl")
    if record is None:
        raise CorruptCheckpointError("The archive has no '<archive>/data.pkl' record.")
    if record.size > limits.max_pickle_bytes:
        raise _pickle_too_large(record.size, limits)
    with path.open("rb") as f:
        f.seek(record.data_offset)
        scan = scan_pickle(io.BytesIO(f.read(record.size)), limits=limits)
    for pid in scan.persistent_ids:
        _check_zip_storage(pid, records)
    return [scan]


def _check_allocations(scan: PickleScan) -> None:
    """Refuse tensors and storages the pickle allocates itself: uninitialized memory.

    ``torch.Tensor(262144)`` or ``UntypedStorage(n)`` pass weights_only and hold whatever the
    allocator hands out; a merge would copy that memory into a file. torch.save only ever
    calls these classes without arguments (the legacy ``set_`` form).
    """
    allocating = _allocating_globals()
    for name in scan.calls:
        if name in allocating:
            raise CorruptCheckpointError(
                f"The checkpoint's pickle calls {name} with arguments, which makes a tensor "
                "of uninitialized memory instead of reading one from the file (torch.save "
                "never does this). Save the state_dict with torch.save."
            )


@cache
def _allocating_globals() -> frozenset[str]:
    """The allowed tensor and storage classes (``torch.Tensor``, ``torch.FloatTensor``...)."""
    import torch

    classes = (torch.Tensor, *torch._tensor_classes, *torch._storage_classes)
    return frozenset(name for name, value in _allowed().items() if value in classes)


def _check_view(view: TensorView) -> None:
    """A view's offset, size, stride and dtype stay inside the storage of the file it views.

    Loading on ``meta`` does not check this, and whoever reads the bytes later (a merge
    reading spans from the file) would read past the storage.
    """
    offset, size, stride = view.offset, view.size, view.stride
    if not (
        isinstance(offset, int)
        and isinstance(size, tuple)
        and isinstance(stride, tuple)
        and all(isinstance(n, int) for n in (*size, *stride))
        and (view.dtype is None or (isinstance(view.dtype, str) and view.dtype in _dtype_sizes()))
    ):
        raise CorruptCheckpointError(
            f"A tensor of the checkpoint has a malformed geometry ({view.via})."
        )
    if offset < 0 or len(size) != len(stride) or any(n < 0 for n in (*size, *stride)):
        raise CorruptCheckpointError(
            "A tensor of the checkpoint has a negative or ragged geometry."
        )
    declared = (
        _storage_declaration(view.storage.pid) if isinstance(view.storage, StorageRef) else None
    )
    if declared is None:
        raise CorruptCheckpointError(
            f"A tensor of the checkpoint views something that is not a storage of the file "
            f"({view.via})."
        )
    if 0 in size:
        return
    pid = view.storage.pid
    itemsize = _dtype_sizes()[view.dtype] if view.dtype is not None else _element_size(pid[1])
    extent = offset + sum((n - 1) * st for n, st in zip(size, stride, strict=True)) + 1
    if extent * itemsize > declared[1]:
        raise CorruptCheckpointError(
            f"A tensor of the checkpoint needs {extent * itemsize} bytes of a storage of "
            f"{declared[1]} bytes: its offset, size, stride or dtype reach outside its storage."
        )


@cache
def _dtype_sizes() -> dict[str, int]:
    """Bytes per element of every torch dtype, by the dotted name a pickle uses."""
    import torch

    return {f"torch.{n}": v.itemsize for n, v in vars(torch).items() if isinstance(v, torch.dtype)}


def _check_zip_storage(pid: tuple[Any, ...], records: ZipRecords) -> None:
    declared = _storage_declaration(pid)
    if declared is None:
        return  # torch.load refuses persistent ids it does not know
    key, nbytes = declared
    record = records.get(f"{records.prefix}/data/{key}")
    if record is None:
        raise CorruptCheckpointError(f"A storage of the checkpoint ({key!r}) has no record.")
    if nbytes > record.size:
        raise CorruptCheckpointError(
            f"A storage of the checkpoint declares {nbytes} bytes but its record holds "
            f"{record.size}."
        )


def _scan_legacy(path: Path, limits: ReadLimits) -> list[PickleScan]:
    size = path.stat().st_size
    with path.open("rb") as f:
        head = f.read(limits.max_pickle_bytes)
    stream = io.BytesIO(head)
    scans: list[PickleScan] = []
    try:
        for _ in range(_LEGACY_PICKLES):
            scans.append(scan_pickle(stream, limits=limits))
    except CorruptCheckpointError:
        if len(head) < size:
            raise _pickle_too_large(size, limits) from None
        raise
    declared: dict[str, int] = {}
    for scan in scans:
        for pid in scan.persistent_ids:
            found = _storage_declaration(pid)
            if found is not None:
                declared.setdefault(found[0], found[1])
    needed = sum(_LEGACY_SIZE_PREFIX + nbytes for nbytes in declared.values())
    available = size - scans[-1].end
    if needed > available:
        raise CorruptCheckpointError(
            f"The checkpoint declares {len(declared)} storages of {needed} bytes in all, but "
            f"only {available} bytes follow its pickles (truncated or forged)."
        )
    return scans


def _storage_declaration(pid: tuple[Any, ...]) -> tuple[str, int] | None:
    """(key, bytes) of a ``("storage", type, key, location, numel, ...)`` persistent id."""
    if len(pid) < 5 or pid[0] != "storage":
        return None
    storage_type, key, numel = pid[1], pid[2], pid[4]
    if not isinstance(key, str) or not isinstance(numel, int) or numel < 0:
        raise CorruptCheckpointError("A storage declaration of the checkpoint is malformed.")
    return key, numel * _element_size(storage_type)


def _element_size(storage_type: object) -> int:
    # An unknown type is a global torch refuses (or a string torch cannot use): 1 is moot.
    return _storage_element_sizes().get(storage_type, 1) if isinstance(storage_type, str) else 1


@cache
def _storage_element_sizes() -> dict[str, int]:
    """Bytes per element of every storage type weights_only accepts, by dotted name.

    Read from the allowlist itself, so ``torch.cuda.FloatStorage`` counts 4 bytes as torch
    does (a guess of 1 would let a storage declare a quarter of what torch reads).
    """
    from torch.serialization import StorageType

    sizes = {"torch.storage.UntypedStorage": 1}  # torch reads its numel as bytes
    for name, value in _allowed().items():
        if isinstance(value, StorageType):
            sizes[name] = value.dtype.itemsize
    return sizes


def _pickle_too_large(size: int, limits: ReadLimits) -> Exception:
    return limit_error(
        f"The checkpoint's pickle is larger than allowed ({size} bytes or more).",
        limit="max_pickle_bytes",
        value=limits.max_pickle_bytes,
    )
