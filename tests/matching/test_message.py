"""Tests of app.matching.message."""

from __future__ import annotations

import doctest

import app.matching.message as message_module
from app.matching.compare import compare
from app.matching.message import compose_message, counted, human_count
from app.matching.reasons import explain
from app.matching.verdict import decide_verdict
from app.tensors import TensorIndex
from tests.matching.helpers import ckpt_of, model_of


def _message(ckpt: TensorIndex, model: TensorIndex, **kwargs: object) -> str:
    result = compare(ckpt, model)
    why = explain(result, checkpoint=ckpt, model=model, sources={k: k for k in ckpt.tensors})
    return compose_message(result, why, decide_verdict(result, why), model=model, kwargs=kwargs)


def test_human_count_docstring_example_runs() -> None:
    assert doctest.testmod(message_module).failed == 0


def test_compose_message_everything_loads() -> None:
    model = model_of(("a.w", (2000,)))
    assert (
        _message(ckpt_of(("a.w", (2000,))), model)
        == "Everything loads (2,000 parameters in 1 tensor)."
    )


def test_compose_message_nothing_loads() -> None:
    assert _message(ckpt_of(("x", (1,))), model_of(("a.w", (3,)))) == (
        "Nothing in the checkpoint loads into this model (0 of 3 parameters): check the "
        "architecture, its kwargs and the key options."
    )


def test_compose_message_names_the_new_module_and_the_unused_one() -> None:
    model = model_of(("body.w", (900,)), ("head.w", (100,)))
    message = _message(ckpt_of(("body.w", (900,)), ("cls.w", (5,))), model)
    assert message == (
        "body loads fully (900 parameters). head is new (100 parameters): train it. "
        "The checkpoint's cls is not used by this model."
    )


def test_compose_message_under_the_share_says_another_architecture() -> None:
    model = model_of(("a.w", (5,)), ("b.w", (95,)))
    message = _message(ckpt_of(("a.w", (5,)), ("b.w", (3,))), model)
    assert message.startswith("Only 5.0% of the model's parameters load (5 of 100)")


def test_compose_message_lossy_cast() -> None:
    model = model_of(("a.w", (4,)))
    message = _message(ckpt_of(("a.w", (4,)), dtype="float64"), model)
    assert message.endswith("1 tensors are cast float64 -> float32, which loses precision.")


def test_compose_message_unexplained_points_to_the_keys() -> None:
    model = model_of(("a.w", (40,)), ("a.b", (4,)))
    message = _message(ckpt_of(("a.w", (40,))), model)
    assert "1 model tensor gets no weights for no known reason, e.g. a.b" in message


def test_human_count_exact_below_a_million() -> None:
    assert [human_count(n) for n in (1, 2_304, 999_999, 23_508_032, 6_738_415_616)] == [
        "1",
        "2,304",
        "999,999",
        "23.5 M",
        "6.7 B",
    ]


def test_counted_noun_agrees_with_the_count() -> None:
    assert counted(1, "input channel") == "1 input channel"
    assert counted(3, "input channel") == "3 input channels"
    assert counted(2_304, "parameter") == "2,304 parameters"
