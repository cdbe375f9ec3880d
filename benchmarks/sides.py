"""The two sides of each benchmark, each run in a fresh process: the naive recipe and ours.

Every side warms up first (ours exactly as a ckpt-compat worker does, the naive recipe with
the seed code's imports), records its resident memory, then does the work. The
result printed is wall time of the work, the resident memory before it and the process's
peak resident memory (``ru_maxrss``), so imports are paid by neither side's time but
count in both sides' peak.
"""

from __future__ import annotations

import json
import resource
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


def _rss() -> int:
    with open("/proc/self/statm", encoding="ascii") as statm:  # noqa: PTH123
        import os

        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _peak() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _counters() -> dict[str, float]:
    """CPU seconds, page faults and storage bytes of this process so far.

    A run that is slow with little CPU waited: on the disk (``read_mb`` says whether its
    input was still in the page cache) or on the machine. A run slow in system time may
    have made the kernel compact or reclaim memory (the ``/proc/vmstat`` counters).
    """
    usage = resource.getrusage(resource.RUSAGE_SELF)
    counters = {"user_s": usage.ru_utime, "sys_s": usage.ru_stime, "major_faults": usage.ru_majflt}
    with open("/proc/self/io", encoding="ascii") as io:  # noqa: PTH123
        for line in io:
            name, value = line.split(":")
            if name in ("read_bytes", "write_bytes"):
                counters[name.replace("_bytes", "_mb")] = int(value) / 1024**2
    # Machine-wide: the kernel stalling allocations to compact or reclaim memory.
    with open("/proc/vmstat", encoding="ascii") as vmstat:  # noqa: PTH123
        for line in vmstat:
            name, value = line.split()
            if name in _VMSTAT:
                counters[name] = int(value)
    return counters


_VMSTAT = frozenset({"compact_stall", "compact_migrate_scanned", "pgscan_direct", "pgscan_kswapd"})


def warm_up(side: str, name: str) -> None:
    """Import what each side has imported before its work starts.

    Ours: exactly what a warm worker has done (``app.jobs.worker.warm_up``, the app's engine
    modules, the catalogue listed); its describe cache stays cold, so every measured check
    builds its architecture on meta. The naive recipe: the seed code's imports, torch and the
    library of the architecture.
    """
    import os

    os.environ["HF_HUB_OFFLINE"] = "1"
    if side == "naive":
        import importlib

        import torch

        library = {"torchvision": "torchvision", "timm": "timm"}.get(name.split(":")[0])
        importlib.import_module(library or "transformers.modeling_utils")
        torch.set_num_threads(1)
        return
    from app.jobs.worker import warm_up as warm_up_worker

    warm_up_worker()
    import app.jobs.task
    import app.matching.analysis
    import app.matching.report
    import app.merge.streaming
    import app.readers.checkpoint  # noqa: F401
    from app.architectures import list_architectures

    list_architectures()


# ---------------------------------------------------------------- the naive recipe


def _naive_load(path: Path) -> dict[str, Any]:
    import torch
    from safetensors.torch import load_file

    if path.is_dir():
        out: dict[str, Any] = {}
        for shard in sorted(path.glob("*.safetensors")):
            out.update(load_file(shard))
        return out
    if path.suffix == ".safetensors":
        return load_file(path)
    loaded: dict[str, Any] = torch.load(path, map_location="cpu", weights_only=True)
    return loaded


def _naive_build(name: str, kwargs: dict[str, Any]) -> Any:
    """The seed code's build: the model for real on the CPU, randomly initialised."""
    from app.architectures import build_model, resolve

    return build_model(resolve(name), kwargs, device="cpu")


def naive(path: Path, name: str, kwargs: dict[str, Any], out: Path | None) -> dict[str, Any]:
    """torch.load everything, build the model, filter by key and shape, load_state_dict."""
    state = _naive_load(path)
    model = _naive_build(name, kwargs)
    expected = model.state_dict()
    fits = {k: v for k, v in state.items() if k in expected and v.shape == expected[k].shape}
    model.load_state_dict(fits, strict=False)
    result = {
        "matched": len(fits),
        "missing": len([k for k in expected if k not in fits]),
        "unexpected": len([k for k in state if k not in expected]),
    }
    if out is not None:
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, out)
    return result


