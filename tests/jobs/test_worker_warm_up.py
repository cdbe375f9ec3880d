"""A worker's warm-up: every architecture library imported, the GPU-only packages left out.

Runs in a fresh interpreter, as a spawned worker does, because this test process has
imported torch (and possibly triton) already.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import torch
import torchvision
from safetensors.torch import save_file

from app.jobs.worker import UNUSED_IN_WORKERS

_PROBE = """
import json, sys
from pathlib import Path
from app.jobs.worker import warm_up
warm_up()
warm = {name: name in sys.modules for name in ("torch", "torchvision", "timm")}
from torch.utils._triton import has_triton
from app.architectures import describe
from app.readers import read_checkpoint
sizes = {
    name: len(describe(name, {}).index.tensors)
    for name in ("torchvision:resnet18", "timm:resnet18", "transformers:bert")
}
print(json.dumps({
    "warm": warm,
    "unused_loaded": [n for n in sys.argv[2:] if sys.modules.get(n) is not None],
    "has_triton": has_triton(),
    "sizes": sizes,
    "checkpoint_keys": len(read_checkpoint(Path(sys.argv[1])).index.tensors),
}))
"""


def test_warm_up_imports_the_libraries_and_keeps_gpu_packages_out(tmp_path: Path) -> None:
    path = tmp_path / "small.safetensors"
    save_file({"fc.weight": torch.zeros(2, 3), "fc.bias": torch.zeros(2)}, path)
    done = subprocess.run(
        [sys.executable, "-c", _PROBE, str(path), *UNUSED_IN_WORKERS],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"},
        cwd=Path(__file__).resolve().parents[2],
    )
    assert done.returncode == 0, done.stderr[-2000:]
    probe = json.loads(done.stdout.strip().splitlines()[-1])
    assert probe["warm"] == {"torch": True, "torchvision": True, "timm": True}
    assert probe["unused_loaded"] == []
    assert probe["has_triton"] is False
    expected = len(torchvision.models.resnet18().state_dict())
    assert probe["sizes"]["torchvision:resnet18"] == expected
    assert probe["sizes"]["timm:resnet18"] == expected  # same layout, other names
    assert probe["sizes"]["transformers:bert"] > 100
    assert probe["checkpoint_keys"] == 2
