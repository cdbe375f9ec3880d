"""Streaming merge: write the merged safetensors file tensor by tensor, about one tensor in memory.

The naive merge builds the model for real (every weight allocated and randomly initialised),
loads every matched tensor, and only then writes. Here the model stays on the meta device:
the output header is computed from shapes and dtypes, then each tensor's bytes are appended
in model order. A loaded tensor whose dtype does not change is copied file to file by the
kernel; a cast one is read, cast and written alone. Only the modules that own keys the
checkpoint does not provide are materialised (``to_empty`` then the architecture's own
``_init_weights`` where it has one, else the module's ``reset_parameters``); when such a
module cannot reset itself, the whole model is built on the CPU once, with a note.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, Literal

from app.atomic import atomic_file
from app.merge.adapters import adapt_tensor
from app.readers.lazy import TensorSource, TensorSpan, copy_span
from app.readers.mergeable import check_cast, check_dense, check_span, safetensors_code
from app.readers.verify import verify_merged

if TYPE_CHECKING:
    import torch

    from app.matching.adapters import Adaptation

DtypePolicy = Literal["model", "checkpoint"]
MergeFormat = Literal["safetensors", "pt"]
_MAX_LISTED = 5
_PAGE = 4096
# The kernel copies file to file through a 64 KiB pipe. When each 64 KiB write starts at a
# 64 KiB boundary of the output's page cache, it takes 64 KiB folios, not single pages: a
# 1.2 GB copy on ext4 (Linux 6.18) took 0.29 s that way and 0.40-0.46 s from other offsets.
_COPY_BLOCK = 64 * 1024


@dataclass(frozen=True, slots=True)
class StreamedMerge:
    """What a streaming merge wrote.

    Attributes:
        loaded_keys: Keys written from the checkpoint (the matched keys).
        kept_keys: Every other key: initialised fresh, or tied to a loaded key.
        size_bytes: The written file's size.
        notes: Sentences on how fresh tensors were initialised.
    """

    loaded_keys: int
    kept_keys: int
    size_bytes: int
    notes: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class _Plan:
    """Where each output key's value comes from."""

    keys: tuple[str, ...]
    source_key: Mapping[str, str]  # key -> checkpoint key (loaded, or tied to a loaded key)
    adapted: Mapping[str, Adaptation]  # key -> how an adapter computes it (or its tie)
    fresh: Mapping[str, torch.Tensor]  # key -> initialised CPU tensor
    notes: tuple[str, ...]


