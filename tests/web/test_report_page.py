"""The report page rendered directly: every section, escaping, and the time for 100,000 keys."""

from __future__ import annotations

import time
from datetime import UTC, datetime

from starlette.requests import Request

from app.jobs.repository import CheckRecord
from app.schemas import CheckStatus
from app.web.report_page import render_report, wants_html
from tests.web.reports import report_bytes, synthetic_report


def _record() -> CheckRecord:
    return CheckRecord(
        id="0" * 32,
        status=CheckStatus.SUCCEEDED,
        architecture="plugin:big",
        options={},
        filename="model.safetensors",
        size_bytes=123456,
        sha256="a" * 64,
        created_at=datetime.now(UTC),
        started_at=None,
        finished_at=None,
        stage="done",
        fraction=1.0,
        error=None,
        merged_filename=None,
    )


def _request(accept: str = "") -> Request:
    headers = [(b"accept", accept.encode())] if accept else []
    return Request({"type": "http", "method": "GET", "path": "/", "headers": headers})


def test_render_report_shows_every_section_and_escapes_hostile_text() -> None:
    hostile = "<b onmouseover=alert(1)>&"
    page = render_report(_request(), _record(), report_bytes(synthetic_report(20, hostile=hostile)))
    html = page.body.decode()
    for section in ('id="summary"', 'id="modules"', 'id="keys"', 'id="plan"', 'id="safety"'):
        assert section in html
    assert 'id="suggested"' in html and "&#34;strip_prefix&#34;: &#34;module.&#34;" in html
    assert hostile not in html and "&lt;b onmouseover=alert(1)&gt;&amp;" in html
    assert "\\u003cb onmouseover=alert(1)\\u003e\\u0026" in html  # inside the key data
    assert page.headers["vary"] == "Accept"
    assert "layers.*.mlp" in html  # the plan, block numbers folded


def test_render_report_of_100000_keys_takes_under_a_second() -> None:
    data = report_bytes(synthetic_report(10_000))  # 101,000 keys, 10,001 modules
    timings = []
    for _ in range(3):
        started = time.perf_counter()
        page = render_report(_request(), _record(), data)
        timings.append(time.perf_counter() - started)
    assert min(timings) < 1.0, timings
    assert b"The tree shows its first 2000 modules" in page.body


def test_wants_html_follows_accept_weights() -> None:
    assert wants_html(_request("text/html,application/xhtml+xml,*/*;q=0.8"))
    assert not wants_html(_request("*/*"))
    assert not wants_html(_request(""))
    assert not wants_html(_request("application/json, text/html;q=0.9"))
    assert not wants_html(_request("text/html;q=0"))
    assert wants_html(_request("application/json;q=0.5, text/html"))
