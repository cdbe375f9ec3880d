"""Streaming multipart/form-data: the file part goes to disk while it arrives, limit enforced.

Starlette's form parser spools a file part of any size to a temp directory before a route
sees it. Here each chunk is parsed as it arrives and the file bytes are hashed and written
(``BackgroundUpload``: on threads, off the event loop) until the size limit, so an
oversized upload is refused at the limit and leaves nothing behind. Hooks see each text
field as its part ends and the file's first bytes as they arrive, so a bad field or a file
that is no checkpoint is refused while the rest of the body is still on its way.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request

from app.api.background_upload import BackgroundUpload
from app.errors import InvalidRequestError, MalformedRequestError, UploadTooLargeError
from app.storage import BlobStore, UploadWriter

MAX_FIELD_BYTES = 64 * 1024
_MULTIPART_OVERHEAD = 64 * 1024

FieldHook = Callable[[str, str], Awaitable[None]]
"""Called with (name, value) when a text field's part ends; raising refuses the request."""
HeadHook = Callable[[bytes], None]
"""Called once with the file part's first ``head_bytes`` (all of a shorter file)."""


@dataclass
class ReceivedForm:
    """A parsed form: text fields, and the file part as a finished (uncommitted) upload."""

    fields: dict[str, str] = field(default_factory=dict)
    upload: UploadWriter | None = None
    filename: str = ""


def clean_filename(raw: str) -> str:
    """A display name from the client's file name; it is never used as a path."""
    name = re.split(r"[\\/]", raw)[-1]
    name = "".join(ch for ch in name if unicodedata.category(ch)[0] != "C").strip()
    return name[:255] or "checkpoint"


class _PartCollector:
    """Callbacks for python-multipart; buffers events until the route drains them."""

    def __init__(self) -> None:
        self.events: list[tuple[str, object]] = []
        self._header_field = bytearray()
        self._header_value = bytearray()
        self._headers: dict[bytes, bytes] = {}

    def on_part_begin(self) -> None:
        self._headers = {}

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_field += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def on_header_end(self) -> None:
        self._headers[bytes(self._header_field).lower()] = bytes(self._header_value)
        self._header_field.clear()
        self._header_value.clear()

    def on_headers_finished(self) -> None:
        _, params = parse_options_header(self._headers.get(b"content-disposition", b""))
        name = params.get(b"name", b"").decode("utf-8", "replace")
        filename = params.get(b"filename")
        self.events.append(
            ("begin", (name, None if filename is None else filename.decode("utf-8", "replace")))
        )

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        self.events.append(("data", bytes(data[start:end])))

    def on_part_end(self) -> None:
        self.events.append(("end", None))


async def receive_form(
    request: Request,
    *,
    blobs: BlobStore,
    max_bytes: int,
    file_field: str,
    text_fields: frozenset[str],
    on_field: FieldHook | None = None,
    on_head: HeadHook | None = None,
    head_bytes: int = 4096,
) -> ReceivedForm:
    """Parse the request body; the caller commits or aborts ``form.upload``.

    ``on_field`` and ``on_head`` run while the body streams; what they raise ends the request
    at once (the upload so far is removed).

    Raises:
        UploadTooLargeError: the body or the file is over the limit (nothing kept).
        MalformedRequestError: the body is not valid multipart.
        InvalidRequestError: an unknown or oversized field.
    """
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > max_bytes + _MULTIPART_OVERHEAD:
        raise UploadTooLargeError(
            f"The request declares {declared} bytes, over the upload limit of {max_bytes} "
            "bytes (setting CKPT_COMPAT_MAX_UPLOAD_BYTES).",
            limit="max_upload_bytes",
            limit_value=max_bytes,
        )
    _, params = parse_options_header(request.headers.get("content-type", ""))
    boundary = params.get(b"boundary")
    if not boundary:
        raise MalformedRequestError("The multipart/form-data content type has no boundary.")
    form = ReceivedForm()
    collector = _PartCollector()
    parser = MultipartParser(boundary, _callbacks(collector))  # type: ignore[arg-type]
    state = _FormState(form, blobs, max_bytes, file_field, text_fields)
    state.on_field, state.on_head, state.head_bytes = on_field, on_head, head_bytes
    try:
        async for chunk in request.stream():
            parser.write(chunk)
            await state.drain(collector.events)
        parser.finalize()
        await state.drain(collector.events)
        await state.finish()
    except MultipartParseError:
        await state.abort()
        raise MalformedRequestError(
            "The body is not valid multipart/form-data; send the file as the part 'file'."
        ) from None
    except BaseException:
        await state.abort()
        raise
    return form


