"""API keys as principals: parse ``CKPT_COMPAT_API_KEYS`` / ``_API_KEYS_FILE`` / ``_ADMIN_KEYS``.

Entries are ``name=key`` (name ``[a-z0-9_-]+``, split at the first ``=`` so a key may hold
``=``) or a plain key, which becomes its own principal named ``key-`` plus 12 hex digits of
its SHA-256 (never the key itself, which would land in the records and logs). Keys configured
but empty (``" , "``, a file of comments only) refuse to start: an operator who set keys
meant the API to be closed, and an open API that says nothing is the worst outcome.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import dataclass

from app.config import Settings
from app.principals import Principal

_NAME = re.compile(r"[a-z0-9_-]+")
PLAIN_KEY_PREFIX = "key-"


class ApiKeysConfigError(ValueError):
    """The key settings are set but unusable; the service does not start."""


@dataclass(frozen=True, slots=True)
class _Entry:
    name: str
    digest: bytes


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8")).digest()


def plain_key_name(key: str) -> str:
    """The principal name of a key given without a name (a hash, so the key never shows)."""
    return PLAIN_KEY_PREFIX + hashlib.sha256(key.encode("utf-8")).hexdigest()[:12]


def parse_entry(entry: str) -> tuple[str, str]:
    """``name=key`` -> (name, key); a plain key -> (its hashed name, key).

    Example:
        >>> parse_entry("registry=s3cr=t")
        ('registry', 's3cr=t')
    """
    name, sep, key = entry.partition("=")
    if sep and key and _NAME.fullmatch(name):
        return name, key
    return plain_key_name(entry), entry


class Keyring:
    """The configured keys; identifies a presented key in constant time.

    Every digest is compared (no early exit) with ``hmac.compare_digest``, so the time taken
    says nothing about how much of a key was right, nor which key matched.
    """

    def __init__(self, entries: list[_Entry], admins: frozenset[str]) -> None:
        self._entries = entries
        self._admins = admins

    @property
    def enabled(self) -> bool:
        """Keys are on: /v1 needs one."""
        return bool(self._entries)

    @property
    def names(self) -> list[str]:
        """The principal names, in configuration order."""
        return [e.name for e in self._entries]

    def identify(self, presented: str) -> Principal | None:
        """The principal of a presented key, or None for a wrong key (or keys off)."""
        candidate = _digest(presented)
        found: str | None = None
        for entry in self._entries:  # no early exit: every key is compared
            if hmac.compare_digest(candidate, entry.digest):
                found = entry.name
        if found is None:
            return None
        return Principal(name=found, admin=found in self._admins)


OPEN_KEYRING = Keyring([], frozenset())
"""No keys: every caller is ``OPEN_ACCESS``."""


def _configured_entries(settings: Settings) -> list[str] | None:
    """The raw entries, or None when no key setting is set at all."""
    configured = bool(settings.api_keys) or settings.api_keys_file is not None
    if not configured:
        return None
    entries = [k.strip() for k in settings.api_keys.split(",")]
    if settings.api_keys_file is not None:
        lines = settings.api_keys_file.read_text(encoding="utf-8").splitlines()
        entries += [line.strip() for line in lines if not line.strip().startswith("#")]
    return [e for e in entries if e]


def load_keyring(settings: Settings) -> Keyring:
    """The keyring of the settings (``OPEN_KEYRING`` when no key setting is set).

    Raises:
        ApiKeysConfigError: Keys are configured but none is usable, two entries share a
            name or a key, or an admin name is not among the keys.
        OSError: ``api_keys_file`` is set but cannot be read.
    """
    raw = _configured_entries(settings)
    admins = frozenset(a.strip() for a in settings.admin_keys.split(",") if a.strip())
    if raw is None:
        if admins:
            raise ApiKeysConfigError(
                "CKPT_COMPAT_ADMIN_KEYS is set but no API key is: set CKPT_COMPAT_API_KEYS "
                "(name=key entries) or CKPT_COMPAT_API_KEYS_FILE, or unset the admin list."
            )
        return OPEN_KEYRING
    if not raw:
        raise ApiKeysConfigError(
            "API keys are configured (CKPT_COMPAT_API_KEYS or CKPT_COMPAT_API_KEYS_FILE) but "
            "hold no key, so the API would be open: give at least one key, or unset both "
            "settings to run without keys on purpose."
        )
    entries = [_Entry(name, _digest(key)) for name, key in map(parse_entry, raw)]
    names = [e.name for e in entries]
    if len(set(names)) != len(names):
        raise ApiKeysConfigError("Two API keys have the same name (or are the same key).")
    if len({e.digest for e in entries}) != len(entries):
        raise ApiKeysConfigError("The same API key is configured under two names.")
    unknown = sorted(admins - set(names))
    if unknown:
        raise ApiKeysConfigError(
            f"CKPT_COMPAT_ADMIN_KEYS names {', '.join(unknown)}, which no API key has; "
            f"the key names are: {', '.join(names)}."
        )
    return Keyring(entries, admins)
