"""Choose among a file's candidate state_dicts by the model parameter elements each would load."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from app.matching.align import Alignment, score_names
from app.matching.twins import NEAR_TIE_SHARE, TwinChoice, choose_twin
from app.tensors import CheckpointIndex, TensorIndex

READER_CHOICE_NOTE = "Used the state_dict at"
"""The start of the reader's note on its own choice; replaced when matching chooses."""


@dataclass(frozen=True, slots=True)
class CandidateChoice:
    """The state_dict used and why.

    Attributes:
        checkpoint: The checkpoint index with the chosen candidate's tensors and path.
        scores: Candidate path -> model parameter elements it would load (scored ones only).
        reason: One sentence: why this candidate was used.
        twins: How a tie between candidates was settled (EMA and raw weights, DINO's teacher
            and student), if several load as much.
    """

    checkpoint: CheckpointIndex
    scores: Mapping[str, int]
    reason: str
    twins: TwinChoice | None = None


def choose_candidate(
    checkpoint: CheckpointIndex,
    model: TensorIndex,
    *,
    requested: str,
    align: Callable[[TensorIndex], Alignment],
) -> CandidateChoice:
    """Score every candidate state_dict and keep the one that loads the most.

    Each candidate is aligned with ``align`` (the check's own alignment) and scored by the model
    parameter elements it would load. Candidates within ``NEAR_TIE_SHARE`` of the best are
    twin copies: the conventions of ``app.matching.twins`` choose (an EMA copy over the raw
    weights, DINO's teacher over its student); when none applies, the reader's choice is used
    and ``twins.settled`` is False.

    Args:
        checkpoint: What the reader found; ``candidate_indexes`` holds every candidate's
            index when it chose automatically among several.
        model: The model index.
        requested: The ``state_dict_key`` option (``"auto"`` or a path).
        align: The alignment function applied to each candidate.

    Returns:
        The checkpoint with the chosen candidate, the scores and the reason.
    """
    path = checkpoint.state_dict_path
    if requested != "auto":
        return CandidateChoice(checkpoint, {}, f"The option state_dict_key named {path!r}.")
    if len(checkpoint.candidate_indexes) < 2:
        where = f"the dict at {path!r}" if path else "the file itself"
        return CandidateChoice(checkpoint, {}, f"The only dict of tensors in the file is {where}.")
    scores = {
        p: score_names(align(index).names, index, model)[0]
        for p, index in checkpoint.candidate_indexes.items()
    }
    chosen, twins = _choose(scores, preferred=path)
    listing = ", ".join(f"{p!r} loads {s}" for p, s in scores.items())
    if twins is not None:
        reason = f"Candidates tie ({listing} parameter elements). {twins.sentence()}"
    else:
        reason = f"Used {chosen!r}, which loads the most parameter elements ({listing})."
    notes = tuple(n for n in checkpoint.notes if not n.startswith(READER_CHOICE_NOTE))
    chosen_index = dataclasses.replace(
        checkpoint,
        index=checkpoint.candidate_indexes[chosen],
        state_dict_path=chosen,
        notes=(*notes, reason),
    )
    return CandidateChoice(chosen_index, scores, reason, twins)


def _choose(scores: Mapping[str, int], *, preferred: str) -> tuple[str, TwinChoice | None]:
    """The best candidate, and the twin choice when others load as much (within
    ``NEAR_TIE_SHARE``): conventions settle it, else the reader's ``preferred`` is tried."""
    best = max(scores.values())
    tied = [p for p, score in scores.items() if best and score >= best * (1 - NEAR_TIE_SHARE)]
    if len(tied) < 2:
        return max(scores, key=lambda p: scores[p]), None
    ranked = sorted(tied, key=lambda p: (p != preferred, -scores[p]))
    twins = choose_twin(ranked, option="state_dict_key")
    return twins.chosen, twins
