"""The delivery loop against a real receiver on loopback: signatures, retries, redirects,
the allowlist at connection time, giving up, and a restart between attempts."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from sqlalchemy.orm import Session

from app.api.routes.checks import to_wire
from app.callbacks.deliver import deliver_once, next_attempt_at
from app.config import Settings
from app.jobs.callback_state import CallbackState
from app.jobs.db import CheckRow, make_engine
from app.jobs.deliveries import DeliveryRepository
from app.jobs.repository import CheckRecord, CheckRepository
from tests.callbacks.receiver import SECRET, free_port, running_receiver


def _render(record: CheckRecord) -> str:
    return to_wire(record).model_dump_json()


def _settings(tmp_path: Path, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "data_dir": tmp_path,
        "callback_hosts": "127.0.0.1",
        "webhook_secret": SECRET,
        "callback_backoff_seconds": 0.05,
        "callback_timeout_seconds": 5,
    }
    values.update(overrides)
    return Settings.model_validate(values)


def _finished_check(settings: Settings, url: str) -> tuple[CheckRepository, str]:
    repository = CheckRepository(make_engine(settings.database_url))
    record = repository.create(
        architecture="torchvision:resnet18",
        options={"callback_url": url},
        filename="r18.pth",
        size_bytes=10,
        sha256="ab" * 32,
    )
    repository.mark_running(record.id)
    repository.mark_succeeded(record.id, merged_filename=None)
    return repository, record.id


def _state(repository: CheckRepository, check_id: str) -> str | None:
    with Session(repository._engine) as session:
        row = session.get(CheckRow, check_id)
        assert row is not None
        return row.callback_state


def _deliver_until(settings: Settings, deliveries: DeliveryRepository, attempts: int) -> None:
    deadline = time.monotonic() + 10
    made = 0
    while made < attempts and time.monotonic() < deadline:
        made += deliver_once(deliveries, render=_render, settings=settings)
        time.sleep(0.02)
    assert made == attempts


def test_deliver_once_posts_the_check_signed(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    with running_receiver() as receiver:
        repository, check_id = _finished_check(settings, receiver.url)
        deliveries = DeliveryRepository(repository._engine)
        assert deliver_once(deliveries, render=_render, settings=settings) == 1
        assert deliver_once(deliveries, render=_render, settings=settings) == 0  # delivered
    assert receiver.rejected == 0 and len(receiver.bodies) == 1
    body = receiver.bodies[0]
    assert body["id"] == check_id and body["status"] == "succeeded"
    assert body["options"]["callback_url"] == receiver.url
    assert receiver.headers[0]["webhook-id"] == f"check_{check_id}"
    record = repository.get(check_id)
    assert record is not None and _state(repository, check_id) == CallbackState.DELIVERED
    [attempt] = record.deliveries
    assert attempt["attempt"] == 1 and attempt["status_code"] == 204 and attempt["error"] is None


def test_deliver_once_retries_a_failing_receiver_with_the_same_message_id(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    with running_receiver(fail_first=2) as receiver:
        repository, check_id = _finished_check(settings, receiver.url)
        _deliver_until(settings, DeliveryRepository(repository._engine), attempts=3)
    record = repository.get(check_id)
    assert record is not None
    assert [(d["attempt"], d["status_code"]) for d in record.deliveries] == [
        (1, 503),
        (2, 503),
        (3, 204),
    ]
    assert {h["webhook-id"] for h in receiver.headers} == {f"check_{check_id}"}
    assert len(receiver.bodies) == 1


def test_deliver_once_does_not_follow_a_redirect(tmp_path: Path) -> None:
    settings = _settings(tmp_path, callback_retry_seconds=0)
    with running_receiver() as elsewhere, running_receiver(redirect_to=elsewhere.url) as receiver:
        repository, check_id = _finished_check(settings, receiver.url)
        deliver_once(DeliveryRepository(repository._engine), render=_render, settings=settings)
    assert receiver.requests == 1 and elsewhere.requests == 0
    record = repository.get(check_id)
    assert record is not None
    [attempt] = record.deliveries
    assert attempt["status_code"] == 307 and "not followed" in attempt["error"]
    assert _state(repository, check_id) == CallbackState.ABANDONED


def test_deliver_once_checks_the_allowlist_again_before_connecting(tmp_path: Path) -> None:
    with running_receiver() as receiver:
        repository, check_id = _finished_check(_settings(tmp_path), receiver.url)
        narrowed = _settings(tmp_path, callback_hosts="registry.internal")
        deliver_once(DeliveryRepository(repository._engine), render=_render, settings=narrowed)
    assert receiver.requests == 0
    record = repository.get(check_id)
    assert record is not None
    assert record.deliveries[0]["status_code"] is None
    assert "not in CKPT_COMPAT_CALLBACK_HOSTS" in record.deliveries[0]["error"]


def test_deliver_once_gives_up_after_the_retry_window(tmp_path: Path) -> None:
    settings = _settings(tmp_path, callback_retry_seconds=0)
    repository, check_id = _finished_check(settings, f"http://127.0.0.1:{free_port()}/down")
    deliveries = DeliveryRepository(repository._engine)
    assert deliver_once(deliveries, render=_render, settings=settings) == 1
    assert deliver_once(deliveries, render=_render, settings=settings) == 0
    record = repository.get(check_id)
    assert record is not None and "ConnectError" in record.deliveries[0]["error"]
    assert _state(repository, check_id) == CallbackState.ABANDONED


def test_deliver_once_leaves_unfinished_checks_and_checks_without_callback(
    tmp_path: Path,
) -> None:
    settings = _settings(tmp_path)
    repository = CheckRepository(make_engine(settings.database_url))
    common = {"architecture": "a:b", "filename": "f", "size_bytes": 1, "sha256": "cd" * 32}
    queued = repository.create(options={"callback_url": "http://127.0.0.1:1/"}, **common)
    plain = repository.create(options={}, **common)
    repository.mark_running(plain.id)
    repository.mark_succeeded(plain.id, merged_filename=None)
    deliveries = DeliveryRepository(repository._engine)
    assert deliver_once(deliveries, render=_render, settings=settings) == 0
    assert _state(repository, queued.id) == CallbackState.PENDING
    assert _state(repository, plain.id) is None


def test_deliver_once_resumes_from_the_database_after_a_restart(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    port = free_port()
    repository, check_id = _finished_check(settings, f"http://127.0.0.1:{port}/hooks/ckpt")
    deliver_once(DeliveryRepository(repository._engine), render=_render, settings=settings)
    repository._engine.dispose()  # the process stops
    restarted = DeliveryRepository(make_engine(settings.database_url))
    with running_receiver(port) as receiver:
        _deliver_until(settings, restarted, attempts=1)
    assert [b["id"] for b in receiver.bodies] == [check_id]
    assert [d["attempt"] for d in receiver.bodies[0]["deliveries"]] == [1]  # the failed one


@pytest.mark.parametrize(("number", "delay"), [(1, 5.0), (2, 10.0), (8, 600.0)])
def test_next_attempt_at_doubles_the_backoff_up_to_a_cap(
    tmp_path: Path, number: int, delay: float
) -> None:
    settings = _settings(tmp_path, callback_backoff_seconds=5)
    repository, check_id = _finished_check(settings, "http://127.0.0.1/")
    record = repository.get(check_id)
    assert record is not None and record.finished_at is not None
    at = next_attempt_at(record, number, now=record.finished_at, settings=settings)
    assert at is not None and (at - record.finished_at).total_seconds() == delay
