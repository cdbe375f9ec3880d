"""Where a check's callback stands (``checks.callback_state``); NULL: the check has none."""

from __future__ import annotations

from enum import StrEnum


class CallbackState(StrEnum):
    PENDING = "pending"  # waiting for the check to finish, or for the next attempt
    DELIVERED = "delivered"  # a 2xx answer
    ABANDONED = "abandoned"  # CKPT_COMPAT_CALLBACK_RETRY_SECONDS passed without a 2xx
