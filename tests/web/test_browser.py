"""The pages in real headless Chromium against a real server: sign in, upload, read the report.

Debian's ``chromium`` driven by Playwright's Python package (never ``playwright install``:
nothing is downloaded). Without chromium the test skips on a developer's machine and fails
in CI (``CI=true``), where ``.ci/run`` installs it.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.servers import serving
from tests.web.conftest import HOSTILE_FILENAME, HOSTILE_KEY

pytestmark = pytest.mark.slow

KEY = "browser-key"
SCREENSHOT = Path(__file__).parents[2] / "docs" / "report-page.png"
"""Rewritten when CKPT_COMPAT_UPDATE_SCREENSHOTS=1 (the README shows it)."""


def _chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        if os.environ.get("CI") == "true":
            pytest.fail("chromium is missing: .ci/run installs it (apt-get install chromium)")
        pytest.skip("chromium is not installed (apt-get install chromium)")
    return path


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``ckpt-compat serve`` with an API key, on a free loopback port."""
    data_dir = tmp_path_factory.mktemp("browser-data")
    arguments = ["--workers", "1", "--data-dir", str(data_dir), "--log-level", "warning"]
    env = {**os.environ, "CKPT_COMPAT_API_KEYS": f"tester={KEY}"}
    with serving(arguments, env) as base:
        yield base


def test_browser_signs_in_uploads_and_reads_the_report(
    server: str, hostile_checkpoint: Path, tmp_path: Path
) -> None:
    from playwright.sync_api import expect, sync_playwright

    upload = tmp_path / HOSTILE_FILENAME
    shutil.copyfile(hostile_checkpoint, upload)
    problems: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=_chromium(), args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
            page.on("dialog", lambda dialog: problems.append(f"dialog: {dialog.message}"))
            page.on(
                "console",
                lambda msg: (
                    problems.append(f"console: {msg.text}") if msg.type == "error" else None
                ),
            )
            page.set_default_timeout(30_000)

            # The key, once: the cookie is HttpOnly, so the page's scripts cannot see it.
            page.goto(server + "/")
            page.fill("#key", KEY)
            page.click("button[type=submit]")
            expect(page.locator("#check-form")).to_be_visible()
            assert page.evaluate("document.cookie") == ""

            # Search as you type, then upload with kwargs; the progress bar fills.
            page.fill("#architecture", "resnet18")
            page.locator("#arch-list li", has_text="torchvision:resnet18").first.click()
            expect(page.locator("#architecture")).to_have_value("torchvision:resnet18")
            page.set_input_files("#file", str(upload))
            page.fill("#kwargs", '{"num_classes": 10}')
            page.click("#submit")
            page.wait_for_url("**/report.html", timeout=120_000)

            # The report: verdict on top, the tree, the key table filters.
            verdict = page.locator("#verdict").inner_text()
            assert verdict in {"compatible_with_changes", "partial"}, verdict
            expect(page.locator("#message")).not_to_be_empty()
            expect(page.locator("#tree summary", has_text="layer1")).to_be_visible()
            expect(page.locator("#tree .leaf", has_text="fc")).to_be_visible()
            assert page.locator("#tree .tone-head_resized").count() > 0
            page.fill("#key-filter", "fc.")
            expect(page.locator("#key-count")).to_contain_text("2 of ")
            expect(page.locator("#key-rows tr")).to_have_count(2)
            expect(page.locator("#key-rows")).to_contain_text("head_resized")
            page.fill("#key-filter", "onerror")  # the hostile key shows as text, runs nothing
            expect(page.locator("#key-rows td.key").first).to_have_text(HOSTILE_KEY)
            page.fill("#key-filter", "")
            page.select_option("#kind-filter", "not-loaded")
            expect(page.locator("#key-rows tr")).to_have_count(3)
            expect(page.locator("#plan-table")).to_contain_text("train")
            expect(page.locator("#safety")).to_contain_text("torch")
            page.select_option("#kind-filter", "")
            page.evaluate("window.scrollTo(0, 0)")
            shot = page.screenshot(full_page=False)
            (tmp_path / "report-page.png").write_bytes(shot)
            if os.environ.get("CKPT_COMPAT_UPDATE_SCREENSHOTS") == "1":
                SCREENSHOT.write_bytes(shot)

            # Back on the list, the check is there, newest first, its name escaped.
            page.goto(server + "/")
            # (browsers send '"' in a file name as %22)
            first = page.locator("#checks tbody tr").first
            expect(first).to_contain_text("<img src=x onerror=alert(")
            expect(first).to_contain_text("succeeded")
        finally:
            browser.close()
    assert problems == []


def test_browser_keeps_a_100000_key_report_usable(tmp_path: Path) -> None:
    """The page of 101,000 keys loads, filters and pages in Chromium in well under seconds."""
    from playwright.sync_api import expect, sync_playwright

    from app.web.report_page import render_report
    from tests.web.reports import report_bytes, synthetic_report
    from tests.web.test_report_page import _record, _request

    page_file = tmp_path / "big.html"
    page_file.write_bytes(
        render_report(_request(), _record(), report_bytes(synthetic_report(10_000))).body
    )
    errors: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=_chromium(), args=["--no-sandbox"])
        try:
            page = browser.new_page()
            page.on("pageerror", lambda error: errors.append(str(error)))
            started = time.monotonic()
            page.goto(page_file.as_uri())
            expect(page.locator("#key-count")).to_have_text("101,000 of 101,000 keys")
            loaded = time.monotonic() - started
            expect(page.locator("#key-rows tr")).to_have_count(100)
            page.click("#next-page")
            expect(page.locator("#page-info")).to_contain_text("rows 101\u2013200")
            page.fill("#key-filter", "layers.999.")
            expect(page.locator("#key-count")).to_have_text("11 of 101,000 keys")
            page.select_option("#kind-filter", "not-loaded")
            expect(page.locator("#key-count")).to_have_text("3 of 101,000 keys")
        finally:
            browser.close()
    assert errors == []
    assert loaded < 10, loaded
