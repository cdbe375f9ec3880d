"""The few model-registry calls the integration makes, through mlflow's own client.

mlflow is imported inside each function (``configure_mlflow`` first), so the web process
loads it only when MLflow is configured. Every call runs in a thread, never on the loop.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from app.storage.mlflow_sources import configure_mlflow

ARCHITECTURE_TAG = "ckpt_compat.architecture"
KWARGS_TAG = "ckpt_compat.architecture_kwargs"
VERDICT_TAG = "ckpt_compat.verdict"
FRACTION_TAG = "ckpt_compat.loaded_parameter_fraction"
CHECK_ID_TAG = "ckpt_compat.check_id"
REPORT_URL_TAG = "ckpt_compat.report_url"
ERROR_TAG = "ckpt_compat.error"
SEARCH_PAGE = 200


@dataclass(frozen=True, slots=True)
class VersionTags:
    """A model version and its tags."""

    model_name: str
    version: str
    tags: dict[str, str]


def _client(tracking_uri: str) -> Any:
    configure_mlflow(tracking_uri)
    from mlflow.tracking import MlflowClient

    return MlflowClient()


def version_tags(tracking_uri: str, model_name: str, version: str) -> VersionTags:
    """The current tags of one model version (a tag event carries only the tag it set)."""
    found = _client(tracking_uri).get_model_version(model_name, version)
    return VersionTags(model_name, version, dict(found.tags or {}))


def set_tags(tracking_uri: str, model_name: str, version: str, tags: dict[str, str]) -> None:
    """Set ``tags`` on a version, one call each (the registry has no batch call)."""
    client = _client(tracking_uri)
    for key, value in tags.items():
        client.set_model_version_tag(model_name, version, key, value)


def delete_tags(tracking_uri: str, model_name: str, version: str, keys: list[str]) -> None:
    """Remove ``keys`` where present (a verdict replaces an older error, and back)."""
    client = _client(tracking_uri)
    present = client.get_model_version(model_name, version).tags or {}
    for key in keys:
        if key in present:
            client.delete_model_version_tag(model_name, version, key)


def tagged_versions(tracking_uri: str) -> Iterator[VersionTags]:
    """Every model version that carries ``ckpt_compat.architecture``, page by page."""
    client = _client(tracking_uri)
    token: str | None = None
    query = f"tags.`{ARCHITECTURE_TAG}` LIKE '%'"
    while True:
        page = client.search_model_versions(query, max_results=SEARCH_PAGE, page_token=token)
        for found in page:
            tags = dict(found.tags or {})
            if ARCHITECTURE_TAG in tags:
                yield VersionTags(str(found.name), str(found.version), tags)
        token = page.token
        if not token:
            return
