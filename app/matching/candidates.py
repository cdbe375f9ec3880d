"""Choose among a file's candidate state_dicts by the model parameter elements each would load."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from app.matching.align import Alignment, score_names
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
    """

    checkpoint: CheckpointIndex
    scores: Mapping[str, int]
    reason: str


def choose_candidate(
    checkpoint: CheckpointIndex,
    model: TensorIndex,
    *,
    requested: str,
    align: Callable[[TensorIndex], Alignment],
) -> CandidateChoice:
    """Score every candidate state_dict and keep the one that loads the most.

    Each candidate is aligned with ``align`` (the check's own alignment) and scored by the model
    parameter elements it would load. A tie keeps the reader's choice, which prefers EMA
    weights as timm does (``state_dict_ema`` before ``state_dict``).

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
    best = max(scores.values())
    tied = [p for p, score in scores.items() if score == best]
    chosen = path if path in tied else tied[0]
    listing = ", ".join(f"{p!r} loads {s}" for p, s in scores.items())
    if len(tied) > 1:
        reason = (
            f"Candidates tie ({listing} parameter elements); kept {chosen!r}, which the reader "
            "prefers (EMA weights first, as timm does)."
        )
    else:
        reason = f"Used {chosen!r}, which loads the most parameter elements ({listing})."
    notes = tuple(n for n in checkpoint.notes if not n.startswith(READER_CHOICE_NOTE))
    chosen_index = dataclasses.replace(
        checkpoint,
        index=checkpoint.candidate_indexes[chosen],
        state_dict_path=chosen,
        notes=(*notes, reason),
    )
    return CandidateChoice(chosen_index, scores, reason)
