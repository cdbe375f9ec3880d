"""``write_merged``: build the architecture on meta and stream its merged state_dict to a file."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from app.errors import LimitExceededError
from app.matching.adapters import Adaptation
from app.merge.streaming import DtypePolicy, MergeFormat, StreamedMerge

if TYPE_CHECKING:
    from app.names import QualifiedName
    from app.readers.lazy import TensorSource


@dataclass(frozen=True, slots=True)
class MergeSpec:
    """What to merge into and how to write it.

    Attributes:
        architecture: The architecture's name as the check gives it (resolved here).
        kwargs: Its constructor arguments.
        kwargs_json: The same arguments as JSON, as the check's options serialise them
            (``{"num_classes": 10}``), stored in the file's header as ``architecture_kwargs``.
        format: ``safetensors`` (streamed) or ``pt``.
        dtype_policy: ``model`` casts loaded tensors to the model's dtype; ``checkpoint``
            keeps theirs.
    """

    architecture: str
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    kwargs_json: str = "{}"
    format: MergeFormat = "safetensors"
    dtype_policy: DtypePolicy = "model"


def write_merged(
    path: Path,
    out: Path,
    *,
    spec: MergeSpec,
    state_dict_path: str,
    key_map: Mapping[str, str],
    exact_init_max_bytes: int,
    max_merged_bytes: int | None = None,
    metadata: Mapping[str, str] | None = None,
    adaptations: Sequence[Adaptation] = (),
) -> StreamedMerge:
    """Stream the architecture's initial state_dict, updated with every matched tensor, to ``out``.

    ``key_map`` is model key <- checkpoint key for the matched keys only: tensors that do not
    load as they are (``transposed``, ``reshaped``, resized heads) keep their initial values.
    Matched tensors are copied from the checkpoint tensor by tensor; keys that do not load are
    initialised by a real build when the model is at most ``exact_init_max_bytes``, else by
    their own modules. A model over ``max_merged_bytes`` is refused before anything is
    written. The benchmark calls this too, so it measures what a worker runs. Keys in
    ``adaptations`` (``Analysis.adaptations``) are computed by their adapter as they stream.

    Returns:
        The counts, the file's size and the notes for the report.

    Raises:
        LimitExceededError: The model is over ``max_merged_bytes``.
        UnmergeableTensorError, InsufficientStorageError, InternalError: As ``stream_merge``.

    Example:
        >>> spec = MergeSpec("torchvision:resnet18", {"num_classes": 10})  # doctest: +SKIP
        >>> write_merged(ckpt, out, spec=spec, state_dict_path="", key_map=analysis.key_map,
        ...              exact_init_max_bytes=1 << 30)  # doctest: +SKIP
        StreamedMerge(loaded_keys=120, kept_keys=2, size_bytes=..., notes=(...))
    """
    from app.architectures import build_model, resolve
    from app.merge.streaming import stream_merge
    from app.readers.checkpoint import open_tensors

    qualified = resolve(spec.architecture)
    kwargs = dict(spec.kwargs)
    model = build_model(qualified, kwargs, device="meta")
    expected = model.state_dict()
    model_bytes = sum(t.numel() * t.element_size() for t in expected.values())
    if max_merged_bytes is not None and model_bytes > max_merged_bytes:
        # Known on meta, before a byte is written: the model's size is the caller's choice.
        raise LimitExceededError.for_setting(
            f"The merged state_dict of {qualified} with these arguments would be about "
            f"{model_bytes} bytes.",
            limit="max_merged_bytes",
            value=max_merged_bytes,
        )
    header = {
        **dict(metadata or {}),
        "architecture": str(qualified),
        "architecture_kwargs": spec.kwargs_json,
        "loaded_keys": str(len(key_map) + len(adaptations)),
        "kept_keys": str(len(expected) - len(key_map) - len(adaptations)),
    }
    with (
        open_tensors(path, state_dict_path=state_dict_path) as source,
        _filter_context(qualified, kwargs, source, adaptations),
    ):
        return stream_merge(
            model,
            source,
            out,
            key_map=key_map,
            build_cpu=lambda: build_model(qualified, kwargs, device="cpu"),
            dtype_policy=spec.dtype_policy,
            format=spec.format,
            metadata=header,
            full_build=model_bytes <= exact_init_max_bytes,
            adaptations={a.key: a for a in adaptations},
        )


def _filter_context(
    qualified: QualifiedName,
    kwargs: dict[str, Any],
    source: TensorSource,
    adaptations: Sequence[Adaptation],
) -> AbstractContextManager[None]:
    """timm's checkpoint filter, ready to compute the keys matching said it computes."""
    from app.matching.filters import FILTER_OPERATION

    if not any(a.operation == FILTER_OPERATION for a in adaptations):
        return nullcontext()
    from app.merge.timm_filter import filtering

    return filtering(qualified.name, kwargs, source)
