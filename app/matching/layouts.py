"""What the checkpoint's tensors are, beyond names and shapes: quantized weights, adapter
matrices, partitioned placeholders.

Some tensors have the right name and shape and still are not the weights a float model needs
(bitsandbytes' int8 ``weight`` beside its ``SCB`` scales), some files hold no base weights at
all (a PEFT LoRA adapter), and some hold empty placeholders where a sharded run kept its
partitions elsewhere (DeepSpeed ZeRO-3). Each layout is recognised from the index alone (keys,
shapes, dtypes), as the tools that write it lay it out:

- bitsandbytes LLM.int8 (``Linear8bitLt._save_to_state_dict``): ``weight`` int8, ``SCB``,
  ``weight_format``; 4-bit (``Linear4bit``): ``weight`` uint8 with ``weight.absmax``,
  ``weight.quant_map``, ``weight.quant_state.bitsandbytes__nf4`` (JSON: shape, block size)...
- FP8 block quantization (DeepSeek-V3, transformers' ``FineGrainedFP8Config``): ``weight``
  ``float8_*`` with ``weight_scale_inv`` (or a per-tensor ``weight_scale``).
- GPTQ (AutoGPTQ, GPTQModel) and AWQ (AutoAWQ): ``qweight``, ``qzeros``, ``scales``,
  GPTQ's ``g_idx``; compressed-tensors: ``weight_packed``, ``weight_scale``...
- PyTorch eager-mode quantization (``torch.ao.quantization.convert``, as torchvision's
  quantized models save it): ``weight`` ``qint8``/``quint8`` with the module's ``scale`` and
  ``zero_point``; a quantized Linear keeps its weight in ``_packed_params`` (a tuple, which
  the readers skip), and fused convolutions carry the ``bias`` of their folded BatchNorm.
- PEFT adapters (``get_peft_model_state_dict``): ``base_model.model.<module>.lora_A.weight``
  and ``lora_B.weight`` (LoRA; DoRA adds ``lora_magnitude_vector``), LoHa's ``hada_w1_a``,
  LoKr's ``lokr_w1``, IA3's ``ia3_l``.
- Partitioned placeholders: a tensor with no elements where the model's has some (ZeRO-3's
  ``torch.empty(0)`` in ``mp_rank_00_model_states.pt``).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from app.tensors import TensorIndex, TensorInfo

FLOAT8 = ("float8_e4m3fn", "float8_e4m3fnuz", "float8_e5m2", "float8_e5m2fnuz")
TORCH_AO = ("qint8", "quint8", "qint32", "quint4x2", "quint2x4")
"""torch's quantized dtypes (tensors rebuilt by ``torch._utils._rebuild_qtensor``)."""
BNB4_PARTS = ("absmax", "quant_map", "nested_absmax", "nested_quant_map", "quant_state")
PEFT_MARKERS = {
    "lora_A": "LoRA",
    "lora_embedding_A": "LoRA",
    "hada_w1_a": "LoHa",
    "lokr_w1": "LoKr",
    "ia3_l": "IA3",
}
PEFT_PARTS = frozenset(
    {
        *("lora_A", "lora_B", "lora_embedding_A", "lora_embedding_B", "lora_magnitude_vector"),
        *("hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b", "hada_t1", "hada_t2"),
        *("lokr_w1", "lokr_w1_a", "lokr_w1_b", "lokr_w2", "lokr_w2_a", "lokr_w2_b", "lokr_t2"),
        "ia3_l",
    }
)
"""The parameter and module names PEFT gives adapter tensors (peft.tuners.*.layer)."""


@dataclass(frozen=True, slots=True)
class Quantized:
    """The quantized weights of one scheme.

    Attributes:
        scheme: A slug: ``bnb_int8``, ``bnb_4bit``, ``fp8``, ``gptq``, ``awq``,
            ``compressed_tensors`` or ``torch_ao``.
        weights: Model keys (``<module>.weight``) whose values the file holds quantized.
        parts: Checkpoint keys of the quantized layout (the quantized weight itself where its
            name is not the model's, scales, zero points, group indexes, formats).
        stored: The aligned checkpoint's entries (dtypes, shapes) of ``weights`` and
            ``parts`` that the file holds under those names: what ``dequantize`` checks.
    """

    scheme: str
    weights: tuple[str, ...]
    parts: tuple[str, ...]
    stored: tuple[TensorInfo, ...] = field(default=(), repr=False, compare=False)


