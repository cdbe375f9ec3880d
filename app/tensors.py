"""Core engine values shared by readers, architectures and matching: an index of tensors.

Both sides of a comparison become the same kind of value, a ``TensorIndex`` of
``TensorInfo(key, shape, dtype)``, so that no engine package reaches into a sibling.
This module imports nothing heavy (no torch): dtypes travel as their torch names
without the ``torch.`` prefix (``"float32"``, ``"bfloat16"``).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class TensorKind(StrEnum):
    """What a model tensor is; checkpoint tensors are ``unknown``.

    ``tied`` is a second name of a parameter listed earlier (T5's ``encoder.embed_tokens.weight``
    is ``shared.weight``, GPT-2's ``lm_head.weight`` is ``transformer.wte.weight``): it is
    counted once, under its first name, as ``model.parameters()`` counts it.
    """

    PARAMETER = "parameter"
    BUFFER = "buffer"
    TIED = "tied"
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class TensorInfo:
    """The metadata of one tensor: enough to compare, never the data.

    Attributes:
        key: The dotted state_dict key (``layer1.0.conv1.weight``).
        shape: The tensor's shape.
        dtype: The torch dtype name without prefix (``float32``).
        kind: Parameter, buffer, tied alias, or unknown (checkpoint side).
        tied_to: For a ``tied`` tensor, the key of the parameter it is (its first name).
    """

    key: str
    shape: tuple[int, ...]
    dtype: str
    kind: TensorKind = TensorKind.UNKNOWN
    tied_to: str | None = None

    @property
    def numel(self) -> int:
        """Number of elements (1 for a scalar)."""
        return math.prod(self.shape)


@dataclass(frozen=True, slots=True)
class TensorIndex:
    """An ordered mapping of key -> TensorInfo, for a checkpoint or an architecture."""

    tensors: Mapping[str, TensorInfo] = field(default_factory=dict)

    @classmethod
    def from_infos(cls, infos: list[TensorInfo] | Iterator[TensorInfo]) -> TensorIndex:
        """Build an index keeping the order given."""
        return cls({info.key: info for info in infos})

    def __len__(self) -> int:
        return len(self.tensors)

    def __contains__(self, key: object) -> bool:
        return key in self.tensors

    def __iter__(self) -> Iterator[TensorInfo]:
        return iter(self.tensors.values())

    def get(self, key: str) -> TensorInfo | None:
        """The info for ``key``, or None."""
        return self.tensors.get(key)

    def keys(self) -> list[str]:
        """The keys in order."""
        return list(self.tensors)

    @property
    def numel(self) -> int:
        """Total elements over all tensors."""
        return sum(info.numel for info in self.tensors.values())

    @property
    def parameter_numel(self) -> int:
        """Total elements over the tensors of kind ``parameter``."""
        return sum(i.numel for i in self.tensors.values() if i.kind is TensorKind.PARAMETER)


@dataclass(frozen=True, slots=True)
class StateDictCandidate:
    """A dict inside a checkpoint file that holds tensors, found while unwrapping."""

    path: str
    tensor_count: int


@dataclass(frozen=True, slots=True)
class Safety:
    """How a checkpoint would be loaded, found without executing anything.

    Attributes:
        format: The detected format (``torch_zip``, ``torch_legacy``, ``safetensors``).
        uses_pickle: Whether loading it needs an unpickler at all.
        pickle_globals: Every ``module.name`` its pickle imports, first seen first.
        refused_globals: Those that weights_only loading refuses.
        allowed_globals: Those admitted by the service's allowlist of plain data
            (``argparse.Namespace``, numpy scalars) beyond torch's own.
    """

    format: str
    uses_pickle: bool
    pickle_globals: tuple[str, ...] = ()
    refused_globals: tuple[str, ...] = ()
    allowed_globals: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """The JSON shape of ``report.safety`` and of a problem's ``safety`` member."""
        return {
            "format": self.format,
            "uses_pickle": self.uses_pickle,
            "pickle_globals": list(self.pickle_globals),
            "refused_globals": list(self.refused_globals),
            "allowed_globals": list(self.allowed_globals),
        }


@dataclass(frozen=True, slots=True)
class CheckpointIndex:
    """What a reader learned from a checkpoint file, without keeping tensor data.

    Attributes:
        format: ``torch_zip``, ``torch_legacy`` or ``safetensors``.
        index: The tensors of the chosen state_dict.
        state_dict_path: Dotted path of the chosen dict inside the file ("" = the file itself).
        candidates: Every dict in the file that holds tensors, with its tensor count.
        notes: Plain sentences on what the reader did (unwrapping, skipped non-tensor values).
        candidate_indexes: The index of every candidate dict by path, when the reader chose
            automatically among several (empty otherwise), so matching can score each.
        safety: The safety listing the reader's guards produced while reading, so a report
            needs no second scan; None where the reader does not produce one.
    """

    format: str
    index: TensorIndex
    state_dict_path: str = ""
    candidates: tuple[StateDictCandidate, ...] = ()
    notes: tuple[str, ...] = ()
    candidate_indexes: Mapping[str, TensorIndex] = field(default_factory=dict)
    safety: Safety | None = None


@dataclass(frozen=True, slots=True)
class KeyRenaming:
    """One load-time key renaming a library applies to old checkpoints, carried as data.

    transformers 5 renames keys while loading (``WeightRenaming``); the rule needs the model to
    be found, so the architecture side extracts it and matching, which never sees a model,
    applies it (``app.matching.converters``).

    Attributes:
        pattern: The library's Python regular expression, searched in the key (named groups
            ``g0``, ``g1``... one per source pattern, as transformers compiles them).
        replacements: The replacement of each named group, in group order (``\\1`` is the
            group's first inner group).
        scope_prefix: Only keys under this module are renamed (None: every key).
        base_model_prefix: Also accepted in front of ``scope_prefix`` (``vit.``).
    """

    pattern: str
    replacements: tuple[str, ...]
    scope_prefix: str | None = None
    base_model_prefix: str | None = None


@dataclass(frozen=True, slots=True)
class KeyFusion:
    """A load-time converter that builds one model tensor from several checkpoint tensors
    (Mixtral's per-expert ``w1``/``w3`` into ``experts.gate_up_proj``), carried as data.

    Matching builds it (``app.matching.fusions``) when its operations are ones the merge
    replays with the library's own classes (``buildable``); otherwise it only reports it.

    Attributes:
        pattern: The library's regular expression for the source keys (named groups ``g0``,
            ``g1``... one per source pattern, as transformers compiles them).
        target: The model key suffix it produces.
        operations: What the library does, in order (``MergeModulelist(dim=0)``...).
        source_patterns: The library's source patterns, in its order (``.experts.*.w1.weight``);
            group ``gN`` of ``pattern`` is the N-th.
        steps: Each operation as (class name, dim), in order.
        scope_prefix: Only keys under this module are converted (None: every key).
        base_model_prefix: Also accepted in front of ``scope_prefix``.
    """

    pattern: str
    target: str
    operations: tuple[str, ...]
    source_patterns: tuple[str, ...] = ()
    steps: tuple[tuple[str, int], ...] = ()
    scope_prefix: str | None = None
    base_model_prefix: str | None = None


@dataclass(frozen=True, slots=True)
class FilteredKey:
    """One model key a library's checkpoint filter produced, and from what.

    Attributes:
        key: The model key.
        shape: The shape the filter gave it.
        sources: The checkpoint keys (as stored) its value was computed from; empty when
            the filter made it from nothing (timm's zero ``head.bias`` for CLIP's ``proj``).
        operations: The tensor operations applied on the way (aten names, in order, without
            repeats; empty for a key passed through under a new name).
    """

    key: str
    shape: tuple[int, ...]
    sources: tuple[str, ...]
    operations: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class FilterTrace:
    """What a library's checkpoint filter (timm's ``checkpoint_filter_fn``) does to this
    checkpoint, learned by running it on tensors without storage.

    Attributes:
        function: The filter's qualified name
            (``timm.models.vision_transformer.checkpoint_filter_fn``).
        outputs: The model keys it produced, in its order.
        error: Why it could not be traced (it looked at values, say), or None.
    """

    function: str
    outputs: tuple[FilteredKey, ...] = ()
    error: str | None = None


@dataclass(frozen=True, slots=True)
class ArchitectureIndex:
    """An architecture built on the meta device: its qualified name, kwargs and tensors.

    Attributes:
        name: The qualified name (``torchvision:resnet50``).
        source: Its source (``torchvision``).
        kwargs: The constructor arguments.
        index: The tensors of ``model.state_dict()``.
        notes: Plain sentences on the build.
        head_modules: The modules the architecture itself calls its head (torchvision's
            ``fc``/``classifier``/``heads``, detection and segmentation heads, timm's
            ``get_classifier()``, transformers' modules outside ``base_model_prefix``);
            ``()`` when it has none (a transformers base model), None when its source has no
            convention (matching then takes the last top-level module). Verdicts weigh where
            loaded parameters sit, so a loaded head on a random backbone is not "compatible".
        renamings: The library's own load-time key renamings for this model (transformers 5's
            conversion mapping), tried as a candidate alignment.
        fusions: The library's load-time tensor fusions for this model (built by matching and
            the merge where their operations are replayable, else reported).
        filter_trace: The library's checkpoint filter run on this check's checkpoint (timm),
            tried as a candidate alignment; set per check, None otherwise.
    """

    name: str
    source: str
    kwargs: Mapping[str, object]
    index: TensorIndex
    notes: tuple[str, ...] = ()
    head_modules: tuple[str, ...] | None = None
    renamings: tuple[KeyRenaming, ...] = ()
    fusions: tuple[KeyFusion, ...] = ()
    filter_trace: FilterTrace | None = None