# ---------------------------------------------------------------- ckpt-compat


def ours_report(path: Path, name: str, kwargs: dict[str, Any]) -> dict[str, Any]:
    """The worker's report path: read_checkpoint, describe, analyse, build_report."""
    from app.architectures import describe
    from app.jobs.task import match_options
    from app.matching.analysis import analyse
    from app.matching.report import build_report
    from app.readers import read_checkpoint
    from app.schemas import CheckOptions, Report

    options = CheckOptions(architecture_kwargs=kwargs)
    checkpoint = read_checkpoint(path)
    architecture = describe(name, kwargs)
    analysis = analyse(checkpoint, architecture, match_options(options))
    report = build_report(
        check_id="0" * 32,
        filename=path.name,
        sha256="0" * 64,
        size_bytes=0,
        analysis=analysis,
        architecture=architecture,
    )
    Report.model_validate(report)
    return {"verdict": report["summary"]["verdict"], "matched": report["summary"]["matched"]}


def ours_merge(path: Path, name: str, kwargs: dict[str, Any], out: Path) -> dict[str, Any]:
    """The worker's merge path: analyse for the key map, then ``write_merged`` as run_job does."""
    from app.architectures import describe
    from app.config import Settings
    from app.jobs.task import match_options, merge_spec
    from app.matching.analysis import analyse
    from app.merge.write import write_merged
    from app.readers import read_checkpoint
    from app.schemas import CheckOptions, MergeOptions

    options = CheckOptions(architecture_kwargs=kwargs, merge=MergeOptions())
    start = time.perf_counter()
    checkpoint = read_checkpoint(path)
    analysis = analyse(checkpoint, describe(name, kwargs), match_options(options))
    analysed = time.perf_counter()
    merged = write_merged(
        path,
        out,
        spec=merge_spec(name, options),
        state_dict_path=analysis.checkpoint.state_dict_path,
        key_map=analysis.key_map,
        exact_init_max_bytes=Settings().exact_init_max_bytes,
    )
    return {
        "loaded": merged.loaded_keys,
        "kept": merged.kept_keys,
        "notes": list(merged.notes),
        "analyse_s": analysed - start,
        "write_s": time.perf_counter() - analysed,
    }


def copy_file(path: Path, out: Path) -> dict[str, Any]:
    """The floor of a merge: copying the checkpoint file."""
    import shutil

    shutil.copyfile(path, out)
    return {}


SIDES: dict[str, Callable[..., dict[str, Any]]] = {
    "naive": naive,
    "ours_report": ours_report,
    "ours_merge": ours_merge,
    "copy": copy_file,
}


def main() -> None:
    """``python -m benchmarks.sides SIDE JSON_ARGS [MEMORY_LIMIT_BYTES]``; prints one JSON line."""
    side, args = sys.argv[1], json.loads(sys.argv[2])
    if len(sys.argv) > 3:
        limit = int(sys.argv[3])
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    warm_up(side, str(args.get("name", "")))
    for key in ("path", "out"):
        if args.get(key):
            args[key] = Path(args[key])
    if args.get("out"):
        # Removed here, just before the work, for every side alike: this VM hands memory
        # freed for a few seconds back to its host (virtio-balloon free page reporting), and
        # the next writer then pays to fault it back in. Removed by the bench before a side's
        # warm-up, the output of a side that starts fast (the copy) landed in the pages just
        # freed and that of a side that imports torch first in reported ones.
        args["out"].unlink(missing_ok=True)
    before = _rss()
    counted = _counters()
    start = time.perf_counter()
    try:
        result = SIDES[side](**args)
        error = None
    except (MemoryError, RuntimeError) as exc:  # the naive recipe on a file that cannot fit
        result, error = {}, f"{type(exc).__name__}: {str(exc).splitlines()[0][:120]}"
    wall = time.perf_counter() - start
    spent = {key: round(value - counted[key], 3) for key, value in _counters().items()}
    line = {
        "wall": wall,
        "rss_before": before,
        "peak": _peak(),
        "result": result,
        "error": error,
        "spent": spent,
    }
    print(json.dumps(line), flush=True)


if __name__ == "__main__":
    main()