@dataclass(frozen=True, slots=True)
class Adapter:
    """A PEFT adapter file: adapter matrices, no base weights.

    Attributes:
        method: ``LoRA``, ``DoRA``, ``LoHa``, ``LoKr`` or ``IA3``.
        rank: The LoRA rank (rows of ``lora_A``), None for other methods or mixed ranks.
        target_modules: Leaf names of the adapted modules (``q_proj``, ``v_proj``), sorted.
        modules: How many modules are adapted.
        keys: The adapter's own checkpoint keys (aligned names).
    """

    method: str
    rank: int | None
    target_modules: tuple[str, ...]
    modules: int
    keys: frozenset[str]


@dataclass(frozen=True, slots=True)
class Layouts:
    """Everything found; empty when the file holds plain weights."""

    quantized: tuple[Quantized, ...] = ()
    adapter: Adapter | None = None
    placeholders: tuple[str, ...] = field(default=())

    def quantized_weights(self) -> set[str]:
        """Model keys whose file value is quantized (never loaded as values)."""
        return {k for q in self.quantized for k in q.weights}

    def loadable(self, checkpoint: TensorIndex) -> TensorIndex:
        """``checkpoint`` without the quantized weights stored under the model's names, so
        comparing calls them missing rather than loaded with a cast."""
        drop = self.quantized_weights()
        if not drop:
            return checkpoint
        return TensorIndex.from_infos([i for i in checkpoint if i.key not in drop])


def find_layouts(checkpoint: TensorIndex, model: TensorIndex) -> Layouts:
    """Recognise quantized, adapter and placeholder layouts in an aligned checkpoint index.

    Example:
        >>> from app.tensors import TensorKind
        >>> model = TensorIndex.from_infos(
        ...     [TensorInfo("fc.weight", (4, 2), "float16", TensorKind.PARAMETER)]
        ... )
        >>> ckpt = TensorIndex.from_infos(
        ...     [TensorInfo("fc.weight", (4, 2), "int8"), TensorInfo("fc.SCB", (4,), "float32"),
        ...      TensorInfo("fc.weight_format", (), "uint8")]
        ... )
        >>> find_layouts(ckpt, model).quantized[0]
        Quantized(scheme='bnb_int8', weights=('fc.weight',), parts=('fc.SCB', 'fc.weight_format'))
    """
    return Layouts(
        quantized=_quantized(checkpoint, model),
        adapter=_adapter(checkpoint, model),
        placeholders=tuple(
            i.key
            for i in checkpoint
            if i.numel == 0 and (m := model.get(i.key)) is not None and m.numel > 0
        ),
    )


def _by_module(checkpoint: TensorIndex) -> dict[str, dict[str, TensorInfo]]:
    modules: dict[str, dict[str, TensorInfo]] = defaultdict(dict)
    for info in checkpoint:
        module, _, leaf = info.key.rpartition(".")
        modules[module][leaf] = info
    return modules


def _scheme(leaves: dict[str, TensorInfo]) -> str | None:
    weight = leaves.get("weight")
    if weight is not None and weight.dtype == "int8" and "SCB" in leaves:
        return "bnb_int8"
    scaled = "weight_scale_inv" in leaves or "weight_scale" in leaves
    if weight is not None and weight.dtype in FLOAT8 and scaled:
        return "fp8"
    if "qweight" in leaves and "scales" in leaves:
        return "gptq" if "g_idx" in leaves else "awq"
    if "weight_packed" in leaves and "weight_scale" in leaves:
        return "compressed_tensors"
    if weight is not None and weight.dtype in TORCH_AO:
        return "torch_ao"
    return None


