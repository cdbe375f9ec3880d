"""The dispatch's former home, kept for importers: use ``app.readers`` itself.

``from app.readers.checkpoint import open_tensors`` still works; new code imports
``read_checkpoint``, ``load_tensors`` and ``open_tensors`` from ``app.readers``.
"""

from app.readers import load_tensors, open_tensors, read_checkpoint

__all__ = ["load_tensors", "open_tensors", "read_checkpoint"]
