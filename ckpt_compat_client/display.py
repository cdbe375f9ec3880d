"""What the commands show: transfer progress, the stages of a check, the summary table.

Rich draws all of it on a terminal. Off a terminal (CI, pipes, files) the same calls write
plain lines a log keeps and a script parses: no colour, no cursor movement, no box drawing, no
wrapping; one line per finished transfer, one per stage, and the summary as ``name  value``
rows.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Mapping
from typing import Any

from rich import box
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, Task, TaskID, TextColumn
from rich.table import Table
from rich.text import Text

from ckpt_compat_client.client import Progress as ProgressCallback

_PLAIN_WIDTH = 10_000
"""Off a terminal nothing wraps: a message stays one line, however long."""

VERDICT_STYLES: Mapping[str, str] = {
    "compatible": "bold green",
    "compatible_with_changes": "bold green",
    "partial": "bold yellow",
    "incompatible": "bold red",
}
_SHOWN_NAMES = 8


def make_console(*, stderr: bool = False) -> Console:
    """A console on stdout (results) or stderr (progress, stages, errors).

    Rich decides whether the stream is a terminal (``isatty``, ``TTY_COMPATIBLE``,
    ``FORCE_COLOR``, ``NO_COLOR``); off one, lines are not wrapped at 80 columns.
    """
    console = Console(stderr=stderr, highlight=False)
    if console.is_terminal:
        return console
    return Console(stderr=stderr, highlight=False, width=_PLAIN_WIDTH)


def format_bytes(count: float) -> str:
    """``44.7 MB``: decimal units, as rich's transfer columns use."""
    for unit in ("bytes", "kB", "MB", "GB", "TB"):
        if abs(count) < 1000 or unit == "TB":
            return f"{count:,.0f} {unit}" if unit == "bytes" else f"{count:.1f} {unit}"
        count /= 1000
    raise AssertionError("unreachable")


class _Transfer:
    """One transfer's progress callback: feeds a rich bar on a terminal, and off one prints a
    single line when it ends (``upload 44.7 MB in 4.6 s, 9.8 MB/s``)."""

    def __init__(self, console: Console, label: str, bar: Progress | None) -> None:
        self._console = console
        self._label = label
        self._bar = bar
        self._task: TaskID | None = None
        self._started = time.monotonic()
        self._done = 0
        self._total = 0

    def __call__(self, done: int, total: int) -> None:
        self._done, self._total = done, total
        if self._bar is None:
            return
        if self._task is None:
            self._task = self._bar.add_task(self._label, total=total or None)
        self._bar.update(self._task, completed=done, total=total or None)

    def rate(self) -> float:
        """Bytes per second over the whole transfer."""
        return self._done / max(time.monotonic() - self._started, 1e-6)

    def finish(self) -> None:
        if self._bar is not None or not self._done:
            return
        seconds = time.monotonic() - self._started
        self._console.print(
            f"{self._label} {format_bytes(self._done)} in {seconds:.1f} s, "
            f"{format_bytes(self.rate())}/s",
            markup=False,
        )


class _RateColumn(TextColumn):
    """The average rate since the transfer started (rich's own column shows ``?`` until it
    has samples, so a fast upload would end on ``?``)."""

    def __init__(self) -> None:
        super().__init__("")

    def render(self, task: Task) -> Text:
        elapsed = task.finished_time or task.elapsed or 0.0
        rate = task.completed / max(elapsed, 1e-6)
        return Text(f"{format_bytes(rate)}/s", style="progress.data.speed")


@contextlib.contextmanager
def transfer(console: Console, label: str) -> Iterator[ProgressCallback]:
    """A progress callback for ``Client.submit`` / ``download_merged``, showing bytes and rate.

    Example:
        >>> with transfer(make_console(stderr=True), "upload") as progress:  # doctest: +SKIP
        ...     client.submit(path, "torchvision:resnet18", progress=progress)
    """
    bar = None
    if console.is_terminal:
        bar = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            TextColumn("{task.percentage:>3.0f}%"),
            DownloadColumn(),
            _RateColumn(),
            console=console,
        )
    callback = _Transfer(console, label, bar)
    with bar if bar is not None else contextlib.nullcontext():
        yield callback
    callback.finish()


class StageFollower:
    """Follows a check through its stages (queued, starting, reading, building, matching,
    merging, reporting): a spinner with the current stage and its time on a terminal, and one
    line per stage everywhere (``check 1a2b3c4d5e6f: matching``)."""

    def __init__(self, console: Console) -> None:
        self._console = console
        self._status = console.status("submitting", spinner="dots")
        self._stage = ""
        self._since = time.monotonic()

    def __enter__(self) -> StageFollower:
        self._status.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._status.stop()

    def __call__(self, check: Mapping[str, Any]) -> None:
        """Called with every state of the check (``Client.wait``'s ``on_update``)."""
        stage = str((check.get("progress") or {}).get("stage") or check["status"])
        if stage != self._stage:
            self._stage, self._since = stage, time.monotonic()
            self._console.print(f"check {str(check['id'])[:12]}: {stage}", markup=False)
        self._status.update(f"{stage} ({time.monotonic() - self._since:.0f} s)")


def summary_rows(report: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The summary as (name, value) rows: verdict, counts, what trains and what stays."""
    summary, plan = report["summary"], report.get("training_plan") or {}
    return [
        ("verdict", str(summary["verdict"])),
        ("architecture", str(report["architecture"]["name"])),
        ("checkpoint", str(report["checkpoint"]["filename"])),
        ("parameters loaded", f"{100 * summary['loaded_parameter_fraction']:.1f} %"),
        ("matched", str(summary["matched"])),
        ("missing", str(summary["missing"])),
        ("unexpected", str(summary["unexpected"])),
        ("shape mismatched", str(summary["shape_mismatched"])),
        ("dtype differs", str(summary["dtype_differs"])),
        ("train", _tensors(plan, "trainable")),
        ("freeze", _tensors(plan, "frozen")),
    ]


def _tensors(plan: Mapping[str, Any], side: str) -> str:
    count = plan.get(f"{side}_parameter_count", 0)
    return f"{len(plan.get(side, []))} tensors, {count:,} parameters"


def what_to_train(plan: Mapping[str, Any]) -> str:
    """The trainable tensors, by the plan's patterns when it has them (``fc.*``), else by
    name, the first few only."""
    names = list(plan.get("trainable_patterns") or plan.get("trainable") or [])
    shown = ", ".join(names[:_SHOWN_NAMES])
    if len(names) > _SHOWN_NAMES:
        shown += f", ... ({len(names) - _SHOWN_NAMES} more)"
    return shown


def print_summary(console: Console, report: Mapping[str, Any]) -> None:
    """The summary table, the report's message and what to train."""
    rows = summary_rows(report)
    if console.is_terminal:
        verdict_style = VERDICT_STYLES.get(rows[0][1], "bold")
        table = Table(box=box.ROUNDED, show_header=False, title_justify="left")
        table.title = f"Check {report.get('check_id', '')}".strip()
        table.add_column(style="bold")
        table.add_column()
        for name, value in rows:
            table.add_row(name, Text(value, style=verdict_style if name == "verdict" else ""))
        console.print(table)
    else:  # aligned rows with no trailing blanks, as ``awk '$1 == "verdict"'`` wants them
        width = max(len(name) for name, _ in rows)
        for name, value in rows:
            console.print(Text(f"{name:<{width}}  {value}"))
    message = str(report["summary"].get("message") or "")
    if message:
        console.print(Text(message))
    trainable = what_to_train(report.get("training_plan") or {})
    if trainable:
        console.print(Text(f"Train: {trainable}"))
