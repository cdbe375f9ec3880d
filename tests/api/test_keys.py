"""API keys as principals: parsing, refusing keys configured but empty, identifying callers."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.api.keys import (
    OPEN_KEYRING,
    ApiKeysConfigError,
    load_keyring,
    parse_entry,
    plain_key_name,
)
from app.main import create_app
from app.principals import Principal
from tests.api.conftest import make_settings


def test_parse_entry_splits_named_keys_at_the_first_equals_sign() -> None:
    assert parse_entry("registry=s3cr=t==") == ("registry", "s3cr=t==")
    assert parse_entry("ci_bot-2=k") == ("ci_bot-2", "k")


@pytest.mark.parametrize("plain", ["just-a-key", "Upper=case-name", "=leading", "name=", "a b=c"])
def test_parse_entry_plain_keys_get_a_hashed_name_never_the_key(plain: str) -> None:
    name, key = parse_entry(plain)
    assert key == plain
    digest = hashlib.sha256(plain.encode()).hexdigest()
    assert name == plain_key_name(plain) == "key-" + digest[:12]
    assert plain not in name


def test_load_keyring_from_env_and_file_with_names_and_admins(tmp_path: Path) -> None:
    keys_file = tmp_path / "keys"
    keys_file.write_text("# rotated monthly\nbob=b-key\n  plain-file-key  \n")
    settings = make_settings(
        tmp_path / "d", api_keys=" alice=a=key , ", api_keys_file=keys_file, admin_keys="alice"
    )
    keyring = load_keyring(settings)
    assert keyring.enabled
    assert keyring.names == ["alice", "bob", plain_key_name("plain-file-key")]
    assert keyring.identify("a=key") == Principal(name="alice", admin=True)
    assert keyring.identify("b-key") == Principal(name="bob", admin=False)
    assert keyring.identify("plain-file-key") == Principal(name=plain_key_name("plain-file-key"))
    assert keyring.identify("alice=a=key") is None  # the whole entry is not the key
    assert keyring.identify("b-ke") is None


def test_load_keyring_without_settings_is_open(tmp_path: Path) -> None:
    assert load_keyring(make_settings(tmp_path)) is OPEN_KEYRING
    assert not OPEN_KEYRING.enabled


@pytest.mark.parametrize("api_keys", [" , ", ",", " ", ",,,"])
def test_load_keyring_configured_but_empty_refuses(tmp_path: Path, api_keys: str) -> None:
    with pytest.raises(ApiKeysConfigError, match="hold no key, so the API would be open"):
        load_keyring(make_settings(tmp_path, api_keys=api_keys))


def test_load_keyring_file_of_comments_only_refuses(tmp_path: Path) -> None:
    keys_file = tmp_path / "keys"
    keys_file.write_text("# nobody yet\n\n   \n# still nobody\n")
    with pytest.raises(ApiKeysConfigError, match="hold no key"):
        load_keyring(make_settings(tmp_path, api_keys_file=keys_file))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"api_keys": "a=1,a=2"}, "same name"),
        ({"api_keys": "k,k"}, "same name"),
        ({"api_keys": "a=1,b=1"}, "same API key is configured under two names"),
        ({"api_keys": "a=1", "admin_keys": "root"}, "names root, which no API key has"),
        ({"admin_keys": "root"}, "ADMIN_KEYS is set but no API key is"),
    ],
)
def test_load_keyring_inconsistent_settings_refuse(
    tmp_path: Path, overrides: dict[str, str], message: str
) -> None:
    with pytest.raises(ApiKeysConfigError, match=message):
        load_keyring(make_settings(tmp_path, **overrides))


def test_load_keyring_unreadable_file_refuses(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        load_keyring(make_settings(tmp_path, api_keys_file=tmp_path / "absent"))


def test_service_with_empty_keys_refuses_to_start(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "data", api_keys=" , ")
    with pytest.raises(ApiKeysConfigError, match="would be open"), TestClient(create_app(settings)):
        pass
    assert not (tmp_path / "data").exists()  # nothing started: no database, no workers


def test_serve_command_with_empty_keys_exits_with_the_reason(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from app.cli import main
    from app.config import get_settings

    monkeypatch.setenv("CKPT_COMPAT_API_KEYS", " , ")
    get_settings.cache_clear()
    try:
        with pytest.raises(SystemExit) as stopped:
            main(["serve", "--port", "1"])
    finally:
        get_settings.cache_clear()
    assert stopped.value.code == 2
    assert "would be open" in capsys.readouterr().err
