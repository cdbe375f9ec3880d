"""Per-check results: the report JSON and the merged state_dict, under ``results/<check_id>``."""

from __future__ import annotations

import json
import re
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

from app.errors import LimitExceededError
from app.storage.backend import Download, Storage
from app.storage.blobs import as_storage

_CHECK_ID = re.compile(r"^[0-9a-f]{32}$")
PREFIX = "results"


class ResultStore:
    """Objects one check produces, keyed by the check id and nothing else."""

    def __init__(self, storage: Storage | Path) -> None:
        self.storage = as_storage(storage)

    def dir_for(self, check_id: str) -> str:
        """The check's key prefix (validated id, so no key can escape it)."""
        if not _CHECK_ID.match(check_id):
            raise ValueError("not a check id")
        return f"{PREFIX}/{check_id}"

    def _key(self, check_id: str, name: str) -> str:
        return f"{self.dir_for(check_id)}/{name}"

    def report_path(self, check_id: str) -> Path:
        """A real file with the report (``Storage.get_local_path``)."""
        return self.storage.get_local_path(self._key(check_id, "report.json"))

    def merged_target(self, check_id: str, filename: str) -> AbstractContextManager[Path]:
        """A path to write the merged file to, stored when the block ends without an error
        (``Storage.local_target``; the merge writer writes atomically)."""
        return self.storage.local_target(self._key(check_id, filename))

    def merged_download(self, check_id: str, filename: str) -> Download:
        """How to serve the merged file.

        Raises:
            FileNotFoundError: It is not stored (expired, deleted).
        """
        return self.storage.download(self._key(check_id, filename))

    def share_merged(self, source_id: str, target_id: str, filename: str) -> bool:
        """Serve ``source_id``'s merged file as ``target_id``'s too (a hard link on disk, so a
        repeated check costs no new disk); False when the source is gone."""
        return self.storage.copy(self._key(source_id, filename), self._key(target_id, filename))

    def report_tag(self, check_id: str) -> str | None:
        """The tag stored with the report (which schema wrote it), or None."""
        try:
            return self.storage.read_bytes(self._key(check_id, "report.tag")).decode("ascii")
        except (FileNotFoundError, UnicodeDecodeError):
            return None

    def share_report(self, source_id: str, target_id: str, overlay: dict[str, Any]) -> bool:
        """Serve ``source_id``'s report as ``target_id``'s, with ``overlay`` applied on read.

        The report is shared (``Storage.copy``: hard-linked on disk), not rewritten: a reused
        report costs a few hundred bytes however large it is (a copy of a 64 MiB report per
        repeated request filled disks). ``overlay`` replaces top-level members, and members
        one level down when both are objects (``{"checkpoint": {"filename": ...}}``).
        Returns False when the source is gone.
        """
        if not self.storage.copy(
            self._key(source_id, "report.json"), self._key(target_id, "report.json")
        ):
            return False
        data = json.dumps(overlay, separators=(",", ":")).encode()
        self.storage.put_bytes(self._key(target_id, "report.overlay.json"), data)
        tag = self.report_tag(source_id)
        if tag is not None:
            self.storage.put_bytes(self._key(target_id, "report.tag"), tag.encode("ascii"))
        return True

    def write_report(
        self,
        check_id: str,
        report: dict[str, Any],
        *,
        max_bytes: int | None = None,
        tag: str | None = None,
    ) -> None:
        """Write the report atomically, with ``tag`` beside it.

        Raises:
            LimitExceededError: The report's JSON is over ``max_bytes`` (nothing is written).
        """
        data = json.dumps(report, allow_nan=False, separators=(",", ":")).encode()
        if max_bytes is not None and len(data) > max_bytes:
            raise LimitExceededError.for_setting(
                f"The report would be {len(data)} bytes of JSON (a model or checkpoint with "
                "very many keys).",
                limit="max_report_bytes",
                value=max_bytes,
            )
        self.storage.put_bytes(self._key(check_id, "report.json"), data)
        if tag is not None:
            self.storage.put_bytes(self._key(check_id, "report.tag"), tag.encode("ascii"))

    def read_report(self, check_id: str) -> bytes | None:
        """The stored report bytes (with a shared report's overlay applied), or None."""
        try:
            data = self.storage.read_bytes(self._key(check_id, "report.json"))
        except FileNotFoundError:
            return None
        try:
            raw = self.storage.read_bytes(self._key(check_id, "report.overlay.json"))
        except FileNotFoundError:
            return data
        overlay = json.loads(raw)
        report = json.loads(data)
        for name, value in overlay.items():
            if isinstance(value, dict) and isinstance(report.get(name), dict):
                report[name].update(value)
            else:
                report[name] = value
        return json.dumps(report, allow_nan=False, separators=(",", ":")).encode()

    def delete(self, check_id: str) -> None:
        """Remove everything the check produced."""
        self.storage.delete_prefix(self.dir_for(check_id))
