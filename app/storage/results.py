"""Per-check results: the report JSON and the merged state_dict, under ``results/<check_id>``."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

from app.atomic import atomic_file
from app.errors import LimitExceededError

_CHECK_ID = re.compile(r"^[0-9a-f]{32}$")


class ResultStore:
    """Files one check produces; the directory is named by the check id and nothing else."""

    def __init__(self, root: Path) -> None:
        self.root = root / "results"
        self.root.mkdir(parents=True, exist_ok=True)

    def dir_for(self, check_id: str) -> Path:
        """The check's result directory (validated id, so no path can escape the root)."""
        if not _CHECK_ID.match(check_id):
            raise ValueError("not a check id")
        return self.root / check_id

    def prepare(self, check_id: str) -> Path:
        """Create the check's result directory (before a worker writes into it)."""
        directory = self.dir_for(check_id)
        directory.mkdir(parents=True, exist_ok=True)
        return directory

    def report_path(self, check_id: str) -> Path:
        return self.dir_for(check_id) / "report.json"

    def merged_path(self, check_id: str, filename: str) -> Path:
        return self.dir_for(check_id) / filename

    def _tag_path(self, check_id: str) -> Path:
        return self.dir_for(check_id) / "report.tag"

    def _overlay_path(self, check_id: str) -> Path:
        return self.dir_for(check_id) / "report.overlay.json"

    def report_tag(self, check_id: str) -> str | None:
        """The tag stored with the report (which schema wrote it), or None."""
        try:
            return self._tag_path(check_id).read_text(encoding="ascii")
        except (FileNotFoundError, UnicodeDecodeError):
            return None

    def share_report(self, source_id: str, target_id: str, overlay: dict[str, Any]) -> bool:
        """Serve ``source_id``'s report as ``target_id``'s, with ``overlay`` applied on read.

        The report is hard-linked, not copied: a reused report costs a few hundred bytes
        however large it is (a copy of a 64 MiB report per repeated request filled disks).
        ``overlay`` replaces top-level members, and members one level down when both are
        objects (``{"checkpoint": {"filename": ...}}``). Returns False when the source is gone.
        """
        source = self.report_path(source_id)
        directory = self.prepare(target_id)
        target = directory / source.name
        try:
            with contextlib.suppress(FileExistsError):
                try:
                    os.link(source, target)
                except OSError as exc:
                    if isinstance(exc, FileNotFoundError):
                        raise
                    shutil.copyfile(source, target)
        except FileNotFoundError:
            return False
        with atomic_file(self._overlay_path(target_id)) as out:
            out.write(json.dumps(overlay, separators=(",", ":")).encode())
        tag = self.report_tag(source_id)
        if tag is not None:
            self._tag_path(target_id).write_text(tag, encoding="ascii")
        return True

    def write_report(
        self,
        check_id: str,
        report: dict[str, Any],
        *,
        max_bytes: int | None = None,
        tag: str | None = None,
    ) -> None:
        """Write the report atomically (temp file + rename), with ``tag`` beside it.

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
        target = self.report_path(check_id)
        target.parent.mkdir(parents=True, exist_ok=True)
        with atomic_file(target) as out:
            out.write(data)
        if tag is not None:
            self._tag_path(check_id).write_text(tag, encoding="ascii")

    def read_report(self, check_id: str) -> bytes | None:
        """The stored report bytes (with a shared report's overlay applied), or None."""
        try:
            data = self.report_path(check_id).read_bytes()
        except FileNotFoundError:
            return None
        try:
            overlay = json.loads(self._overlay_path(check_id).read_bytes())
        except FileNotFoundError:
            return data
        report = json.loads(data)
        for name, value in overlay.items():
            if isinstance(value, dict) and isinstance(report.get(name), dict):
                report[name].update(value)
            else:
                report[name] = value
        return json.dumps(report, allow_nan=False, separators=(",", ":")).encode()

    def delete(self, check_id: str) -> None:
        """Remove everything the check produced."""
        shutil.rmtree(self.dir_for(check_id), ignore_errors=True)