def stream_merge(
    model: torch.nn.Module,
    source: TensorSource,
    path: Path,
    *,
    key_map: Mapping[str, str],
    build_cpu: Callable[[], torch.nn.Module],
    dtype_policy: DtypePolicy = "model",
    format: MergeFormat = "safetensors",
    metadata: Mapping[str, str] | None = None,
    seed: int = 0,
    full_build: bool = False,
    adaptations: Mapping[str, Adaptation] | None = None,
) -> StreamedMerge:
    """Write the architecture's state_dict with every matched tensor taken from the checkpoint.

    The output has the model's keys, shapes and dtypes (``dtype_policy="model"``; with
    ``"checkpoint"`` loaded tensors keep the checkpoint's dtype); loaded tensors are
    bit-identical to the naive merge's. The file is written beside ``path`` and moved into
    place, so ``path`` is absent or complete.

    Args:
        model: The architecture built on the meta device (no weight memory).
        source: The checkpoint's tensors (``app.readers.checkpoint.open_tensors``).
        path: The output file.
        key_map: Model key -> checkpoint key of every tensor to load (``Analysis.key_map``:
            the matched keys, after alignment).
        build_cpu: Builds the model for real, seeded; called only when a module owning a
            missing key cannot initialise itself.
        dtype_policy: ``model`` casts loaded tensors to the model's dtype; ``checkpoint``
            keeps theirs.
        format: ``safetensors`` streams; ``pt`` (torch.save) needs every tensor in memory.
        metadata: String pairs for the safetensors header.
        seed: RNG seed of the fresh tensors' initialisation (global RNG state restored).
        full_build: Initialise missing keys from a real build (``build_cpu``) even when their
            modules could reset themselves: exact to the architecture's own init (some
            constructors re-initialise modules beyond ``reset_parameters``), at the cost of
            the model's memory. The caller decides by model size.
        adaptations: Model key -> how an adapter computes it from checkpoint tensors
            (``Analysis.adaptations``); keys neither here nor in ``key_map`` are initialised.

    Returns:
        Counts, the file size and notes for the report.

    Raises:
        ValueError: A key_map key is not a model key, or the policy or format is unknown.
        UnmergeableTensorError: A loaded tensor is sparse, meta, packed, cannot be cast to
            its output dtype, or that dtype has no safetensors code; nothing is written.
        InsufficientStorageError: The disk filled up; nothing is kept.
        InternalError: The written file did not verify; it was removed.

    Example:
        >>> with open_tensors(ckpt) as source:  # doctest: +SKIP
        ...     stream_merge(meta_model, source, out, key_map=analysis.key_map, build_cpu=build)
        StreamedMerge(loaded_keys=161, kept_keys=2, size_bytes=..., notes=(...))
    """
    import torch

    if dtype_policy not in ("model", "checkpoint") or format not in ("safetensors", "pt"):
        raise ValueError(f"unknown dtype_policy {dtype_policy!r} or format {format!r}")
    expected = {
        k: v for k, v in model.state_dict(keep_vars=True).items() if isinstance(v, torch.Tensor)
    }
    adapted = dict(adaptations or {})
    unknown = [k for k in [*key_map, *adapted] if k not in expected]
    if unknown:
        raise ValueError(f"key_map keys are not model keys: {unknown[:5]}")
    plan = _plan(
        model,
        expected,
        key_map,
        adapted,
        build_cpu=build_cpu,
        seed=seed,
        full_build=full_build,
    )
    _check_loaded(plan, source, expected, dtype_policy)
    dtypes = {k: _out_dtype(k, plan, source, expected, dtype_policy) for k in plan.keys}

    def value(key: str) -> torch.Tensor:
        if key in plan.adapted:
            return adapt_tensor(plan.adapted[key], source.read).to(dtypes[key])
        if key in plan.source_key:
            tensor = source.read(plan.source_key[key])
            return tensor if dtype_policy == "checkpoint" else tensor.to(expected[key].dtype)
        return plan.fresh[key]

    with atomic_file(path) as out:
        if format == "pt":
            torch.save({key: value(key) for key in plan.keys}, out)
            notes = (*plan.notes, "The .pt merge is not streamed: every tensor was in memory.")
        else:
            raw = _raw_spans(plan, source, dtypes)
            # Raw copies first, in file order, so adjacent ones merge into one kernel copy.
            order = [
                *sorted(raw, key=lambda k: (str(raw[k].path), raw[k].offset)),
                *(k for k in plan.keys if k not in raw),
            ]
            first = raw[order[0]].offset if raw else None
            _write_header(out, order, expected, dtypes, metadata or {}, align_to=first)
            for item in _runs(order, raw):
                if isinstance(item, str):
                    _write_tensor(out, value(item))
                else:
                    copy_span(item, out)
            notes = plan.notes
    verify_merged(
        path, {k: (tuple(expected[k].shape), dtypes[k]) for k in plan.keys}, format=format
    )
    loaded = len(key_map) + len(adapted)
    return StreamedMerge(loaded, len(plan.keys) - loaded, path.stat().st_size, notes)


def _plan(
    model: torch.nn.Module,
    expected: Mapping[str, torch.Tensor],
    key_map: Mapping[str, str],
    adaptations: Mapping[str, Adaptation],
    *,
    build_cpu: Callable[[], torch.nn.Module],
    seed: int,
    full_build: bool,
) -> _Plan:
    groups = _tied_groups(model, expected)
    source_key: dict[str, str] = {}
    adapted: dict[str, Adaptation] = {}
    missing: list[str] = []
    for key in expected:
        loaded = key if key in key_map else next((k for k in groups[key] if k in key_map), None)
        through = next((k for k in groups[key] if k in adaptations), None)
        if loaded is not None:
            source_key[key] = key_map[loaded]
        elif through is not None:
            adapted[key] = adaptations[through]
        else:
            missing.append(key)
    notes: list[str] = []
    tied = [k for k in [*source_key, *adapted] if k not in key_map and k not in adaptations]
    if tied:
        notes.append(
            f"{len(tied)} keys tied to a loaded tensor were written with its values "
            f"({_listed(tied)})."
        )
    fresh, init_notes = _initialise(
        model, missing, build_cpu=build_cpu, seed=seed, full_build=full_build
    )
    return _Plan(tuple(expected), source_key, adapted, fresh, (*notes, *init_notes))


