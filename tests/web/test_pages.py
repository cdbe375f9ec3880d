"""The pages over HTTP with API keys on: the key cookie and its CSRF guard, owners, escaping,
``Accept: text/html`` on ``/report``; a real worker runs the checks."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.api.key_cookie import KEY_COOKIE, csrf_token
from app.main import create_app
from tests.api.conftest import make_settings
from tests.web.conftest import HOSTILE_FILENAME, HOSTILE_KEY

ALICE, BOB = "alice-key", "bob-key"
BROWSER_ACCEPT = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    settings = make_settings(tmp_path_factory.mktemp("data"), api_keys=f"alice={ALICE},bob={BOB}")
    with TestClient(create_app(settings), base_url="http://testserver") as test_client:
        yield test_client


@pytest.fixture(scope="module")
def check_id(client: TestClient, hostile_checkpoint: Path) -> str:
    with hostile_checkpoint.open("rb") as handle:
        response = client.post(
            "/v1/checks?wait=60",
            headers={"X-API-Key": ALICE},
            data={"architecture": "torchvision:resnet18", "options": json.dumps({"merge": {}})},
            files={"file": (HOSTILE_FILENAME, handle, "application/octet-stream")},
        )
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "succeeded", response.json()["error"]
    return str(response.json()["id"])


def _sign_in(client: TestClient, key: str) -> None:
    """The key form, as a person fills it in; the client keeps the cookie from then on."""
    client.cookies.clear()
    response = client.post("/ui/key", data={"key": key, "next": "/"}, follow_redirects=False)
    assert response.status_code == 303, response.text
    cookie = response.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/" in cookie


def test_index_asks_for_the_key_once_then_lists_checks(client: TestClient, check_id: str) -> None:
    client.cookies.clear()
    page = client.get("/")
    assert page.status_code == 200 and 'action="/ui/key"' in page.text
    wrong = client.post("/ui/key", data={"key": "nope"}, follow_redirects=False)
    assert (
        wrong.status_code == 401 and "not valid" in wrong.text and KEY_COOKIE not in wrong.cookies
    )
    _sign_in(client, ALICE)
    page = client.get("/")
    assert page.status_code == 200
    assert f"/v1/checks/{check_id}/report.html" in page.text
    assert HOSTILE_FILENAME not in page.text and "&lt;img src=x onerror=" in page.text
    assert csrf_token(ALICE) in page.text  # the meta tag the page's script sends back
    assert "Content-Security-Policy" in page.headers


def test_report_page_escapes_hostile_keys_and_names(client: TestClient, check_id: str) -> None:
    _sign_in(client, ALICE)
    page = client.get(f"/v1/checks/{check_id}/report.html")
    assert page.status_code == 200, page.text
    html = page.text
    assert 'id="verdict">compatible' in html
    assert HOSTILE_KEY not in html and HOSTILE_FILENAME not in html
    assert "<script>alert" not in html and "<img src=x" not in html
    data = re.search(r'<script type="application/json" id="keys-data">(.*?)</script>', html, re.S)
    assert data is not None
    rows = json.loads(data.group(1))["rows"]
    assert HOSTILE_KEY in {row[1] for row in rows}
    nonce = re.search(r"'nonce-([^']+)'", page.headers["content-security-policy"])
    assert nonce is not None
    scripts = re.findall(r"<script([^>]*)>", html)
    assert all(f'nonce="{nonce.group(1)}"' in s or "application/json" in s for s in scripts)
    assert f'href="/v1/checks/{check_id}/merged"' in html


def test_report_negotiates_html_and_json_with_vary(client: TestClient, check_id: str) -> None:
    url = f"/v1/checks/{check_id}/report"
    as_json = client.get(url, headers={"X-API-Key": ALICE})
    assert as_json.headers["content-type"] == "application/json"
    assert as_json.headers["vary"] == "Accept"
    verdict = as_json.json()["summary"]["verdict"]
    as_html = client.get(url, headers={"X-API-Key": ALICE, "Accept": BROWSER_ACCEPT})
    assert as_html.headers["content-type"].startswith("text/html")
    assert as_html.headers["vary"] == "Accept"
    assert f'id="verdict">{verdict}<' in as_html.text
    prefers_json = {"X-API-Key": ALICE, "Accept": "application/json, text/html;q=0.5"}
    assert client.get(url, headers=prefers_json).headers["content-type"] == "application/json"


def test_report_page_of_another_principal_is_not_found(client: TestClient, check_id: str) -> None:
    _sign_in(client, BOB)
    page = client.get(f"/v1/checks/{check_id}/report.html")
    assert page.status_code == 404 and "No check with id" in page.text
    _sign_in(client, BOB)
    unknown = client.get("/v1/checks/0123/report.html")
    assert unknown.status_code == 404
    by_accept = client.get(
        f"/v1/checks/{check_id}/report", headers={"X-API-Key": BOB, "Accept": BROWSER_ACCEPT}
    )
    assert by_accept.status_code == 404
    assert by_accept.headers["content-type"] == "application/problem+json"
    _sign_in(client, BOB)
    assert check_id not in client.get("/").text


def test_report_page_without_a_key_shows_the_key_form(client: TestClient, check_id: str) -> None:
    client.cookies.clear()
    page = client.get(f"/v1/checks/{check_id}/report.html")
    assert page.status_code == 401 and 'action="/ui/key"' in page.text
    assert f'value="/v1/checks/{check_id}/report.html"' in page.text  # back here after it


def test_cookie_counts_on_unsafe_methods_only_with_the_csrf_token(
    client: TestClient, check_id: str
) -> None:
    _sign_in(client, ALICE)
    assert client.get(f"/v1/checks/{check_id}").status_code == 200
    url = "/v1/checks/ffff"  # an unknown id: past authentication it is a 404, nothing deleted
    refused = client.delete(url)
    assert refused.status_code == 401
    assert "X-CSRF-Token" in refused.json()["detail"]
    forged = client.delete(url, headers={"X-CSRF-Token": csrf_token(BOB)})
    assert forged.status_code == 401
    guarded = client.delete(url, headers={"X-CSRF-Token": csrf_token(ALICE)})
    assert guarded.status_code == 404


def test_key_form_refuses_cross_site_posts_and_foreign_targets(client: TestClient) -> None:
    cross = client.post(
        "/ui/key",
        data={"key": ALICE, "next": "/"},
        headers={"Origin": "https://evil.example", "Sec-Fetch-Site": "cross-site"},
        follow_redirects=False,
    )
    assert cross.status_code == 403 and KEY_COOKIE not in cross.cookies
    away = client.post(
        "/ui/key", data={"key": ALICE, "next": "//evil.example/"}, follow_redirects=False
    )
    assert away.status_code == 303 and away.headers["location"] == "/"


def test_logout_needs_the_page_token(client: TestClient) -> None:
    _sign_in(client, ALICE)
    forged = client.post("/ui/logout", data={"csrf": "x"}, follow_redirects=False)
    assert forged.status_code == 403
    done = client.post("/ui/logout", data={"csrf": csrf_token(ALICE)}, follow_redirects=False)
    assert done.status_code == 303 and f'{KEY_COOKIE}=""' in done.headers["set-cookie"]
