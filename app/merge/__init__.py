"""Merges: write an architecture's state_dict with a checkpoint's matched tensors in it.

``write.write_merged`` is what a worker runs: it builds the model on meta and streams the
file (``streaming.stream_merge``); ``reference.merge_state_dict`` is the in-memory definition
the streamed file is tested against. Torch and the readers live here, never in
``app.matching``, which only plans what loads.
"""
