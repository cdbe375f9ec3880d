"""Limits every reader enforces on hostile uploads."""

from __future__ import annotations

from app.errors import LimitExceededError

MAX_TENSORS_DEFAULT = 100_000


def check_tensor_count(count: int, *, max_tensors: int) -> None:
    """Raise when a state_dict holds more tensors than allowed.

    Args:
        count: The number of tensors found.
        max_tensors: The limit.

    Raises:
        LimitExceededError: ``count`` is above ``max_tensors``.
    """
    if count > max_tensors:
        raise LimitExceededError(
            f"The state_dict holds {count} tensors, more than the limit max_tensors={max_tensors}.",
            limit="max_tensors",
            limit_value=max_tensors,
        )