def _tied_groups(
    model: torch.nn.Module, expected: Mapping[str, torch.Tensor]
) -> dict[str, list[str]]:
    """Key -> every key holding the very same parameter or buffer object (itself included)."""
    by_object: dict[int, list[str]] = {}
    named = [
        *model.named_parameters(remove_duplicate=False),
        *model.named_buffers(remove_duplicate=False),
    ]
    for key, tensor in named:
        if key in expected:
            by_object.setdefault(id(tensor), []).append(key)
    return {key: by_object.get(id(expected[key]), [key]) for key in expected}


def _initialise(
    model: torch.nn.Module,
    missing: Sequence[str],
    *,
    build_cpu: Callable[[], torch.nn.Module],
    seed: int,
    full_build: bool,
) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Fresh CPU values for the missing keys, materialising as little as possible."""
    import torch

    if not missing:
        return {}, []
    if full_build:
        with torch.no_grad():
            state = build_cpu().state_dict()
        note = (
            f"{len(missing)} keys that do not load from the checkpoint were initialised by "
            "building the architecture on the CPU (seed 0), exactly as its constructor does."
        )
        return {key: state[key].detach() for key in missing}, [note]
    owners: dict[str, list[str]] = {}
    for key in missing:
        owners.setdefault(key.rpartition(".")[0], []).append(key)
    stuck = [name for name, keys in owners.items() if not _can_reset(model, name, keys)]
    fresh: dict[str, torch.Tensor] = {}
    if not stuck:
        fresh = _reset_modules(model, list(owners), missing, seed=seed)
        stuck = sorted(
            {
                k.rpartition(".")[0]
                for k in missing
                if fresh[k].is_floating_point() and torch.isnan(fresh[k]).any()
            }
        )
    if stuck:
        with torch.no_grad():
            state = build_cpu().state_dict()
        note = (
            f"{len(stuck)} modules owning keys that do not load cannot initialise themselves "
            f"({_listed([n or '<root>' for n in stuck])}); the whole model was built on the "
            "CPU to initialise those keys."
        )
        return {key: state[key].detach() for key in missing}, [note]
    how = "the architecture's _init_weights" if _has_init_weights(model) else "reset_parameters()"
    note = (
        f"{len(missing)} keys that do not load from the checkpoint were initialised with {how} "
        "of their modules "
        f"({_listed(list(owners))}); the rest of the model was never materialised."
    )
    return fresh, [note]


def _reset_modules(
    model: torch.nn.Module, names: Sequence[str], missing: Sequence[str], *, seed: int
) -> dict[str, torch.Tensor]:
    """Materialise the named modules alone and initialise them; NaN marks what stayed unset."""
    import torch

    init_weights = getattr(model, "_init_weights", None)
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(seed)
        for name in names:
            module = model.get_submodule(name)
            module.to_empty(device="cpu", recurse=False)
            for tensor in [*module.parameters(recurse=False), *module.buffers(recurse=False)]:
                if tensor.is_floating_point():
                    tensor.fill_(float("nan"))
            if callable(init_weights):
                init_weights(module)
            else:
                module.reset_parameters()  # type: ignore[operator]
    state = model.state_dict(keep_vars=True)
    return {key: state[key].detach() for key in missing}


def _has_init_weights(model: torch.nn.Module) -> bool:
    return callable(getattr(model, "_init_weights", None))


def _can_reset(model: torch.nn.Module, name: str, keys: Sequence[str]) -> bool:
    """A module can initialise its missing keys: parameters by its own init, norm stats too."""
    module = model.get_submodule(name)
    buffers = dict(module.named_buffers(recurse=False))
    if any(k.rpartition(".")[2] in buffers for k in keys) and not callable(
        getattr(module, "reset_running_stats", None)
    ):
        return False  # buffers computed in __init__ (position ids...) are lost on meta
    if _has_init_weights(model):
        return True
    return callable(getattr(module, "reset_parameters", None))


def _check_loaded(
    plan: _Plan, source: TensorSource, expected: Mapping[str, torch.Tensor], policy: DtypePolicy
) -> None:
    """Refuse, before writing, any loaded tensor the merge cannot copy or cast (a 422)."""
    for key, ckpt_key in plan.source_key.items():
        span = source.span(ckpt_key)
        if span is not None:
            check_span(ckpt_key, span)
            dtype = span.dtype
        else:
            tensor = source.read(ckpt_key)  # only in-memory tensors have no span
            check_dense({ckpt_key: tensor})
            dtype = tensor.dtype
        check_cast(ckpt_key, dtype, expected[key].dtype if policy == "model" else dtype)
    for key, adaptation in plan.adapted.items():
        for ckpt_key in adaptation.checkpoint_keys:
            dtype = _checked_dtype(ckpt_key, source)
            check_cast(ckpt_key, dtype, expected[key].dtype if policy == "model" else dtype)


def _checked_dtype(ckpt_key: str, source: TensorSource) -> torch.dtype:
    """A checkpoint tensor's dtype, refusing one the merge cannot read (sparse, packed...)."""
    span = source.span(ckpt_key)
    if span is not None:
        check_span(ckpt_key, span)
        return span.dtype
    tensor = source.read(ckpt_key)
    check_dense({ckpt_key: tensor})
    return tensor.dtype


