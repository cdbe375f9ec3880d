"""Catalogue index benchmark: build time and size, and warm ranking of two checkpoints.

``python -m benchmarks.catalog_index [--cache-dir DIR]`` (run by ``make bench``): builds the
index of the whole catalogue into the cache when it is missing (about 4 CPU-minutes), then
ranks a torchvision resnet50 and a timm ViT-B checkpoint (shapes only, on meta) as a worker
does for ``?fits=``: once cold, then ``--repeat`` times warm (describe cache filled).
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path
from typing import Any


def _checkpoint(build: Any) -> Any:
    import torch

    from app.tensors import CheckpointIndex, TensorIndex, TensorInfo

    with torch.device("meta"):
        state = build().state_dict()
    infos = [TensorInfo(k, tuple(v.shape), "float32") for k, v in state.items()]
    return CheckpointIndex("torch_zip", TensorIndex.from_infos(infos))


def main() -> None:
    import timm
    import torchvision

    from app.catalog_index.closest import rank_catalogue
    from app.catalog_index.store import build_index, index_path, load_index
    from app.config import get_settings

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cache-dir", type=Path, default=None)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    cache = args.cache_dir or get_settings().cache_dir
    if load_index(cache) is None:
        started = time.process_time()
        summary = build_index(cache)
        print(f"index built: {summary}, {time.process_time() - started:.0f} CPU-s")
    index = load_index(cache)
    assert index is not None
    size = index_path(cache).stat().st_size
    print(
        f"index: {len(index.signatures)} architectures, {len(index.failed)} left out, "
        f"{size / 1024:.0f} KiB, built in {index.build_seconds:.0f} s"
    )
    cases = {
        "torchvision resnet50": lambda: torchvision.models.resnet50(),
        "timm vit_base_patch16_224": lambda: timm.create_model("vit_base_patch16_224"),
    }
    for label, build in cases.items():
        checkpoint = _checkpoint(build)
        started = time.perf_counter()
        best = rank_catalogue(checkpoint, index)[0]
        cold = time.perf_counter() - started
        warm = []
        for _ in range(args.repeat):
            started = time.perf_counter()
            rank_catalogue(checkpoint, index)
            warm.append(time.perf_counter() - started)
        print(
            f"{label}: best {best.name} {best.kwargs} ({best.loaded_parameter_fraction:.3f}); "
            f"cold {cold:.2f} s, warm median {statistics.median(warm):.2f} s"
        )


if __name__ == "__main__":
    main()
