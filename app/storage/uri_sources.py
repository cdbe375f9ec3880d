"""Checkpoints named by URI (``s3://bucket/key``, or an MLflow URI), only under
``CKPT_COMPAT_SOURCE_URIS``.

A registry keeps its artifacts in object storage; it names them instead of sending them. A
URI names a file, a sharded ``*.index.json`` (its shards are the files beside it that it
names), or a prefix (the files directly under it). At submission the objects are looked up
(HEAD, LIST; no bytes read but an index) and identified by URI, names, sizes and ETags, so a
rewritten object is a new source and a failed lookup is answered at once. The worker looks
them up again and fetches them (``app.jobs.fetch``: by ranges for a report).
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from app.errors import (
    InvalidRequestError,
    SourceForbiddenError,
    SourceNotFoundError,
    SourceUnreachableError,
)
from app.storage.mlflow_sources import MlflowSource, is_mlflow_uri, resolve_mlflow_uri
from app.storage.ranged import ReadRange
from app.storage.s3_client import (
    S3Location,
    is_not_found,
    is_storage_error,
    parse_s3_url,
    s3_client,
)

INDEX_SUFFIX = ".index.json"
MAX_INDEX_BYTES = 100 * 1024 * 1024
MAX_OBJECTS = 10_000
_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._+-]*$")
_SCHEME = re.compile(r"^[a-z][a-z0-9+.-]*:/")


@dataclass(frozen=True, slots=True)
class StoredObject:
    """One object a source reads: its name in the source, its key, size and ETag."""

    name: str
    key: str
    size: int
    etag: str


@dataclass(frozen=True, slots=True)
class UriSource:
    """A checked URI source: what the worker fetches and how it is identified.

    Attributes:
        uri: The URI as submitted.
        filename: The name shown in the check and its report.
        size_bytes: The total size of the objects it reads.
        fingerprint: sha256 hex of the URI, names, sizes and ETags.
        bucket: The bucket.
        objects: The objects read; ``entry`` names the one the readers open (a file, an
            index) or is "" for a prefix (a directory of files).
        entry: See ``objects``.
    """

    uri: str
    filename: str
    size_bytes: int
    fingerprint: str
    bucket: str
    objects: tuple[StoredObject, ...]
    entry: str


def is_uri(source: str) -> bool:
    """Whether a recorded source is a URI (else it is a local path, which starts with /)."""
    return _SCHEME.match(source) is not None


def resolve_source_uri(
    uri: str, allowed: Sequence[str], *, tracking_uri: str = ""
) -> UriSource | MlflowSource:
    """Check ``uri`` against ``allowed`` and look it up: in object storage, or through MLflow.

    Raises:
        SourceForbiddenError, InvalidRequestError: See ``check_allowed``.
        SourceNotFoundError, SourceUnreachableError: See ``resolve_uri`` and
            ``app.storage.mlflow_sources.resolve_mlflow_uri``.
        MlflowPyTorchFlavourError: The MLflow artifact is a pickled module.
    """
    if is_mlflow_uri(uri):
        _check_prefix(uri, allowed, uri.split(":/", 1)[1].split("/"))
        return resolve_mlflow_uri(uri, tracking_uri=tracking_uri)
    return resolve_uri(uri, allowed)


def check_allowed(uri: str, allowed: Sequence[str]) -> S3Location:
    """The location of ``uri`` when it lies under an allowed prefix.

    Raises:
        SourceForbiddenError: URI sources are off, or ``uri`` is under no allowed prefix
            (``..`` and empty segments are refused before comparing).
        InvalidRequestError: Not an ``s3://bucket/key`` URI.
    """
    _require_on(allowed)
    try:
        location = parse_s3_url(uri)
    except ValueError:
        raise InvalidRequestError(
            f"{uri[:200]!r} is not a URI this server reads: use s3://bucket/key, "
            "models:/<name>/<version>, runs:/<run_id>/<path> or mlflow-artifacts:/<path>."
        ) from None
    _check_prefix(uri, allowed, location.key.split("/"))
    return location


def _require_on(allowed: Sequence[str]) -> None:
    if not allowed:
        raise SourceForbiddenError(
            "URI sources are off on this server; set CKPT_COMPAT_SOURCE_URIS to the prefixes "
            "it may read (s3://bucket/prefix/, models:/, runs:/), or upload the file."
        )


def _check_prefix(uri: str, allowed: Sequence[str], segments: list[str]) -> None:
    """Refuse ``uri`` unless URI sources are on and it lies under an allowed prefix."""
    _require_on(allowed)
    if any(s in ("..", ".") for s in segments) or "" in segments[:-1]:
        raise SourceForbiddenError("The URI may not contain '.', '..' or empty segments.")
    if not any(_under(uri, prefix) for prefix in allowed):
        raise SourceForbiddenError(
            f"{uri[:200]} is outside the allowed prefixes (CKPT_COMPAT_SOURCE_URIS).",
            allowed=list(allowed),
        )


def _under(uri: str, prefix: str) -> bool:
    """Under ``prefix`` on a segment boundary (``s3://b/models`` does not allow ``models2``)."""
    return uri == prefix.rstrip("/") or uri.startswith(prefix.rstrip("/") + "/")


def resolve_uri(uri: str, allowed: Sequence[str]) -> UriSource:
    """Check ``uri`` against ``allowed`` and look up its objects (no bytes read but an index).

    Raises:
        SourceForbiddenError, InvalidRequestError: See ``check_allowed``.
        SourceNotFoundError: No such bucket, object or prefix.
        SourceUnreachableError: The store could not be reached or refused (502).

    Example:
        >>> resolve_uri("s3://models/bert/model.safetensors", ["s3://models/"])  # doctest: +SKIP
        UriSource(uri='s3://models/bert/model.safetensors', filename='model.safetensors', ...)
    """
    location = check_allowed(uri, allowed)
    with storage_errors(uri):
        objects, entry = _lookup(location)
    listing = [(o.name, o.size, o.etag) for o in objects]
    identity = json.dumps([uri, listing], separators=(",", ":")).encode()
    shown = location.key.rstrip("/").rsplit("/", 1)[-1] or location.bucket
    return UriSource(
        uri=uri,
        filename=shown,
        size_bytes=sum(o.size for o in objects),
        fingerprint=hashlib.sha256(identity).hexdigest(),
        bucket=location.bucket,
        objects=tuple(objects),
        entry=entry,
    )


@contextmanager
def storage_errors(uri: str) -> Iterator[None]:
    """botocore's errors as the service's problems, naming ``uri``."""
    try:
        yield
    except Exception as exc:
        if not is_storage_error(exc):
            raise
        if is_not_found(exc):
            raise SourceNotFoundError(f"No bucket, object or prefix at {uri[:200]}.") from None
        raise SourceUnreachableError(
            f"The storage holding {uri[:200]} could not be read ({type(exc).__name__}: "
            f"{str(exc)[:200]}); check the endpoint and credentials, then try again.",
            uri=uri[:200],
        ) from None


def _lookup(location: S3Location) -> tuple[list[StoredObject], str]:
    """The objects of a file, an index (with the shards it names) or a prefix."""
    client = s3_client()
    key = location.key
    if key and not key.endswith("/"):
        try:
            head = client.head_object(Bucket=location.bucket, Key=key)
        except Exception as exc:
            if not is_not_found(exc):
                raise
        else:
            name = key.rsplit("/", 1)[-1]
            found = StoredObject(name, key, head["ContentLength"], head["ETag"])
            if name.endswith(INDEX_SUFFIX):
                return [found, *_shards(location.bucket, found)], name
            return [found], name
    prefix = key if not key or key.endswith("/") else key + "/"
    children = _children(location.bucket, prefix)
    if not children:
        raise SourceNotFoundError(f"No object or prefix at {location.uri[:200]}.")
    return children, ""


def _children(bucket: str, prefix: str) -> list[StoredObject]:
    """The objects directly under ``prefix`` whose names are plain file names."""
    pages = (
        s3_client()
        .get_paginator("list_objects_v2")
        .paginate(Bucket=bucket, Prefix=prefix, Delimiter="/")
    )
    found: list[StoredObject] = []
    for page in pages:
        for item in page.get("Contents", []):
            name = item["Key"][len(prefix) :]
            if _NAME.match(name):
                found.append(StoredObject(name, item["Key"], item["Size"], item["ETag"]))
            if len(found) > MAX_OBJECTS:
                raise SourceForbiddenError(f"The prefix holds more than {MAX_OBJECTS} objects.")
    return found


def _shards(bucket: str, index: StoredObject) -> list[StoredObject]:
    """The files beside an index that its ``weight_map`` names (read to know them)."""
    if index.size > MAX_INDEX_BYTES:
        return []  # the reader refuses it with its own limit
    body = s3_client().get_object(Bucket=bucket, Key=index.key)["Body"].read()
    try:
        names = set(json.loads(body).get("weight_map", {}).values())
    except (ValueError, AttributeError, TypeError):
        return []  # the reader says what is wrong with it
    prefix = index.key[: -len(index.name)]
    beside = {o.name: o for o in _children(bucket, prefix)}
    return [beside[n] for n in sorted(n for n in names if isinstance(n, str)) if n in beside]


@contextmanager
def scratch_dir(scratch: Path) -> Iterator[Path]:
    """A fresh directory under ``scratch``, removed after the ``with``."""
    scratch.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="fetch-", dir=scratch))
    try:
        yield work
    finally:
        shutil.rmtree(work, ignore_errors=True)


def range_reader(bucket: str, item: StoredObject) -> ReadRange:
    """Ranged GETs of ``item``, each only if its ETag is unchanged (a rewrite fails them)."""
    client = s3_client()

    def read_range(start: int, length: int) -> bytes:
        data: bytes = client.get_object(
            Bucket=bucket,
            Key=item.key,
            Range=f"bytes={start}-{start + length - 1}",
            IfMatch=item.etag,
        )["Body"].read()
        return data

    return read_range


def download_object(bucket: str, item: StoredObject, target: Path) -> None:
    """``item`` whole into ``target`` (boto3's managed download: parallel ranged GETs)."""
    with target.open("wb") as out:
        s3_client().download_fileobj(bucket, item.key, out)
