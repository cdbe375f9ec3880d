"""Twin copies of the same weights in one file, and which one people evaluate.

Self-supervised and EMA training keep two copies of a network that load equally well into a
model: MoCo's query and key encoders, DINO's teacher and student, an EMA copy next to the
raw weights. Scores cannot tell them apart, and string order would pick at random, so ties
are settled by the conventions of the projects that save such files. A tie no convention
settles is reported, never settled silently (``TwinChoice.settled`` is False).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from app.enums import Verdict
from app.matching.prefixes import PrefixPair
from app.tensors import TensorIndex

NEAR_TIE_SHARE = 0.01
"""An alternative within this share (1%) of the winner's loaded elements is a near-tie: it is
listed in ``alternatives`` and named in the notes, and twin copies within it are settled by
convention."""


@dataclass(frozen=True, slots=True)
class TwinConvention:
    """One project's rule: a name part marking the copy it evaluates, and the other copy's.

    Attributes:
        project: Who saves files this way (``MoCo v2``).
        evaluated: The name part of the copy to use (``encoder_q``).
        other: The name part of the copy not used (``encoder_k``).
        why: Why, in a clause that follows "because" (says what each copy is).
    """

    project: str
    evaluated: str
    other: str
    why: str


TWIN_CONVENTIONS = (
    TwinConvention(
        "MoCo v1/v2",
        "encoder_q",
        "encoder_k",
        "MoCo evaluates the query encoder; the key encoder is its momentum copy",
    ),
    TwinConvention(
        "MoCo v3",
        "base_encoder",
        "momentum_encoder",
        "MoCo v3 evaluates the base encoder; the momentum encoder is its moving average",
    ),
    TwinConvention(
        "DINO", "teacher", "student", "DINO evaluates (and releases) the teacher, not the student"
    ),
    TwinConvention(
        "BYOL",
        "online",
        "target",
        "BYOL evaluates the online network; the target network is its moving average",
    ),
    TwinConvention(
        "ema-pytorch",
        "ema_model",
        "online_model",
        "ema-pytorch keeps the moving average in ema_model, which is the copy to evaluate",
    ),
)
"""Self-supervised pairs, checked before the EMA names: MoCo's key encoder and BYOL's target
are moving averages too, but those projects evaluate the other copy."""

EMA_NAMES = {
    "state_dict_ema": "timm's train.py",
    "model_ema": "timm's ModelEma and DeiT",
    "params_ema": "BasicSR, ESRGAN and Real-ESRGAN",
    "ema": "denoising-diffusion-pytorch and other trainers",
    "ema_model": "ema-pytorch",
    "ema_state_dict": "several trainers",
    "shadow": "EMA helpers that keep shadow weights",
}
"""Names of the exponential-moving-average copy, with who saves it under that name. The EMA
weights are what these projects evaluate and release, so they win a tie with the raw ones."""


@dataclass(frozen=True, slots=True)
class TwinChoice:
    """Which of several equally loading copies was used.

    Attributes:
        chosen: The prefix (or state_dict path) used.
        others: The other copies' prefixes (or paths).
        option: The option that picks a copy: ``strip_prefix`` or ``state_dict_key``.
        why: The convention's reason, or ``""`` when no convention settles the tie.
    """

    chosen: str
    others: tuple[str, ...]
    option: str
    why: str

    @property
    def settled(self) -> bool:
        """Whether a known convention chose (else the check cannot tell which copy to use)."""
        return bool(self.why)

    def sentence(self) -> str:
        """One sentence for ``summary.message`` and ``notes``."""
        names = ", ".join(repr(n) for n in (self.chosen, *self.others))
        if self.settled:
            unused = ", ".join(repr(n) for n in self.others)
            return (
                f"The checkpoint holds twin copies of these weights ({names}): used "
                f"{self.chosen!r} because {self.why}; {unused} not used (set {self.option} "
                "to use another)."
            )
        picks = " or ".join(f"{self.option} {n!r}" for n in (self.chosen, *self.others))
        return (
            f"The checkpoint holds copies of these weights that load equally ({names}) and no "
            f"known convention says which to use; {self.chosen!r} was tried: choose with "
            f"{picks}."
        )


def _parts(name: str) -> list[str]:
    return [p for p in name.split(".") if p]


def _tokens(part: str) -> set[str]:
    return {part, *part.split("_")}


def _ema_source(part: str) -> str | None:
    """Who names an EMA copy ``part`` (``params_ema``, ``model_ema``...), or None."""
    if part in EMA_NAMES:
        return EMA_NAMES[part]
    return "an EMA copy by its name" if "ema" in part.split("_") else None


def _prefers(a: str, b: str) -> str:
    """The reason a convention prefers name ``a`` over ``b``, or ``""``.

    The first dotted part where the names differ decides: ``module.encoder_q.`` against
    ``module.encoder_k.`` compares ``encoder_q`` with ``encoder_k``.
    """
    parts_a, parts_b = _parts(a), _parts(b)
    first = next(
        (i for i, (x, y) in enumerate(zip(parts_a, parts_b, strict=False)) if x != y),
        min(len(parts_a), len(parts_b)),
    )
    part_a = parts_a[first] if first < len(parts_a) else ""
    part_b = parts_b[first] if first < len(parts_b) else ""
    for rule in TWIN_CONVENTIONS:
        if rule.evaluated in _tokens(part_a) and rule.other in _tokens(part_b):
            return f"{rule.why} ({rule.project})"
    source = _ema_source(part_a)
    if source is not None and _ema_source(part_b) is None:
        return (
            f"{a!r} holds the exponential moving average of the weights, the copy {source} "
            "evaluate and release"
        )
    return ""


def choose_twin(names: Sequence[str], *, option: str) -> TwinChoice:
    """Choose among equally loading copies by the conventions of ``TWIN_CONVENTIONS`` and
    ``EMA_NAMES``; the first name is kept when no convention prefers one over all others.

    Args:
        names: The copies' prefixes or state_dict paths, best scored first.
        option: The option that picks one (``strip_prefix`` or ``state_dict_key``).

    Returns:
        The choice; ``settled`` is False when no convention decided.

    Example:
        >>> choice = choose_twin(["module.encoder_k.", "module.encoder_q."], option="strip_prefix")
        >>> choice.chosen, choice.settled
        ('module.encoder_q.', True)
    """
    for name in names:
        others = [n for n in names if n != name]
        reasons = [_prefers(name, other) for other in others]
        if all(reasons):
            return TwinChoice(name, tuple(others), option, reasons[0])
    return TwinChoice(names[0], tuple(names[1:]), option, "")


def settle_verdict(verdict: Verdict, twins: Sequence[TwinChoice]) -> Verdict:
    """``partial`` instead of a compatible verdict when a twin tie was not settled: the
    check loaded one copy on a guess, and the user has to say which copy they mean."""
    compatible = (Verdict.COMPATIBLE, Verdict.COMPATIBLE_WITH_CHANGES)
    if verdict in compatible and any(not t.settled for t in twins):
        return Verdict.PARTIAL
    return verdict


def settle_prefix_twins(
    scored: Sequence[tuple[int, int, PrefixPair]],
    checkpoint: TensorIndex,
    targets: Mapping[str, tuple[tuple[int, ...], int]],
) -> tuple[TwinChoice | None, PrefixPair]:
    """Among near-ties that load the same model keys from other checkpoint keys (twin
    copies), choose by convention.

    Args:
        scored: (loaded elements, matched keys, pair), best first.
        checkpoint: The checkpoint index.
        targets: Model key -> (shape, parameter elements).

    Returns:
        The choice (None when the file holds no twins) and the pair to use.
    """
    best_loaded, _, best_pair = scored[0]
    near = [s[2] for s in scored[1:] if s[0] >= best_loaded * (1 - NEAR_TIE_SHARE)]
    if not near:
        return None, best_pair
    first = _placements(best_pair, checkpoint, targets)
    group = {best_pair[0]: best_pair}
    for pair in near:
        placed = _placements(pair, checkpoint, targets)
        shared = first.keys() & placed.keys()
        same_sources = sum(1 for k in shared if first[k] == placed[k])
        twin = 2 * len(shared) >= min(len(first), len(placed)) and 2 * same_sources < len(shared)
        if twin and pair[0] not in group:
            group[pair[0]] = pair
    if len(group) < 2:
        return None, best_pair
    choice = choose_twin(list(group), option="strip_prefix")
    return choice, group[choice.chosen]


def _placements(
    pair: PrefixPair,
    checkpoint: TensorIndex,
    targets: Mapping[str, tuple[tuple[int, ...], int]],
) -> dict[str, str]:
    """Model key -> original checkpoint key, for the keys ``pair`` loads."""
    strip_prefix, add_prefix = pair
    out: dict[str, str] = {}
    for info in checkpoint:
        key = info.key
        if strip_prefix and key.startswith(strip_prefix):
            key = key[len(strip_prefix) :]
        target = targets.get(add_prefix + key)
        if target is not None and target[0] == info.shape:
            out[add_prefix + key] = info.key
    return out
