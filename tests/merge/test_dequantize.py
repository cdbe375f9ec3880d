"""The dequantize adapter: merged weights equal the libraries' own dequantization, bit for bit.

Each checkpoint is written by the tool itself, on the CPU, from a tiny random Llama:
bitsandbytes LLM.int8 and 4-bit by transformers' ``from_pretrained(quantization_config=
BitsAndBytesConfig(...), device_map="cpu")`` then ``save_pretrained``; FP8 by transformers'
own save-side op ``Fp8Quantize`` (what ``FineGrainedFP8Config`` writes; quantizing on load
needs a GPU) with ``quantization_config`` in config.json. The anchors run in the test on the
same file: bitsandbytes' ``int8_vectorwise_dequant`` (what transformers'
``dequantize_bnb_weight`` calls) and transformers loading the FP8 checkpoint on a machine
without FP8 support (``Fp8Dequantize``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
import transformers
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from app.enums import Reason, Verdict
from app.errors import UnmergeableTensorError
from app.matching.adapters import Adaptation
from app.matching.analysis import Analysis
from app.merge.adapters import adapt_tensor
from app.merge.reference import merge_state_dict
from app.merge.write import MergeSpec, write_merged
from tests.matching.scenarios import analyse_file

pytestmark = [
    # bitsandbytes says at import that its optional CPU kernels package is absent.
    pytest.mark.filterwarnings("ignore:.*kernels.*:UserWarning"),
    pytest.mark.filterwarnings("ignore::DeprecationWarning:bitsandbytes.*"),
    pytest.mark.filterwarnings("ignore::FutureWarning:bitsandbytes.*"),
]

LLAMA: dict[str, Any] = {
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "num_key_value_heads": 2,
    "vocab_size": 64,
    "max_position_embeddings": 64,
}
ARCH = "transformers:llama"
LINEARS = [
    f"model.layers.{i}.{m}"
    for i in range(2)
    for m in (
        *(f"self_attn.{p}_proj" for p in "qkvo"),
        *(f"mlp.{p}_proj" for p in ("gate", "up", "down")),
    )
]
"""The layers both quantizers replace: every nn.Linear but lm_head."""
WIDE = {**LLAMA, "hidden_size": 64, "intermediate_size": 128, "num_attention_heads": 4}
"""Rows of whole 64-value blocks, as in real models (bitsandbytes 4-bit's default block)."""


def _kwargs(dtype: str = "float32", config: dict[str, Any] = LLAMA) -> dict[str, Any]:
    return {"config": {**config, "dtype": dtype}, "auto_class": "AutoModelForCausalLM"}


def _llama(
    dtype: torch.dtype = torch.float32, config: dict[str, Any] = LLAMA
) -> transformers.LlamaForCausalLM:
    torch.manual_seed(0)
    return transformers.LlamaForCausalLM(transformers.LlamaConfig(**config)).to(dtype)


def _bnb_file(root: Path, config: dict[str, Any] = LLAMA, **quantization: Any) -> Path:
    """transformers + bitsandbytes on the CPU: quantize on load, save_pretrained."""
    _llama(config=config).save_pretrained(root / "float")
    quantized = transformers.AutoModelForCausalLM.from_pretrained(
        root / "float",
        quantization_config=transformers.BitsAndBytesConfig(**quantization),
        device_map="cpu",
        dtype=torch.float16,
    )
    quantized.save_pretrained(root / "quantized")
    return root / "quantized" / "model.safetensors"


def _fp8_file(root: Path, **config: Any) -> Path:
    """transformers' Fp8Quantize on every projection of a bfloat16 Llama, as
    ``FineGrainedFP8Config`` saves it, with its quantization_config in config.json."""
    from transformers.integrations.finegrained_fp8 import Fp8Quantize
    from transformers.quantizers.quantizer_finegrained_fp8 import FineGrainedFP8HfQuantizer

    model = _llama(torch.bfloat16)
    fp8 = transformers.FineGrainedFP8Config(**config)
    quantize = Fp8Quantize(FineGrainedFP8HfQuantizer(fp8))
    state: dict[str, torch.Tensor] = {}
    for key, value in model.state_dict().items():
        state.update(
            quantize.convert({key: value}) if key.endswith("proj.weight") else {key: value}
        )
    root.mkdir(parents=True, exist_ok=True)
    save_file(state, root / "model.safetensors", metadata={"format": "pt"})
    model.config.quantization_config = fp8.to_dict()
    model.config.save_pretrained(root)
    return root / "model.safetensors"


@pytest.fixture(scope="module")
def bnb_int8(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _bnb_file(tmp_path_factory.mktemp("bnb8"), load_in_8bit=True)


@pytest.fixture(scope="module")
def fp8(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _fp8_file(tmp_path_factory.mktemp("fp8"), weight_block_size=[16, 16])


def _merge(
    path: Path, analysis: Analysis, out: Path, kwargs: dict[str, Any], **spec: Any
) -> dict[str, torch.Tensor]:
    """What a worker runs: write_merged with the analysis' key_map and adaptations."""
    merged = write_merged(
        path,
        out,
        spec=MergeSpec(ARCH, kwargs, **spec),
        state_dict_path=analysis.checkpoint.state_dict_path,
        key_map=analysis.key_map,
        adaptations=analysis.adaptations,
        exact_init_max_bytes=1 << 30,
    )
    assert merged.loaded_keys == len(analysis.key_map) + len(analysis.adaptations)
    return load_file(out)


def _bnb_dequantized(path: Path, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """bitsandbytes' own dequantization of every int8 weight in the file, cast as
    transformers casts it (``dequantize_bnb_weight(...).to(dtype)``)."""
    from bitsandbytes.functional import int8_vectorwise_dequant

    stored = load_file(path)
    return {
        f"{m}.weight": int8_vectorwise_dequant(stored[f"{m}.weight"], stored[f"{m}.SCB"]).to(dtype)
        for m in LINEARS
    }


def _bnb4_dequantized(path: Path, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """bitsandbytes' own ``dequantize_4bit`` of every 4-bit weight, from the QuantState it
    rebuilds from the file (``QuantState.from_dict``, as ``Linear4bit`` loads it)."""
    from bitsandbytes.functional import QuantState, dequantize_4bit

    stored = load_file(path)
    out = {}
    for m in LINEARS:
        prefix = f"{m}.weight."
        parts = {k[len(prefix) :]: v for k, v in stored.items() if k.startswith(prefix)}
        state = QuantState.from_dict(parts, device=torch.device("cpu"))
        out[f"{m}.weight"] = dequantize_4bit(stored[f"{m}.weight"], state).to(dtype)
    return out


def _logits(
    state: dict[str, torch.Tensor], dtype: torch.dtype, config: dict[str, Any] = LLAMA
) -> torch.Tensor:
    model = _llama(dtype, config)
    model.load_state_dict(state, strict=True)
    ids = torch.arange(24).reshape(2, 12) % LLAMA["vocab_size"]
    with torch.no_grad():
        logits: torch.Tensor = model.eval()(ids).logits
    return logits


def _assert_dequantized(analysis: Analysis, scheme: str) -> None:
    assert analysis.verdict is Verdict.COMPATIBLE
    assert analysis.result.loaded_parameter_fraction == 1.0
    assert [a.key for a in analysis.adaptations] == [f"{m}.weight" for m in LINEARS]
    assert {(a.adapter, a.operation) for a in analysis.adaptations} == {("dequantize", scheme)}
    assert not analysis.result.unexpected  # scales and formats consumed by the adapter
    assert not analysis.explanations.unexpected
    assert not {e.reason for e in analysis.explanations.missing.values()} & {Reason.QUANTIZED}
    assert "dequantized into the model's dtype by the dequantize adapter" in analysis.message
    assert any(n.startswith("Adapter dequantize: 14 keys loaded") for n in analysis.adapter_notes)


def test_dequantize_bnb_int8_equals_bitsandbytes_int8_vectorwise_dequant(
    bnb_int8: Path, tmp_path: Path
) -> None:
    analysis = analyse_file(bnb_int8, ARCH, _kwargs(), adapt=("dequantize",))
    _assert_dequantized(analysis, "bnb_int8")
    q_proj = analysis.adaptations[0]
    assert q_proj.checkpoint_keys == tuple(
        f"{LINEARS[0]}.{leaf}" for leaf in ("weight", "SCB", "weight_format")
    )
    merged = _merge(bnb_int8, analysis, tmp_path / "m.safetensors", _kwargs())
    expected = _bnb_dequantized(bnb_int8, torch.float32)
    for key, value in expected.items():
        assert merged[key].dtype == torch.float32
        assert torch.equal(merged[key], value), key
    # The reference merge (the in-memory definition) with the library's tensors put in.
    stored = load_file(bnb_int8)
    loaded = {k: stored[v] for k, v in analysis.key_map.items()} | expected
    reference = merge_state_dict(_llama().state_dict(), loaded)
    assert merged.keys() == reference.keys()
    assert all(torch.equal(merged[k], reference[k]) for k in reference)
    assert torch.equal(_logits(merged, torch.float32), _logits(reference, torch.float32))


def test_dequantize_fp8_equals_transformers_loading_it_without_fp8(
    fp8: Path, tmp_path: Path
) -> None:
    analysis = analyse_file(fp8, ARCH, _kwargs("bfloat16"), adapt=("dequantize",))
    _assert_dequantized(analysis, "fp8")
    assert "Fp8Dequantize" in analysis.adaptations[0].detail
    merged = _merge(fp8, analysis, tmp_path / "m.safetensors", _kwargs("bfloat16"))
    # transformers on a machine without FP8: "we will default to dequantizing the model".
    library = transformers.AutoModelForCausalLM.from_pretrained(fp8.parent, device_map="cpu")
    assert isinstance(library.model.layers[0].self_attn.q_proj, torch.nn.Linear)
    expected = {k: v.detach() for k, v in library.state_dict().items()}
    assert merged.keys() == expected.keys()
    for key, value in expected.items():
        assert merged[key].dtype == value.dtype == torch.bfloat16
        assert torch.equal(merged[key], value), key
    assert torch.equal(_logits(merged, torch.bfloat16), _logits(expected, torch.bfloat16))


@pytest.mark.parametrize(
    ("weight_dtype", "scale_fmt"),
    [
        (torch.float8_e4m3fn, "float"),
        (torch.float8_e4m3fn, "ue8m0"),
        (torch.float8_e5m2, "float"),
    ],
)
def test_dequantize_fp8_tensor_equals_fp8_dequantize(
    weight_dtype: torch.dtype, scale_fmt: str
) -> None:
    from transformers.integrations.finegrained_fp8 import Fp8Dequantize, Fp8Quantize
    from transformers.quantizers.quantizer_finegrained_fp8 import FineGrainedFP8HfQuantizer

    config = transformers.FineGrainedFP8Config(weight_block_size=[16, 32], scale_fmt=scale_fmt)
    quantizer = FineGrainedFP8HfQuantizer(config)
    torch.manual_seed(2)
    quantized = Fp8Quantize(quantizer).convert({"fc.weight": torch.randn(48, 64)})
    weight = quantized["fc.weight"].to(torch.float32).to(weight_dtype)
    scale = quantized["fc.weight_scale_inv"]
    tensors = {"fc.weight": weight, "fc.weight_scale_inv": scale}
    a = Adaptation("fc.weight", "dequantize", "fp8", tuple(tensors), "", (48, 64))
    expected = Fp8Dequantize(quantizer)._dequantize_one(weight, scale, torch.float32)
    assert torch.equal(adapt_tensor(a, tensors.__getitem__), expected)
    per_tensor = {"fc.weight": weight, "fc.weight_scale_inv": torch.tensor(0.25)}
    expected = Fp8Dequantize(quantizer)._dequantize_one(weight, torch.tensor(0.25), torch.float32)
    assert torch.equal(adapt_tensor(a, per_tensor.__getitem__), expected)


@pytest.mark.parametrize("policy", ["model", "checkpoint"])
def test_dequantize_streaming_merge_equals_the_reference_merge(
    fp8: Path, tmp_path: Path, policy: str
) -> None:
    """The in-memory definition, computing the same adaptations, gives the same bytes."""
    kwargs = _kwargs("bfloat16")
    analysis = analyse_file(fp8, ARCH, kwargs, adapt=("dequantize",))
    merged = _merge(fp8, analysis, tmp_path / "m.safetensors", kwargs, dtype_policy=policy)
    stored = load_file(fp8)
    reference = merge_state_dict(
        _llama(torch.bfloat16).state_dict(),
        {k: stored[v] for k, v in analysis.key_map.items()},
        dtype_policy=policy,  # type: ignore[arg-type]
        adaptations={a.key: a for a in analysis.adaptations},
        checkpoint=stored,
    )
    assert merged.keys() == reference.keys()
    for key, value in reference.items():
        assert merged[key].dtype == value.dtype == torch.bfloat16, key
        assert torch.equal(merged[key], value), key


def test_dequantize_without_the_option_changes_nothing_and_suggests_it(bnb_int8: Path) -> None:
    analysis = analyse_file(bnb_int8, ARCH, _kwargs())
    assert not analysis.adaptations
    quantized = {
        k for k, e in analysis.explanations.missing.items() if e.reason is Reason.QUANTIZED
    }
    assert quantized == {f"{m}.weight" for m in LINEARS}
    assert not quantized & set(analysis.result.matched)
    assert '"adapt": ["dequantize"]' in analysis.message
    [suggestion] = analysis.suggestions
    assert suggestion.options["adapt"] == ["dequantize"]
    assert suggestion.loaded_parameter_fraction == 1.0
    assert suggestion.verdict is Verdict.COMPATIBLE


def test_dequantize_checkpoint_dtype_policy_still_writes_the_models_dtype(
    bnb_int8: Path, tmp_path: Path
) -> None:
    analysis = analyse_file(bnb_int8, ARCH, _kwargs(), adapt=("dequantize",))
    out = tmp_path / "m.safetensors"
    merged = _merge(bnb_int8, analysis, out, _kwargs(), dtype_policy="checkpoint")
    assert merged[f"{LINEARS[0]}.weight"].dtype == torch.float32  # not the file's int8
    assert merged["model.embed_tokens.weight"].dtype == torch.float16  # the file's own
    expected = _bnb_dequantized(bnb_int8, torch.float32)
    assert all(torch.equal(merged[k], v) for k, v in expected.items())


def test_dequantize_tiled_weight_format_is_refused_before_a_wrong_merge(
    bnb_int8: Path, tmp_path: Path
) -> None:
    stored = load_file(bnb_int8)
    stored[f"{LINEARS[0]}.weight_format"] = torch.tensor(1, dtype=torch.uint8)  # col32
    path = tmp_path / "col32.safetensors"
    save_file(stored, path)
    analysis = analyse_file(path, ARCH, _kwargs(), adapt=("dequantize",))
    with pytest.raises(UnmergeableTensorError, match="tiled bitsandbytes format"):
        _merge(path, analysis, tmp_path / "m.safetensors", _kwargs())
    assert not (tmp_path / "m.safetensors").exists()


@pytest.mark.parametrize(
    "quantization",
    [
        {"bnb_4bit_quant_type": "nf4", "bnb_4bit_use_double_quant": True},
        {"bnb_4bit_quant_type": "fp4"},
    ],
    ids=["nf4-nested", "fp4"],
)
def test_dequantize_bnb_4bit_equals_bitsandbytes_dequantize_4bit(
    quantization: dict[str, Any], tmp_path: Path
) -> None:
    path = _bnb_file(tmp_path, WIDE, load_in_4bit=True, **quantization)
    analysis = analyse_file(path, ARCH, _kwargs(config=WIDE), adapt=("dequantize",))
    _assert_dequantized(analysis, "bnb_4bit")
    merged = _merge(path, analysis, tmp_path / "m.safetensors", _kwargs(config=WIDE))
    expected = _bnb4_dequantized(path, torch.float32)
    for key, value in expected.items():
        assert torch.equal(merged[key], value), key
    stored = load_file(path)
    library = {k: stored[k].float() for k in merged if k not in expected} | expected
    assert torch.equal(_logits(merged, torch.float32, WIDE), _logits(library, torch.float32, WIDE))


def test_dequantize_bnb_4bit_narrow_rows_equal_bitsandbytes_pytorch_kernel(
    tmp_path: Path,
) -> None:
    """Rows shorter than a block (32 < 64): bitsandbytes' PyTorch kernel is the anchor (its
    CPU library kernel gives other values there, farther from the float weights)."""
    from bitsandbytes.backends.default.ops import _dequantize_4bit_compute
    from bitsandbytes.functional import QuantState

    path = _bnb_file(tmp_path, load_in_4bit=True, bnb_4bit_use_double_quant=True)
    analysis = analyse_file(path, ARCH, _kwargs(), adapt=("dequantize",))
    merged = _merge(path, analysis, tmp_path / "m.safetensors", _kwargs())
    stored = load_file(path)
    for m in LINEARS:
        prefix = f"{m}.weight."
        parts = {k[len(prefix) :]: v for k, v in stored.items() if k.startswith(prefix)}
        state = QuantState.from_dict(parts, device=torch.device("cpu"))
        absmax = torch.ops.bitsandbytes.dequantize_blockwise.default(
            state.absmax, state.state2.absmax, state.state2.code, state.state2.blocksize,
            torch.float32,
        ) + state.offset  # fmt: skip
        expected = _dequantize_4bit_compute(
            stored[f"{m}.weight"].reshape(-1), absmax, state.code, state.blocksize,
            state.shape, state.dtype,
        )  # fmt: skip
        assert torch.equal(merged[f"{m}.weight"], expected.float()), m


def test_dequantize_bnb_4bit_bad_quant_state_is_refused(tmp_path: Path) -> None:
    path = _bnb_file(tmp_path, WIDE, load_in_4bit=True)
    stored = load_file(path)
    key = next(k for k in stored if k.startswith(f"{LINEARS[0]}.weight.quant_state."))
    stored[key] = torch.tensor(list(b'{"quant_type": "int3"}'), dtype=torch.uint8)
    save_file(stored, path)
    analysis = analyse_file(path, ARCH, _kwargs(config=WIDE), adapt=("dequantize",))
    with pytest.raises(UnmergeableTensorError, match="is not the quant_state bitsandbytes packs"):
        _merge(path, analysis, tmp_path / "m.safetensors", _kwargs(config=WIDE))


def test_dequantize_refuses_gptq_and_an_uneven_fp8_grid_per_key(tmp_path: Path) -> None:
    from tests.matching.test_layouts import gptq

    analysis = analyse_file(
        gptq(tmp_path / "gptq.safetensors"), ARCH, _kwargs(), adapt=("dequantize",)
    )
    assert not analysis.adaptations
    why = analysis.explanations.missing[f"{LINEARS[0]}.weight"]
    assert why.reason is Reason.QUANTIZED
    assert "Not adapted: not proven for GPTQ" in why.detail

    fp8_path = _fp8_file(tmp_path / "fp8", weight_block_size=[16, 16])
    stored = load_file(fp8_path)
    stored[f"{LINEARS[0]}.weight_scale_inv"] = torch.ones(3, 2)  # 32 rows in 3 blocks?
    save_file(stored, fp8_path)
    analysis = analyse_file(fp8_path, ARCH, _kwargs(), adapt=("dequantize",))
    assert len(analysis.adaptations) == 13
    why = analysis.explanations.missing[f"{LINEARS[0]}.weight"]
    assert why.reason is Reason.QUANTIZED
    assert "does not divide the weight [32, 32] into equal blocks" in why.detail


def test_dequantize_bnb_file_is_laid_out_as_bitsandbytes_writes_it(bnb_int8: Path) -> None:
    """The fixture is the tool's own output (not a reproduction): int8 rows, SCB, row format."""
    with safe_open(bnb_int8, "pt") as f:
        assert f.get_slice(f"{LINEARS[0]}.weight").get_dtype() == "I8"
        assert f.get_tensor(f"{LINEARS[0]}.weight_format").item() == 0
    config = json.loads((bnb_int8.parent / "config.json").read_text())
    assert config["quantization_config"]["load_in_8bit"] is True
