"""Issue 11, item 4: tied parameters found by parameter identity on the meta model.

Checkpoints are written by transformers' own ``save_pretrained`` (random init of the real
classes, tiny configs), which stores a tied weight once: T5's ``shared.weight`` without
``encoder/decoder.embed_tokens.weight`` and ``lm_head.weight``; BART, mBART and Marian's
``model.shared.weight``; GPT-2's ``transformer.wte.weight`` without ``lm_head.weight``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
import transformers
from safetensors.torch import load_file

from app.architectures import describe
from app.jobs.task import merge_spec
from app.matching.ties import first_name
from app.merge.write import write_merged
from app.schemas import CheckOptions, Reason, Verdict
from app.tensors import TensorKind
from tests.matching.scenarios import analyse_file

SEQ2SEQ = {
    "d_model": 16,
    "encoder_layers": 1,
    "decoder_layers": 1,
    "encoder_attention_heads": 2,
    "decoder_attention_heads": 2,
    "encoder_ffn_dim": 32,
    "decoder_ffn_dim": 32,
    "vocab_size": 50,
    "max_position_embeddings": 32,
}
T5 = {"d_model": 16, "d_ff": 32, "num_layers": 1, "num_heads": 2, "d_kv": 8, "vocab_size": 50}
GPT2 = {"n_embd": 16, "n_layer": 1, "n_head": 2, "vocab_size": 50, "n_positions": 32}
MARIAN = {**SEQ2SEQ, "pad_token_id": 49, "decoder_start_token_id": 49}

S2S = "AutoModelForSeq2SeqLM"
# model_type, config fields, the class save_pretrained is called on, its Auto class, shared key
CASES = [
    ("t5", T5, "T5ForConditionalGeneration", S2S, "shared.weight"),
    ("bart", SEQ2SEQ, "BartForConditionalGeneration", S2S, "model.shared.weight"),
    ("mbart", SEQ2SEQ, "MBartForConditionalGeneration", S2S, "model.shared.weight"),
    ("marian", MARIAN, "MarianMTModel", S2S, "model.shared.weight"),
    ("gpt2", GPT2, "GPT2LMHeadModel", "AutoModelForCausalLM", "transformer.wte.weight"),
]


def _save_pretrained(tmp_path: Path, model_type: str, fields: dict[str, Any], cls: str) -> Path:
    config = transformers.CONFIG_MAPPING[model_type](**fields)
    torch.manual_seed(0)
    model = getattr(transformers, cls)(config)
    model.save_pretrained(tmp_path)
    return tmp_path / "model.safetensors"


def _kwargs(fields: dict[str, Any], auto_class: str) -> dict[str, Any]:
    return {"config": fields, "auto_class": auto_class}


@pytest.mark.parametrize(("model_type", "fields", "cls", "auto", "shared"), CASES)
def test_ties_save_pretrained_aliases_load_with_their_parameter(
    tmp_path: Path, model_type: str, fields: dict[str, Any], cls: str, auto: str, shared: str
) -> None:
    path = _save_pretrained(tmp_path, model_type, fields, cls)
    stored = load_file(path)
    analysis = analyse_file(path, f"transformers:{model_type}", _kwargs(fields, auto))
    model = describe(f"transformers:{model_type}", _kwargs(fields, auto)).index
    aliases = [i.key for i in model if i.kind is TensorKind.TIED]
    assert aliases and all(first_name(a, model) == shared for a in aliases)
    assert shared in stored and not any(a in stored for a in aliases)
    for alias in aliases:  # not "new: train them"
        why = analysis.explanations.missing[alias]
        assert why.reason is Reason.IGNORABLE, why
        assert repr(shared) in why.detail
    # Counted once, as model.parameters() does: the file fills every parameter.
    real = getattr(transformers, cls)(transformers.CONFIG_MAPPING[model_type](**fields))
    assert analysis.result.model_parameter_numel == sum(p.numel() for p in real.parameters())
    plan = analysis.plan
    assert shared in plan.frozen and not set(aliases) & set(plan.trainable)
    assert set(aliases) <= set(plan.frozen)  # every name, one decision
    if model_type != "marian":  # Marian's sinusoidal embed_positions are not saved either
        assert analysis.verdict is Verdict.COMPATIBLE, analysis.message
        assert analysis.result.loaded_parameter_fraction == 1.0
        assert analysis.message.startswith("Everything loads")


def test_ties_trainable_alias_trains_its_parameter_under_every_name(tmp_path: Path) -> None:
    path = _save_pretrained(tmp_path, "t5", T5, "T5ForConditionalGeneration")
    kwargs = _kwargs(T5, "AutoModelForSeq2SeqLM")
    analysis = analyse_file(path, "transformers:t5", kwargs, trainable=(r"^lm_head\.",))
    plan = analysis.plan
    assert {"shared.weight", "lm_head.weight", "encoder.embed_tokens.weight"} <= set(plan.trainable)
    assert "shared.weight" not in plan.frozen
    grouped = [p for g in plan.groups for p in g.params]
    assert "shared.weight" in grouped and "lm_head.weight" not in grouped  # counted once
    assert plan.trainable_numel == 50 * 16


def test_ties_merged_t5_loads_strictly_with_the_stored_embedding(tmp_path: Path) -> None:
    path = _save_pretrained(tmp_path, "t5", T5, "T5ForConditionalGeneration")
    kwargs = _kwargs(T5, "AutoModelForSeq2SeqLM")
    analysis = analyse_file(path, "transformers:t5", kwargs)
    out = tmp_path / "merged.safetensors"
    options = CheckOptions(architecture_kwargs=kwargs, merge={"format": "safetensors"})
    write_merged(
        path,
        out,
        spec=merge_spec("transformers:t5", options),
        state_dict_path="",
        key_map=analysis.key_map,
        exact_init_max_bytes=1 << 30,
    )
    model = transformers.T5ForConditionalGeneration(transformers.T5Config(**T5))
    model.load_state_dict(load_file(out), strict=True)
    shared = load_file(path)["shared.weight"]
    for module in (model.shared, model.encoder.embed_tokens, model.decoder.embed_tokens):
        assert torch.equal(module.weight, shared)


def test_ties_file_holding_only_the_alias_loads_the_parameter(tmp_path: Path) -> None:
    """A GPT-2 state_dict holding ``lm_head.weight`` but not ``transformer.wte.weight``."""
    path = _save_pretrained(tmp_path, "gpt2", GPT2, "GPT2LMHeadModel")
    state = load_file(path)
    state["lm_head.weight"] = state.pop("transformer.wte.weight")
    alias_only = tmp_path / "alias_only.pt"
    torch.save(state, alias_only)
    analysis = analyse_file(alias_only, "transformers:gpt2", _kwargs(GPT2, "AutoModelForCausalLM"))
    why = analysis.explanations.missing["transformer.wte.weight"]
    assert why.reason is Reason.IGNORABLE and "'lm_head.weight'" in why.detail
    assert analysis.result.loaded_parameter_fraction == 1.0
    assert analysis.verdict is Verdict.COMPATIBLE
