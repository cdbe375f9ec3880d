"""The Celery application of the distributed mode: tasks that carry only ids, on Redis.

``ckpt-compat worker`` runs it (prefork). Each task calls what the local pool's workers call:
``run_job(check_id)`` for a check and ``app.jobs.calls.CALLS`` for a call, so both runners
run the same code. There is no result backend: a check's outcome lives in the database, and
a call's JSON answer is pushed to a Redis list its caller waits on (``app.jobs.redis_bus``).

Delivery: ``acks_late`` with ``reject_on_worker_lost`` hands a check whose worker died to
another worker; the claim in ``run_job`` makes a redelivered check for a running or finished
check a no-op, and the reaper (``app.jobs.reaper``) retries a dead worker's check once.
"""

from __future__ import annotations

import json
import logging
import os
from functools import cache
from typing import Any

from celery import Celery, signals
from celery.exceptions import SoftTimeLimitExceeded

from app.config import Settings, get_settings

log = logging.getLogger(__name__)

QUEUE = "ckpt-compat"
RUN_JOB = "ckpt_compat.run_job"
CALL = "ckpt_compat.call"
SOFT_LIMIT_MARGIN = 10.0
"""Seconds between the soft time limit (the check fails with check-timed-out) and the hard
one (the child process is killed)."""


def celery_config(settings: Settings) -> dict[str, Any]:
    """Celery's settings from ours: recycling, time limits and delivery guarantees."""
    hard_limit = settings.check_timeout_seconds + SOFT_LIMIT_MARGIN
    return {
        "broker_url": settings.broker_url,
        "broker_connection_retry_on_startup": True,
        # A message not acknowledged within this time is handed out again: it must be
        # longer than any check may run, or a long check would run twice.
        "broker_transport_options": {"visibility_timeout": int(hard_limit * 2 + 60)},
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "task_ignore_result": True,
        "result_backend": None,
        "task_soft_time_limit": settings.check_timeout_seconds,
        "task_time_limit": hard_limit,
        "worker_prefetch_multiplier": 1,
        "worker_max_tasks_per_child": settings.worker_max_tasks,
        "worker_max_memory_per_child": (settings.worker_max_rss_bytes // 1024) or None,
        "worker_hijack_root_logger": False,
        "task_default_queue": QUEUE,
        "accept_content": ["json"],
        "task_serializer": "json",
    }


@cache
def celery_app(settings_json: str | None = None) -> Celery:
    """The Celery app for these settings (the environment's by default)."""
    settings = Settings.model_validate_json(settings_json) if settings_json else get_settings()
    app = Celery("ckpt_compat", set_as_current=False)
    app.conf.update(celery_config(settings))
    app.conf.ckpt_compat_settings = settings.model_dump_json()

    def run_job_task(task: Any, check_id: str) -> None:
        _run_job(check_id, _settings_of(task.app))

    def call_task(task: Any, fn: str, kwargs: dict[str, Any], reply_to: str) -> None:
        _call(fn, kwargs, reply_to, _settings_of(task.app))

    app.task(name=RUN_JOB, bind=True, acks_late=True, reject_on_worker_lost=True)(run_job_task)
    app.task(name=CALL, bind=True)(call_task)
    return app


def _settings_of(app: Celery) -> Settings:
    return Settings.model_validate_json(app.conf.ckpt_compat_settings)


def _run_job(check_id: str, settings: Settings) -> None:
    from app.errors import CheckTimeoutError
    from app.jobs.redis_bus import publish_finished
    from app.jobs.task import job_context, run_job

    try:
        run_job(check_id, settings)
    except SoftTimeLimitExceeded:
        timeout = settings.check_timeout_seconds
        problem = CheckTimeoutError(
            f"The check ran past the time limit of {timeout:g} seconds "
            "(setting CKPT_COMPAT_CHECK_TIMEOUT_SECONDS); it was stopped.",
            limit="check_timeout_seconds",
            limit_value=timeout,
        ).to_problem()
        job_context(settings).repository.mark_failed(check_id, problem)
    finally:
        publish_finished(settings.broker_url, check_id)


def _call(fn: str, kwargs: dict[str, Any], reply_to: str, settings: Settings) -> None:
    from app.errors import AppError, InternalError
    from app.jobs.calls import CALLS
    from app.jobs.redis_bus import push_reply

    reply: dict[str, Any]
    try:
        reply = {"ok": True, "result": CALLS[fn](settings, **kwargs)}
    except AppError as exc:
        reply = {"ok": False, "problem": exc.to_problem()}
    except Exception:
        log.exception("call %s failed", fn)
        reply = {"ok": False, "problem": InternalError("The call failed.").to_problem()}
    push_reply(settings.broker_url, reply_to, json.dumps(reply, allow_nan=False))


def _warm_parent(**_kwargs: Any) -> None:
    """Harden and import torch once in the parent, so every forked child starts warm."""
    from app.jobs.worker import check_runtime, harden_torch_loading, warm_up

    harden_torch_loading()
    warm_up()
    import torch

    check_runtime(torch.__version__)


def _limit_child(**_kwargs: Any) -> None:
    """Each child: weights-only loading, the readers' limits and its address-space cap."""
    from app.jobs.worker import harden_torch_loading, limit_address_space, read_limits
    from app.readers.limits import set_limits

    harden_torch_loading()
    settings = get_settings()
    set_limits(read_limits(settings))
    limit_address_space(settings.max_worker_memory_bytes)
    from app.logs import configure_logging

    configure_logging(settings.log_format)
    os.environ.setdefault("CKPT_COMPAT_WORKER_KIND", "celery")


def _announce(sender: Any = None, **_kwargs: Any) -> None:
    """Publish the catalogue for API processes, and beat every few seconds (``/readyz``)."""
    import threading

    from app.jobs.calls import catalog
    from app.jobs.redis_bus import HEARTBEAT_TTL_SECONDS, beat, publish_catalogue

    settings = get_settings()
    rows = catalog(settings)
    publish_catalogue(settings.broker_url, rows)
    name = str(getattr(sender, "hostname", None) or os.getpid())

    def keep_beating() -> None:
        stop = threading.Event()
        while not stop.wait(HEARTBEAT_TTL_SECONDS / 3):
            try:
                beat(settings.broker_url, name, rows)
            except Exception:
                log.warning("heartbeat to the broker failed")

    beat(settings.broker_url, name, rows)
    threading.Thread(target=keep_beating, name="heartbeat", daemon=True).start()


signals.worker_init.connect(_warm_parent)
signals.worker_process_init.connect(_limit_child)
signals.worker_ready.connect(_announce)
