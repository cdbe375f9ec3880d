"""Guards: every check a file passes before a library parses it (hostile input stops here).

``zip_archive`` (the zip laid out as torch.save writes it), ``pickle_scan`` (what a pickle
imports and builds, from its opcodes), ``torch_file`` (both torch formats: the scan, the
allowlist, storages and views against the bytes present), ``allowlist`` (the plain data
beyond torch's own allowlist), ``safetensors_header`` (header size, tensor count, layout).
"""
