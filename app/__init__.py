"""ckpt-compat: does a PyTorch checkpoint fit a model architecture, and which weights fit."""

__version__ = "0.1.0"
