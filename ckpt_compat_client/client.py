"""A small synchronous client of the service: submit a check, follow it, fetch its results.

It imports httpx and nothing of the server (no torch, no FastAPI), so a training pipeline can
call a shared ckpt-compat with ``pip install ./clients/python`` (the ``ckpt-compat-client``
distribution) instead of the service whole. Problems (``application/problem+json``) become
``ServiceError``; a check that ran and failed becomes ``CheckFailedError``.

Example:
    >>> with Client("http://127.0.0.1:8000") as client:  # doctest: +SKIP
    ...     check = client.check(Path("r18.pth"), "torchvision:resnet18",
    ...                          {"architecture_kwargs": {"num_classes": 10}})
    ...     client.report(check["id"])["summary"]["verdict"]
    'compatible_with_changes'
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import httpx

from ckpt_compat_client.errors import CheckFailedError, ServiceError

__all__ = ["CheckFailedError", "Client", "Progress", "ServiceError"]

Progress = Callable[[int, int], None]
"""Called with (bytes done, bytes in all) as an upload or download goes."""

_CHUNK = 1024 * 1024


class _CountingReader:
    """A file wrapper that reports how much was read: httpx streams multipart file parts
    by reading them, so reads are the bytes sent."""

    def __init__(self, handle: IO[bytes], total: int, progress: Progress | None) -> None:
        self._handle = handle
        self._total = total
        self._done = 0
        self._progress = progress

    def read(self, size: int = -1) -> bytes:
        data = self._handle.read(size)
        self._done += len(data)
        if self._progress is not None:
            self._progress(self._done, self._total)
        return data


class Client:
    """The HTTP API of one service, with an optional API key.

    Args:
        base_url: Where the service answers (``http://127.0.0.1:8000``).
        api_key: Sent as ``Authorization: Bearer``; None when the service has no keys.
        timeout: Seconds for one request (uploads stream without a total limit).
        http: An ``httpx.Client`` to use instead (tests, or the in-process app of ``--local``).
    """

    def __init__(
        self,
        base_url: str = "http://127.0.0.1:8000",
        *,
        api_key: str | None = None,
        timeout: float = 90.0,
        http: httpx.Client | None = None,
    ) -> None:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._owned = http is None
        self._http = http or httpx.Client(base_url=base_url, timeout=timeout)
        self._http.headers.update(headers)

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection pool (only one this client opened)."""
        if self._owned:
            self._http.close()

    def architectures(self, query: str | None = None, *, limit: int = 100) -> list[str]:
        """Qualified names, sorted; ``query`` is a glob (``resnet*``, ``timm:vit_*``)."""
        page = self.architecture_page(query, limit=limit)
        return [str(item["name"]) for item in page["items"]]

    def architecture_page(
        self, query: str | None = None, *, limit: int = 100, offset: int = 0
    ) -> dict[str, Any]:
        """One page of ``GET /v1/architectures``: ``items`` (``name``, ``source``) and the
        ``total`` that match ``query``."""
        params: dict[str, Any] = {"limit": limit, "offset": offset}
        if query:
            params["q"] = query
        return _json(self._http.get("/v1/architectures", params=params))

    def submit(
        self,
        source: Path | str,
        architecture: str,
        options: dict[str, Any] | None = None,
        *,
        progress: Progress | None = None,
    ) -> dict[str, Any]:
        """Queue a check of a file (``Path``, uploaded) or of an earlier upload (its id).

        The ``architecture`` and ``options`` fields go before the file, so the service can
        refuse a bad name or bad options before the bytes arrive.
        """
        options_text = json.dumps(options or {})
        if not isinstance(source, Path):
            body = {"source": {"upload_id": source}, "architecture": architecture}
            return _json(self._http.post("/v1/checks", json={**body, "options": options or {}}))
        total = source.stat().st_size
        with source.open("rb") as handle:
            reader = _CountingReader(handle, total, progress)
            response = self._http.post(
                "/v1/checks",
                data={"architecture": architecture, "options": options_text},
                files={"file": (source.name, reader, "application/octet-stream")},  # type: ignore[dict-item]
                timeout=httpx.Timeout(90.0, write=None),
            )
        return _json(response)

    def get(self, check_id: str, *, wait: float = 0) -> dict[str, Any]:
        """One check; ``wait`` holds the request up to that many seconds until it finishes."""
        params = {"wait": wait} if wait else None
        return _json(self._http.get(f"/v1/checks/{check_id}", params=params))

    def wait(
        self,
        check_id: str,
        *,
        timeout: float = 3600.0,
        poll: float = 20.0,
        on_update: Callable[[dict[str, Any]], None] | None = None,
    ) -> dict[str, Any]:
        """Follow a check until it finishes; ``on_update`` sees every state on the way.

        Each request is held by the service up to ``poll`` seconds and answers as soon as the
        check finishes, so a long ``poll`` costs no latency; a short one shows more of the
        stages (queued, reading, building, matching, merging, reporting) to ``on_update``.

        Raises:
            TimeoutError: It has not finished after ``timeout`` seconds.
        """
        deadline = time.monotonic() + timeout
        while True:
            check = self.get(check_id, wait=min(poll, max(deadline - time.monotonic(), 0.0)))
            if on_update is not None:
                on_update(check)
            if check["status"] in ("succeeded", "failed"):
                return check
            if time.monotonic() >= deadline:
                raise TimeoutError(f"The check {check_id} has not finished in {timeout:.0f} s.")

    def check(
        self,
        source: Path | str,
        architecture: str,
        options: dict[str, Any] | None = None,
        *,
        wait: bool = True,
        poll: float = 20.0,
        progress: Progress | None = None,
        on_update: Callable[[dict[str, Any]], None] | None = None,
    ) -> dict[str, Any]:
        """Submit and (with ``wait``) follow a check to its end (see ``wait`` for ``poll``).

        Raises:
            ServiceError: The service refused the check (unknown architecture, bad file...).
            CheckFailedError: The check ran and failed.
        """
        check = self.submit(source, architecture, options, progress=progress)
        if not wait:
            return check
        check = self.wait(check["id"], poll=poll, on_update=on_update)
        if check["status"] == "failed":
            raise CheckFailedError(check)
        return check

    def report(self, check_id: str) -> dict[str, Any]:
        """The report of a finished check."""
        return _json(self._http.get(f"/v1/checks/{check_id}/report"))

    def download_merged(
        self, check_id: str, destination: Path, *, progress: Progress | None = None
    ) -> Path:
        """Write the merged state_dict to ``destination`` (through a temporary name)."""
        partial = destination.with_name(destination.name + ".part")
        with self._http.stream("GET", f"/v1/checks/{check_id}/merged") as response:
            if not response.is_success:
                response.read()
                _json(response)
            total = int(response.headers.get("content-length", 0))
            done = 0
            with partial.open("wb") as handle:
                for chunk in _chunks(response):
                    handle.write(chunk)
                    done += len(chunk)
                    if progress is not None:
                        progress(done, total)
        partial.replace(destination)
        return destination


def _chunks(response: httpx.Response) -> Iterator[bytes]:
    yield from response.iter_bytes(_CHUNK)


def _json(response: httpx.Response) -> dict[str, Any]:
    """The JSON body of a success; a problem raised as ``ServiceError``."""
    if response.is_success:
        body: dict[str, Any] = response.json()
        return body
    try:
        problem = response.json()
    except ValueError:
        problem = None
    if not isinstance(problem, dict):
        problem = {"title": response.reason_phrase, "detail": response.text[:500]}
    raise ServiceError(response.status_code, problem)
