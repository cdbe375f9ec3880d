"""A pool of warm worker processes (spawn) that run checks by id and outlive crashed workers.

Why not ``concurrent.futures.ProcessPoolExecutor``: one killed worker breaks that executor
and every pending future with it. Here a supervisor thread owns each worker's pipe and
process sentinel, so a crash or a timeout fails exactly the task that was running, the
worker is replaced, and the queue goes on. Messages are JSON on both ways, never pickles.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import json
import logging
import multiprocessing
import multiprocessing.connection
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.process import BaseProcess
from typing import Any

from app.errors import (
    AppError,
    CheckTimeoutError,
    ServiceUnavailableError,
    WorkerCrashedError,
    error_from_problem,
)

log = logging.getLogger(__name__)

_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def resident_bytes(pid: int) -> int | None:
    """The resident memory of a process (Linux /proc), or None where it cannot be read."""
    try:
        with open(f"/proc/{pid}/statm", encoding="ascii") as statm:  # noqa: PTH123
            return int(statm.read().split()[1]) * _PAGE_SIZE
    except (OSError, ValueError, IndexError):
        return None


JobFailed = Callable[[str, dict[str, Any]], None]


@dataclass(eq=False)
class _Task:
    kind: str  # "job" | "call"
    payload: dict[str, Any]
    future: concurrent.futures.Future[Any] = field(default_factory=concurrent.futures.Future)
    deadline: float = 0.0
    urgent: bool = False  # goes before queued tasks


@dataclass(eq=False)
class _Worker:
    process: BaseProcess
    conn: multiprocessing.connection.Connection
    ready: bool = False
    task: _Task | None = None
    tasks_done: int = 0


class WorkerPool:
    """Runs jobs (check ids) and calls (named functions with JSON arguments) in workers.

    Args:
        size: Number of worker processes.
        settings: The settings as a JSON-able dict, handed to each worker.
        timeout: Seconds a task may run before its worker is killed.
        max_tasks: Tasks a worker runs before it is replaced (bounds leaks).
        max_rss_bytes: Resident memory above which a worker is replaced after its task
            (a big merge leaves the allocator holding memory); 0 = no ceiling.
        on_job_failed: Called with (job_id, problem) when a worker dies or times out on a job.
        worker_target: The worker's entry point (tests pass a stand-in speaking the protocol).
    """

    def __init__(
        self,
        size: int,
        *,
        settings: dict[str, Any],
        timeout: float,
        max_tasks: int,
        max_rss_bytes: int = 0,
        on_job_failed: JobFailed,
        worker_target: Callable[..., None] | None = None,
    ) -> None:
        self._size = size
        self._settings = settings
        self._timeout = timeout
        self._max_tasks = max_tasks
        self._max_rss_bytes = max_rss_bytes
        self._on_job_failed = on_job_failed
        self._worker_target = worker_target
        self._ctx = multiprocessing.get_context("spawn")
        self._workers: list[_Worker] = []
        self._pending: collections.deque[_Task] = collections.deque()
        self._jobs: dict[str, concurrent.futures.Future[Any]] = {}
        self._cancelled: set[str] = set()
        # Why workers were replaced (GET /metrics): crashed, timed_out, memory_cap,
        # max_tasks, max_rss, cancelled.
        self.replacements: collections.Counter[str] = collections.Counter()
        self._lock = threading.Lock()
        self._wake_r, self._wake_w = self._ctx.Pipe(duplex=False)
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._supervise, name="worker-pool", daemon=True)

    # ------------------------------------------------------------------ public

    def start(self) -> None:
        """Start the workers and the supervisor thread."""
        self._workers = [self._spawn() for _ in range(self._size)]
        self._thread.start()

    def stop(self) -> None:
        """Stop the supervisor and the workers; queued jobs stay queued in the database."""
        self._stopping.set()
        self._wake()
        if self._thread.is_alive():
            self._thread.join(timeout=10)
        for worker in self._workers:
            self._retire(worker)
        with self._lock:
            for task in self._pending:
                task.future.cancel()
            self._pending.clear()

    @property
    def ready_workers(self) -> int:
        """Workers that finished warming up and are alive."""
        return sum(1 for w in self._workers if w.ready and w.process.is_alive())

    def submit_job(self, job_id: str) -> concurrent.futures.Future[Any]:
        """Queue a check; the future completes when its worker is done (status lives in SQL).

        Idempotent: a check queued or running here already keeps its place.
        """
        task = _Task("job", {"id": job_id})
        with self._lock:
            if job_id in self._jobs:
                return self._jobs[job_id]
            self._cancelled.discard(job_id)
            self._jobs[job_id] = task.future
        task.future.add_done_callback(lambda _f: self._jobs.pop(job_id, None))
        self._enqueue(task)
        return task.future

    def cancel_job(self, job_id: str) -> None:
        """Drop a queued check, or stop the worker running it (the check is being deleted)."""
        with self._lock:
            if job_id not in self._jobs:
                return
            self._cancelled.add(job_id)
        self._wake()

    @property
    def backlog(self) -> int:
        """Tasks waiting for a worker."""
        return len(self._pending)

    async def call(self, fn: str, /, *, urgent: bool = True, **kwargs: Any) -> Any:
        """Run a named worker function and return its JSON result; its AppError is re-raised.

        ``urgent`` calls (cheap ones a page waits on, like the catalogue) go before queued
        checks; others (descriptions, whose cost the caller chooses) queue behind them.
        """
        task = _Task("call", {"fn": fn, "kwargs": kwargs}, urgent=urgent)
        self._enqueue(task)
        return await asyncio.wrap_future(task.future)

    async def wait_job(self, job_id: str, timeout: float) -> None:
        """Wait up to ``timeout`` seconds for a job queued in this process to finish."""
        future = self._jobs.get(job_id)
        if future is None or timeout <= 0:
            return
        try:
            await asyncio.wait_for(asyncio.shield(asyncio.wrap_future(future)), timeout)
        except (TimeoutError, concurrent.futures.CancelledError):
            return

    # ------------------------------------------------------------------ supervisor

    def _enqueue(self, task: _Task) -> None:
        if self._stopping.is_set():
            task.future.set_exception(ServiceUnavailableError("The service is shutting down."))
            return
        with self._lock:
            # Urgent calls answer people waiting on a page: they go before queued checks.
            if task.urgent:
                self._pending.appendleft(task)
            else:
                self._pending.append(task)
        self._wake()

    def _wake(self) -> None:
        with self._lock:
            self._wake_w.send_bytes(b"1")

    def _spawn(self) -> _Worker:
        from app.jobs.worker import worker_main

        parent, child = self._ctx.Pipe(duplex=True)
        process = self._ctx.Process(
            target=self._worker_target or worker_main,
            args=(child, self._settings),
            name="ckpt-compat-worker",
            daemon=True,
        )
        process.start()
        child.close()
        return _Worker(process=process, conn=parent)

    def _supervise(self) -> None:
        while not self._stopping.is_set():
            self._dispatch()
            waitables: list[Any] = [self._wake_r]
            for worker in self._workers:
                waitables += [worker.conn, worker.process.sentinel]
            for ready in multiprocessing.connection.wait(waitables, timeout=self._next_timeout()):
                if ready is self._wake_r:
                    while self._wake_r.poll():
                        self._wake_r.recv_bytes()
                    continue
                owner = self._owner(ready)
                if owner is None:
                    continue
                if ready is owner.conn:
                    self._receive(owner)
                elif not owner.process.is_alive():
                    self._replace(
                        owner,
                        WorkerCrashedError(
                            "The worker process died while running this check (for example it was "
                            "killed or ran out of memory). Other checks are not affected; retry, "
                            "and if it fails again the file is probably too large for this server."
                        ),
                    )
            self._enforce_deadlines()
            self._enforce_cancellations()

    def _enforce_cancellations(self) -> None:
        with self._lock:
            if not self._cancelled:
                return
            cancelled, self._cancelled = self._cancelled, set()
            for task in [t for t in self._pending if t.payload.get("id") in cancelled]:
                self._pending.remove(task)
                task.future.set_result(None)
        for worker in list(self._workers):
            if worker.task is not None and worker.task.payload.get("id") in cancelled:
                task, worker.task = worker.task, None
                self.replacements["cancelled"] += 1
                self._replace(worker, None)
                task.future.set_result(None)

    def _owner(self, waitable: Any) -> _Worker | None:
        for worker in self._workers:
            if waitable is worker.conn or waitable == worker.process.sentinel:
                return worker
        return None

    def _dispatch(self) -> None:
        for worker in self._workers:
            if not worker.ready or worker.task is not None:
                continue
            with self._lock:
                if not self._pending:
                    return
                task = self._pending.popleft()
            if not task.future.set_running_or_notify_cancel():
                continue
            task.deadline = time.monotonic() + self._timeout
            worker.task = task
            try:
                worker.conn.send_bytes(json.dumps({"kind": task.kind, **task.payload}).encode())
            except OSError:
                self._replace(worker, WorkerCrashedError("The worker process died."))

    def _receive(self, worker: _Worker) -> None:
        try:
            message = json.loads(worker.conn.recv_bytes())
        except (EOFError, OSError):
            self._replace(
                worker,
                WorkerCrashedError(
                    "The worker process died while running this check. Other checks are not "
                    "affected; retry, and if it fails again the file is probably too large."
                ),
            )
            return
        if message.get("kind") == "ready":
            worker.ready = True
            return
        task, worker.task = worker.task, None
        worker.tasks_done += 1
        # A worker that hit its memory limit asks to go (its heap may be fragmented or half
        # torn down); others go after max_tasks or above the RSS ceiling. The replacement is
        # in place before the task's waiters wake.
        retire = bool(message.get("retire"))
        reason = (
            "memory_cap"
            if retire
            else "max_tasks"
            if worker.tasks_done >= self._max_tasks
            else "max_rss"
            if self._over_memory(worker)
            else None
        )
        if reason is not None:
            self.replacements[reason] += 1
            self._replace(worker, None)
        if task is None:
            return
        if message.get("ok"):
            task.future.set_result(message.get("result"))
        elif task.kind == "job":
            # run_job records its own failures; this is one it could not record.
            self._on_job_failed(task.payload["id"], message["problem"])
            task.future.set_result(None)
        else:
            task.future.set_exception(error_from_problem(message["problem"]))

    def _over_memory(self, worker: _Worker) -> bool:
        if not self._max_rss_bytes or worker.process.pid is None:
            return False
        rss = resident_bytes(worker.process.pid)
        if rss is not None and rss > self._max_rss_bytes:
            log.info("recycling worker %s: %d bytes resident", worker.process.pid, rss)
            return True
        return False

    def _next_timeout(self) -> float:
        deadlines = [w.task.deadline for w in self._workers if w.task is not None]
        return max(0.01, min(deadlines) - time.monotonic()) if deadlines else 1.0

    def _enforce_deadlines(self) -> None:
        now = time.monotonic()
        for worker in list(self._workers):
            if worker.task is not None and now > worker.task.deadline:
                self._replace(
                    worker,
                    CheckTimeoutError(
                        f"The check ran past the time limit of {self._timeout:g} seconds "
                        "(setting CKPT_COMPAT_CHECK_TIMEOUT_SECONDS); its worker was stopped.",
                        limit="check_timeout_seconds",
                        limit_value=self._timeout,
                    ),
                )

    def _replace(self, worker: _Worker, error: AppError | None) -> None:
        """Retire a worker, start a fresh one in its place, then fail its task with ``error``.

        The replacement is in place before the task's waiters wake, so whoever reads the pool
        after a failed check sees the new worker.
        """
        task, worker.task = worker.task, None
        if error is not None:
            kind = "timed_out" if isinstance(error, CheckTimeoutError) else "crashed"
            self.replacements[kind] += 1
        self._retire(worker, busy=task is not None)
        if not self._stopping.is_set():
            index = self._workers.index(worker)
            self._workers[index] = self._spawn()
        if task is not None and not task.future.done():
            problem = (error or WorkerCrashedError("The worker stopped.")).to_problem()
            if task.kind == "job":
                try:
                    self._on_job_failed(task.payload["id"], problem)
                finally:
                    task.future.set_result(None)
            else:
                task.future.set_exception(error_from_problem(problem))

    @staticmethod
    def _retire(worker: _Worker, *, busy: bool = False) -> None:
        """Stop a worker: ask an idle one to exit, kill a busy (hung or timed-out) one."""
        if worker.process.is_alive():
            with contextlib.suppress(OSError):
                worker.conn.send_bytes(b'{"kind": "stop"}')
            worker.process.join(timeout=0 if busy else 0.5)
            if worker.process.is_alive():
                worker.process.kill()
                worker.process.join(timeout=5)
        worker.conn.close()
