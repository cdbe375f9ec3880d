"""The report page: a stored report rendered as HTML, and when a request asks for it.

``GET /v1/checks/{id}/report.html`` and ``GET /v1/checks/{id}/report`` with ``Accept:
text/html`` both end here, after the route has checked who may see the check.
"""

from __future__ import annotations

import json
from typing import Any

from markupsafe import Markup
from starlette.requests import Request
from starlette.responses import HTMLResponse

from app.api.key_cookie import cookie_key, csrf_token
from app.jobs.repository import CheckRecord
from app.web.render import render_page
from app.web.view import (
    MAX_PLAN_ROWS,
    MAX_TREE_ROWS,
    css_name,
    key_table,
    plan_rows,
    script_json,
    suggested_options,
    tree_rows,
)

_LEGEND = (
    ("loaded", "loaded"),
    ("head_resized", "head resized"),
    ("new_module", "new module"),
    ("position_embedding_resized", "position embedding"),
    ("input_channels", "input channels / depth"),
    ("unexplained", "does not load"),
    ("ignorable", "ignorable / cast"),
    ("checkpoint_only", "checkpoint only"),
)


def wants_html(request: Request) -> bool:
    """Whether ``Accept`` prefers ``text/html`` to JSON (a browser's navigation does).

    Example: ``text/html,application/xhtml+xml,*/*;q=0.8`` -> True; ``*/*`` -> False.
    """
    weights: dict[str, float] = {}
    for part in request.headers.get("accept", "").split(","):
        media, *params = (p.strip() for p in part.split(";"))
        quality = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        weights[media.lower()] = max(quality, weights.get(media.lower(), 0.0))
    html = weights.get("text/html", 0.0)
    json_quality = weights.get("application/json", weights.get("*/*", 0.0))
    return html > 0 and html > json_quality


def page_context(request: Request) -> dict[str, Any]:
    """What every page's frame needs: the CSRF token of a key cookie, and whether there is one."""
    key = cookie_key(request)
    return {"csrf": csrf_token(key) if key else "", "signed_in": key is not None}


def render_report(request: Request, record: CheckRecord, data: bytes) -> HTMLResponse:
    """The report page of a finished check whose stored report is ``data``."""
    report: dict[str, Any] = json.loads(data)
    tree = tree_rows(report.get("modules") or [], limit=MAX_TREE_ROWS)
    plan = plan_rows(report.get("training_plan") or {})
    base = f"/v1/checks/{record.id}"
    merged = f"{base}/merged" if record.merged_filename else None
    summary = report.get("summary") or {}
    return render_page(
        "report.html",
        title=f"{summary.get('verdict', 'report')}: {record.filename}",
        report=report,
        verdict_class=css_name(summary.get("verdict", "")),
        kwargs_text=json.dumps((report.get("architecture") or {}).get("kwargs") or {}),
        tree=tree.rows,
        tree_cut=tree.cut,
        plan=plan[:MAX_PLAN_ROWS],
        plan_cut=len(plan) > MAX_PLAN_ROWS,
        keys_json=Markup(script_json(key_table(report.get("keys") or {}))),  # noqa: S704
        suggestions=suggested_options(report),
        legend=_LEGEND,
        links={"json": f"{base}/report", "merged": merged},
        headers={"Vary": "Accept"},
        **page_context(request),
    )