def _packed_torch_ao(leaves: dict[str, TensorInfo]) -> bool:
    """A torch.ao quantized Linear: ``scale`` and ``zero_point`` with no tensor ``weight``,
    which ``_packed_params`` holds packed (asked only of files with torch.ao tensors)."""
    return "scale" in leaves and "zero_point" in leaves and "weight" not in leaves


def _quantized(checkpoint: TensorIndex, model: TensorIndex) -> tuple[Quantized, ...]:
    modules = _by_module(checkpoint)
    weights: dict[str, list[str]] = defaultdict(list)
    parts: dict[str, list[str]] = defaultdict(list)
    torch_ao = any(info.dtype in TORCH_AO for info in checkpoint)
    for module, leaves in modules.items():
        prefix = f"{module}." if module else ""
        scheme = _scheme(leaves)
        if scheme is None and torch_ao and _packed_torch_ao(leaves):
            scheme = "torch_ao"
        bnb4 = modules.get(f"{prefix}weight", {})  # Linear4bit: weight.absmax, weight.quant_map
        packed = modules.get(f"{prefix}weight.quant_state", {})  # its JSON: shape, blocksize...
        if (
            scheme is None
            and "weight" in leaves
            and any(leaf.startswith(BNB4_PARTS) for leaf in bnb4)
        ):
            scheme = "bnb_4bit"
        if scheme is None or f"{prefix}weight" not in model:
            continue
        if scheme == "torch_ao" and model.tensors[f"{prefix}weight"].dtype in TORCH_AO:
            continue  # a quantized model of its own (torchvision's quantize=True) loads it
        weights[scheme].append(f"{prefix}weight")
        own = [f"{prefix}{leaf}" for leaf in leaves if leaf not in ("weight", "bias")]
        if scheme == "torch_ao" and "bias" in leaves and f"{prefix}bias" not in model:
            own.append(f"{prefix}bias")  # a fused convolution's folded BatchNorm
        parts[scheme] += [
            *own,
            *(f"{prefix}weight.{leaf}" for leaf in bnb4),
            *(f"{prefix}weight.quant_state.{leaf}" for leaf in packed),
        ]
    order = {key: n for n, key in enumerate(model.tensors)}  # name them in model order
    return tuple(
        Quantized(
            s,
            tuple(sorted(weights[s], key=order.__getitem__)),
            tuple(parts[s]),
            stored=tuple(
                info for k in (*weights[s], *parts[s]) if (info := checkpoint.get(k)) is not None
            ),
        )
        for s in weights
    )


def _adapter(checkpoint: TensorIndex, model: TensorIndex) -> Adapter | None:
    # A model with adapter layers of its own loads them: only tensors it lacks make an adapter.
    keys = [i.key for i in checkpoint if i.key not in model and _peft_part(i.key) is not None]
    if not keys or any(".base_layer." in i.key for i in checkpoint):
        return None  # a PEFT model saved whole (base_layer beside the adapter) is no adapter
    methods = {PEFT_MARKERS[m] for k in keys if (m := _peft_part(k)) in PEFT_MARKERS}
    if "LoRA" in methods and any("lora_magnitude_vector" in k for k in keys):
        methods = (methods - {"LoRA"}) | {"DoRA"}
    targets: dict[str, None] = {}
    ranks: set[int] = set()
    for key in keys:
        part = _peft_part(key)
        if part not in PEFT_MARKERS:
            continue
        module = key.split(f".{part}", 1)[0]
        targets[module] = None
        info = checkpoint.tensors[key]
        if part.startswith("lora_") and info.shape:
            ranks.add(info.shape[0])
    return Adapter(
        method="/".join(sorted(methods)) or "PEFT",
        rank=ranks.pop() if len(ranks) == 1 else None,
        target_modules=tuple(sorted({m.rsplit(".", 1)[-1] for m in targets})),
        modules=len(targets),
        keys=frozenset(keys),
    )


def _peft_part(key: str) -> str | None:
    """The PEFT part a key belongs to (``lora_A``), or None for any other key."""
    return next((part for part in key.split(".") if part in PEFT_PARTS), None)
