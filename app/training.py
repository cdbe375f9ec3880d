"""The training-plan helper lives in ``ckpt_compat_client.training`` (one copy, shipped by both
distributions); this name stays for ``from app.training import apply_training_plan``."""

from ckpt_compat_client.training import apply_training_plan, freeze_norm_statistics

__all__ = ["apply_training_plan", "freeze_norm_statistics"]