def _out_dtype(
    key: str,
    plan: _Plan,
    source: TensorSource,
    expected: Mapping[str, torch.Tensor],
    policy: DtypePolicy,
) -> torch.dtype:
    if policy == "model" or key not in plan.source_key:
        # A dequantized weight has no float dtype in the file, and a key a library's filter
        # makes from nothing (timm's zero head.bias) no file tensor: both take the model's.
        if (
            policy == "checkpoint"
            and key in plan.adapted
            and plan.adapted[key].checkpoint_keys
            and not _dequantized(plan, key)
        ):
            return _checked_dtype(plan.adapted[key].checkpoint_keys[0], source)
        return expected[key].dtype
    span = source.span(plan.source_key[key])
    return span.dtype if span is not None else source.read(plan.source_key[key]).dtype


def _dequantized(plan: _Plan, key: str) -> bool:
    return plan.adapted[key].adapter == "dequantize"


def _raw_spans(
    plan: _Plan, source: TensorSource, dtypes: Mapping[str, torch.dtype]
) -> dict[str, TensorSpan]:
    """The output keys whose bytes are a contiguous span of the checkpoint, unchanged."""
    found: dict[str, TensorSpan] = {}
    for key, ckpt_key in plan.source_key.items():
        span = source.span(ckpt_key)
        if span is not None and span.contiguous and span.dtype == dtypes[key]:
            found[key] = span
    return found


def _runs(order: Sequence[str], raw: Mapping[str, TensorSpan]) -> Iterator[str | TensorSpan]:
    """Keys to write one by one, and raw spans merged where they follow each other in a file."""
    run: TensorSpan | None = None
    for key in order:
        span = raw.get(key)
        if span is not None and run is not None and _follows(run, span):
            run = replace(run, nbytes=run.nbytes + span.nbytes)
            continue
        if run is not None:
            yield run
        run = span
        if span is None:
            yield key
    if run is not None:
        yield run


def _follows(run: TensorSpan, span: TensorSpan) -> bool:
    return span.path == run.path and span.offset == run.offset + run.nbytes


def _write_header(
    out: BinaryIO,
    keys: Sequence[str],
    expected: Mapping[str, torch.Tensor],
    dtypes: Mapping[str, torch.dtype],
    metadata: Mapping[str, str],
    *,
    align_to: int | None = None,
) -> None:
    """Write the 8-byte length and the JSON header, data offsets following ``keys``.

    With ``align_to`` (the first copied span's offset in its file), the header is padded so
    the data starts at the same offset modulo the page size, in the first page of a 64 KiB
    block: the kernel then copies whole pages instead of shifting every byte, into large
    page-cache folios (``_COPY_BLOCK``). The padding is JSON whitespace, under 64 KiB.
    """
    header: dict[str, object] = {}
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    offset = 0
    for key in keys:
        dtype = dtypes[key]
        nbytes = expected[key].numel() * dtype.itemsize
        shape = list(expected[key].shape)
        header[key] = {
            "dtype": safetensors_code(key, dtype),
            "shape": shape,
            "data_offsets": [offset, offset + nbytes],
        }
        offset += nbytes
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)  # the data section starts 8-byte aligned
    if align_to is not None and align_to % 8 == 0:
        raw += b" " * ((align_to % _PAGE - 8 - len(raw)) % _COPY_BLOCK)
    out.write(len(raw).to_bytes(8, "little"))
    out.write(raw)


def _write_tensor(out: BinaryIO, tensor: torch.Tensor) -> None:
    import torch

    flat = tensor.detach().contiguous().reshape(-1)
    if flat.numel():
        out.write(flat.view(torch.uint8).numpy().data)


def _listed(names: Sequence[str]) -> str:
    more = f", ... {len(names) - _MAX_LISTED} more" if len(names) > _MAX_LISTED else ""
    return ", ".join(names[:_MAX_LISTED]) + more
