"""Check ``summary.message`` against the key lists of the same check: every module a sentence
names must be what the keys say it is (loaded fully, new, unused, the twin copy used).

Used by the message tests over every scenario built in tests/matching and by the HTTP
scenarios of tests/api/test_scenarios.py, so no scenario's message can contradict its keys.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from app.matching.analysis import Analysis

_NAMES = r"[\w.\-]+(?:, [\w.\-]+)*(?: and \d+ more)?"
_START = r"(?:^|\. )"


@dataclass(frozen=True)
class KeyFacts:
    """The key lists of one check, as the report has them."""

    matched: Sequence[str]
    missing: Mapping[str, str]  # model key -> reason
    shape_mismatched: Mapping[str, str]  # model key -> checkpoint key
    unexpected: Sequence[str]  # original checkpoint keys
    checkpoint_keys: Sequence[str]  # every key of the state_dict used
    state_dict_path: str = ""

    @property
    def loaded_checkpoint_keys(self) -> set[str]:
        """Checkpoint keys whose tensor loads into the model."""
        unused = set(self.unexpected) | set(self.shape_mismatched.values())
        return {k for k in self.checkpoint_keys if k not in unused}


def facts_of_analysis(analysis: Analysis) -> KeyFacts:
    """The key facts of an engine-level analysis."""
    result, sources = analysis.result, analysis.alignment.sources
    return KeyFacts(
        matched=result.matched,
        missing={k: e.reason.value for k, e in analysis.explanations.missing.items()},
        shape_mismatched={m.key: sources[m.key] for m in result.shape_mismatched},
        unexpected=[sources.get(k, k) for k in result.unexpected],
        checkpoint_keys=analysis.checkpoint.index.keys(),
        state_dict_path=analysis.checkpoint.state_dict_path,
    )


def facts_of_report(report: Mapping[str, Any], checkpoint_keys: Iterable[str]) -> KeyFacts:
    """The key facts of a wire report, given the keys of the state_dict it used."""
    keys = report["keys"]
    return KeyFacts(
        matched=keys["matched"],
        missing={e["key"]: e["reason"] for e in keys["missing"]},
        shape_mismatched={e["key"]: e["checkpoint_key"] for e in keys["shape_mismatched"]},
        unexpected=[e["key"] for e in keys["unexpected"]],
        checkpoint_keys=list(checkpoint_keys),
        state_dict_path=report["checkpoint"]["state_dict_path"],
    )


def _names(text: str) -> list[str]:
    return re.sub(r" and \d+ more$", "", text).split(", ")


def _under(keys: Iterable[str], module: str) -> list[str]:
    return [k for k in keys if k == module or k.startswith(module + ".")]


def _model_keys(facts: KeyFacts) -> list[str]:
    return [*facts.matched, *facts.missing, *facts.shape_mismatched]


def assert_message_agrees(message: str, facts: KeyFacts) -> None:
    """Fail with the contradicting sentence when the message says what the keys do not."""
    matched = set(facts.matched)
    ignorable = {k for k, r in facts.missing.items() if r == "ignorable"}
    if message.startswith("Everything loads"):
        assert set(_model_keys(facts)) <= matched | ignorable, message
    if message.startswith("Nothing in the checkpoint loads"):
        assert not matched, message
    for found in re.finditer(_START + rf"({_NAMES}) loads? fully \(", message):
        for module in _names(found.group(1)):
            under = _under(_model_keys(facts), module)
            assert under and set(under) <= matched | ignorable, f"{module!r} in {message!r}"
            assert matched & set(under), f"{module!r} in {message!r}"
    for found in re.finditer(_START + rf"Everything but ({_NAMES}) loads", message):
        for module in _names(found.group(1)):
            assert not matched & set(_under(_model_keys(facts), module)), (module, message)
    for found in re.finditer(_START + rf"({_NAMES}) (?:is|are) new \(", message):
        for module in _names(found.group(1)):
            assert not matched & set(_under(_model_keys(facts), module)), (module, message)
    loaded = facts.loaded_checkpoint_keys
    for found in re.finditer(_START + rf"The checkpoint's ({_NAMES}) (?:is|are) not used", message):
        for module in _names(found.group(1)):
            assert _under(facts.checkpoint_keys, module), (module, message)
            assert not _under(loaded, module), f"{module!r} loads, yet {message!r}"
    for found in re.finditer(
        r"used '([^']*)' because .*?; ((?:'[^']*'(?:, )?)+) not used", message
    ):
        chosen, others = found.group(1), re.findall(r"'([^']*)'", found.group(2))
        _assert_twin_used(facts, loaded, chosen, others, message)


def _assert_twin_used(
    facts: KeyFacts, loaded: set[str], chosen: str, others: list[str], message: str
) -> None:
    if chosen.endswith("."):  # a strip_prefix twin: the copies are key prefixes
        assert any(k.startswith(chosen) for k in loaded), (chosen, message)
        assert not any(k.startswith(o) for o in others for k in loaded), (others, message)
    else:  # a state_dict_key twin: the copies are dicts of the file
        assert facts.state_dict_path == chosen, (chosen, message)
