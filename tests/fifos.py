"""FIFOs in tests: call code that might block on one, with a bound that needs no GIL.

A reader that opens a FIFO blocks in ``open()`` until a writer comes, and a native reader
(safetensors' ``safe_open``) blocks there holding the GIL, so no thread of the test process
can time it out. A test of code that must refuse FIFOs must not hang the suite when that code
regresses: a watchdog process releases the FIFOs after a bound (``release``), the call then
ends, and the test fails as blocked.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TypeVar

import pytest

T = TypeVar("T")
BOUND_SECONDS = 10.0
_FIRED = 3
_WATCHDOG = f"""
import sys, time
time.sleep(float(sys.argv[1]))
sys.path.insert(0, {str(Path(__file__).parents[1])!r})
from tests.fifos import release
from pathlib import Path
release([Path(p) for p in sys.argv[2:]])
sys.exit({_FIRED})
"""


def release(fifos: Iterable[Path]) -> None:
    """Let any reader blocked on these FIFOs go on, and make later opens of them not block.

    Opening a FIFO for writing completes a reader's blocked open (it then reads end-of-file);
    the FIFO is then replaced by an empty regular file, so the code under test fails fast
    instead of blocking again on its next open.
    """
    for fifo in fifos:
        try:
            writer: int | None = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        except OSError:  # ENXIO: no reader blocked on it (yet)
            writer = None
        empty = fifo.with_name(fifo.name + ".released")
        empty.write_bytes(b"")
        os.replace(empty, fifo)
        if writer is not None:
            os.close(writer)


def call_bounded(
    call: Callable[[], T], *, fifos: Iterable[Path], seconds: float = BOUND_SECONDS
) -> T:
    """``call()``'s result or exception, failing the test if it blocked on the FIFOs."""
    watchdog = subprocess.Popen(
        [sys.executable, "-c", _WATCHDOG, str(seconds), *(str(p) for p in fifos)]
    )
    start = time.monotonic()
    try:
        return call()
    finally:
        # The call may end as soon as the watchdog opens a FIFO, before the watchdog exits.
        fired = watchdog.poll() == _FIRED or time.monotonic() - start >= seconds
        watchdog.kill()
        watchdog.wait()
        if fired:
            pytest.fail(f"the call blocked for {seconds} s (opened a FIFO for reading?)")
