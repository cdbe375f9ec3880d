"""``GET /metrics``: what an operator watches, in the Prometheus text format (prometheus-client).

Each app has its own registry (tests run several apps in one process). Request counts,
upload sizes and durations are observed in this API process as they happen. Facts about
checks come from the database when Prometheus scrapes, so every API process reports the same
fleet-wide figures, whichever process recorded a check and whichever worker ran it:
checks by status, and the durations of checks finished since this process started. Queue
depth and worker replacements come from the runner.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Request, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector
from starlette.concurrency import run_in_threadpool
from starlette.middleware.base import BaseHTTPMiddleware

from app.logs import route_template

if TYPE_CHECKING:
    from app.api.deps import Services

router = APIRouter(tags=["service"])

DURATION_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900)


class Metrics:
    """The metrics of one app: a registry, its counters, and the database collector."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "ckpt_compat_http_requests",
            "HTTP requests answered, by route template and status.",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.upload_bytes = Counter(
            "ckpt_compat_upload_bytes",
            "Bytes of checkpoints received and stored (PUT /v1/uploads and multipart checks).",
            registry=self.registry,
        )
        self.upload_seconds = Histogram(
            "ckpt_compat_upload_duration_seconds",
            "Time to receive, hash and store one upload.",
            buckets=DURATION_BUCKETS,
            registry=self.registry,
        )
        self.check_seconds = Histogram(
            "ckpt_compat_check_duration_seconds",
            "Run time of checks (started to finished) that finished since this process started.",
            ["status"],
            buckets=DURATION_BUCKETS,
            registry=self.registry,
        )
        self._services: Services | None = None
        self._since = datetime.now(UTC)

    def attach(self, services: Services) -> None:
        """Read checks, queue and workers from these services when scraped."""
        self._services = services
        self.registry.register(_ServiceCollector(self, services))

    def scrape(self) -> bytes:
        """Observe the checks finished since the last scrape, then render every metric."""
        if self._services is not None:
            now = datetime.now(UTC)
            for status, seconds in self._services.repository.finished_since(self._since, now):
                self.check_seconds.labels(status=status).observe(seconds)
            self._since = now
        body: bytes = generate_latest(self.registry)
        return body

    def observe_upload(self, size_bytes: int, seconds: float) -> None:
        self.upload_bytes.inc(size_bytes)
        self.upload_seconds.observe(seconds)


class _ServiceCollector(Collector):
    """Collected at scrape time: checks by status (database), queue depth, worker restarts."""

    def __init__(self, metrics: Metrics, services: Services) -> None:
        self._metrics = metrics
        self._services = services

    def collect(self) -> Iterator[Any]:
        repository = self._services.repository
        by_status = GaugeMetricFamily(
            "ckpt_compat_checks", "Checks in the database, by status.", labels=["status"]
        )
        for status, count in sorted(repository.count_by_status().items()):
            by_status.add_metric([status], count)
        yield by_status
        runner = self._services.runner
        queue = GaugeMetricFamily(
            "ckpt_compat_queue_depth", "Checks and calls waiting for a worker (this runner)."
        )
        queue.add_metric([], float(_safe(lambda: runner.backlog)))
        yield queue
        workers = GaugeMetricFamily("ckpt_compat_workers_ready", "Workers able to take work.")
        workers.add_metric([], float(_safe(lambda: runner.ready_workers)))
        yield workers
        replaced = CounterMetricFamily(
            "ckpt_compat_worker_replacements",
            "Local worker processes replaced: crashed or killed (timeout, memory cap, cancel), "
            "or recycled (after worker_max_tasks checks or above worker_max_rss_bytes).",
            labels=["reason"],
        )
        for reason, count in sorted(getattr(runner, "replacements", {}).items()):
            replaced.add_metric([reason], count)
        yield replaced


def _safe(read: Callable[[], int]) -> int:
    try:
        return read()
    except Exception:
        return 0


class RequestMetrics(BaseHTTPMiddleware):
    """Counts every answered request by its route template (``/v1/checks/{check_id}``), so
    ids never become label values."""

    async def dispatch(
        self, request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        response = await call_next(request)
        metrics: Metrics | None = getattr(request.app.state, "metrics", None)
        if metrics is not None:
            template = route_template(request)
            metrics.requests.labels(request.method, template, str(response.status_code)).inc()
        return response


@router.get(
    "/metrics",
    summary="Prometheus metrics (behind the API key when keys are on)",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}},
)
async def metrics(request: Request) -> Response:
    state: Metrics = request.app.state.metrics
    body = await run_in_threadpool(state.scrape)
    return Response(content=body, media_type=CONTENT_TYPE_LATEST)


class UploadTimer:
    """Times one upload: ``with UploadTimer(metrics) as timer: ...; timer.stored(size)``."""

    def __init__(self, metrics: Metrics | None) -> None:
        self._metrics = metrics
        self._started = time.monotonic()

    def stored(self, size_bytes: int) -> None:
        if self._metrics is not None:
            self._metrics.observe_upload(size_bytes, time.monotonic() - self._started)