def _callbacks(collector: _PartCollector) -> dict[str, object]:
    return {
        name: getattr(collector, name)
        for name in (
            "on_part_begin",
            "on_header_field",
            "on_header_value",
            "on_header_end",
            "on_headers_finished",
            "on_part_data",
            "on_part_end",
        )
    }


class _FormState:
    """Routes parser events: file bytes to the upload writer, text to bounded buffers."""

    def __init__(
        self,
        form: ReceivedForm,
        blobs: BlobStore,
        max_bytes: int,
        file_field: str,
        text_fields: frozenset[str],
    ) -> None:
        self.form, self.blobs, self.max_bytes = form, blobs, max_bytes
        self.file_field, self.text_fields = file_field, text_fields
        self.current: str | None = None
        self.text = bytearray()
        self.background: BackgroundUpload | None = None
        self.on_field: FieldHook | None = None
        self.on_head: HeadHook | None = None
        self.head_bytes = 0
        self.head: bytearray | None = bytearray()  # None once on_head has seen it

    async def drain(self, events: list[tuple[str, object]]) -> None:
        for kind, value in events:
            if kind == "begin":
                assert isinstance(value, tuple)
                self._begin(*value)
            elif kind == "data":
                assert isinstance(value, bytes)
                if self.current == self.file_field and self.background is not None:
                    self._sniff(value, final=False)
                    await self.background.write(value)
                else:
                    self._text(value)
            elif self.current == self.file_field:
                self._sniff(b"", final=True)
            elif self.current is not None:
                name, text = self.current, self.text.decode("utf-8", "replace")
                self.form.fields[name] = text
                self.current = None
                if self.on_field is not None:
                    await self.on_field(name, text)
        events.clear()

    def _sniff(self, data: bytes, *, final: bool) -> None:
        """Hand the file's head to ``on_head`` once it is long enough, or the part ended."""
        if self.head is None or self.on_head is None:
            return
        self.head += data[: self.head_bytes - len(self.head)]
        if final or len(self.head) >= self.head_bytes:
            head, self.head = bytes(self.head), None
            self.on_head(head)

    async def finish(self) -> None:
        """Wait until the file part is hashed and written."""
        if self.background is not None:
            await self.background.finish()

    def _begin(self, name: str, filename: str | None) -> None:
        if name == self.file_field:
            if self.form.upload is not None:
                raise InvalidRequestError("Send exactly one file in the part 'file'.")
            self.form.upload = UploadWriter(self.blobs, max_bytes=self.max_bytes)
            self.background = BackgroundUpload(self.form.upload)
            self.form.filename = clean_filename(filename or "")
        elif name in self.text_fields:
            self.text.clear()
        else:
            expected = ", ".join(sorted({self.file_field, *self.text_fields}))
            raise InvalidRequestError(f"Unknown form field {name!r}; the fields are {expected}.")
        self.current = name

    def _text(self, data: bytes) -> None:
        self.text += data
        if len(self.text) > MAX_FIELD_BYTES:
            raise InvalidRequestError(
                f"The form field {self.current!r} is over {MAX_FIELD_BYTES} bytes."
            )

    async def abort(self) -> None:
        if self.background is not None:
            await self.background.drain()  # no write in flight when the file is removed
        if self.form.upload is not None:
            await run_in_threadpool(self.form.upload.abort)  # unlinking a large file takes time


__all__ = ["ReceivedForm", "UploadTooLargeError", "clean_filename", "receive_form"]
