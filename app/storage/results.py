"""Per-check results: the report JSON and the merged state_dict, under ``results/<check_id>``."""

from __future__ import annotations

import json
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

    def write_report(
        self, check_id: str, report: dict[str, Any], *, max_bytes: int | None = None
    ) -> None:
        """Write the report atomically (temp file + rename).

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

    def read_report(self, check_id: str) -> bytes | None:
        """The stored report bytes, or None."""
        try:
            return self.report_path(check_id).read_bytes()
        except FileNotFoundError:
            return None

    def delete(self, check_id: str) -> None:
        """Remove everything the check produced."""
        shutil.rmtree(self.dir_for(check_id), ignore_errors=True)
