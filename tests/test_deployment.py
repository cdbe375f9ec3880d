"""docker-compose.yml and the Dockerfile, checked without a Docker engine (there is none here).

The compose file must describe a working fleet: the API and workers share one database, one
broker and one storage volume, their settings validate, their commands parse with the real
CLI, and every URL names a service of the file.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
import yaml

from app.cli import parse_command
from app.config import Settings

ROOT = Path(__file__).parents[1]


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return loaded


def test_compose_has_the_fleet_services(compose: dict[str, Any]) -> None:
    assert {"api", "worker", "redis", "postgres"} <= set(compose["services"])
    assert compose["services"]["worker"]["deploy"]["replicas"] >= 2
    assert compose["services"]["api"]["ports"] == ["8000:8000"]


def test_compose_api_and_workers_share_database_broker_and_storage(
    compose: dict[str, Any], tmp_path: Path
) -> None:
    api, worker = compose["services"]["api"], compose["services"]["worker"]
    assert api["environment"] == worker["environment"]
    assert api["volumes"] == worker["volumes"]
    env = api["environment"]
    settings = Settings.model_validate(
        {key.removeprefix("CKPT_COMPAT_").lower(): value for key, value in env.items()}
    )
    assert settings.queue == "celery"
    services = set(compose["services"])
    assert urlparse(settings.broker_url).hostname in services
    database = urlparse(settings.database_url)
    assert database.scheme == "postgresql+psycopg" and database.hostname in services
    postgres_env = compose["services"]["postgres"]["environment"]
    assert database.username == postgres_env["POSTGRES_USER"]
    assert database.password == postgres_env["POSTGRES_PASSWORD"]
    assert database.path == "/" + postgres_env["POSTGRES_DB"]
    storage = urlparse(env["CKPT_COMPAT_STORAGE_URL"])
    assert storage.scheme == "file"
    mounts = {volume.split(":")[1] for volume in api["volumes"]}
    assert storage.path in mounts  # the shared volume holds the storage
    assert set(api["depends_on"]) == {"postgres", "redis"}


@pytest.mark.parametrize("service", ["api", "worker"])
def test_compose_commands_parse_with_the_cli(compose: dict[str, Any], service: str) -> None:
    command = compose["services"][service]["command"]
    assert command[0] == "ckpt-compat"
    name, _ = parse_command(command[1:])
    assert name == {"api": "serve", "worker": "worker"}[service]


def test_dockerfile_installs_the_fleet_extra_and_the_shared_mount() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert '".[fleet]"' in dockerfile
    assert "/shared" in dockerfile


def test_dockerfile_healthcheck_asks_livez() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    healthcheck = dockerfile.split("HEALTHCHECK", 1)[1].split("\n\n", 1)[0]
    command = json.loads(healthcheck.split("CMD", 1)[1].replace("\\\n", "").strip().splitlines()[0])
    assert command[:2] == ["python", "-c"]
    assert "http://127.0.0.1:8000/livez" in command[2]
    compile(command[2], "<healthcheck>", "exec")
