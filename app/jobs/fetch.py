"""A check's checkpoint as a local path: read in place, or fetched from object storage.

Readers open local files; a checkpoint named by URI, or an upload kept in S3, is fetched
into scratch first. For a report only the bytes the readers read are fetched, by ranges
(``app.readers.report_ranges``, a sparse file), and the report states how many; a merge
reads every tensor, so it downloads whole. Scratch is removed when the ``with`` ends.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from app.errors import SourceChangedError
from app.readers.report_ranges import fetch_report_bytes
from app.storage.mlflow_sources import MlflowSource, download_mlflow_source, is_mlflow_uri
from app.storage.ranged import RangeFile
from app.storage.s3 import S3Storage
from app.storage.s3_client import S3Location, s3_client
from app.storage.uri_sources import (
    INDEX_SUFFIX,
    StoredObject,
    download_object,
    range_reader,
    resolve_source_uri,
    resolve_uri,
    scratch_dir,
    storage_errors,
)


@dataclass(frozen=True, slots=True)
class FetchedCheckpoint:
    """A checkpoint on local disk, and the bytes fetched to put it there (None: in place)."""

    path: Path
    bytes_read: int | None = None


@contextmanager
def fetch_uri_source(
    uri: str,
    *,
    fingerprint: str,
    allowed: Sequence[str],
    scratch: Path,
    whole: bool,
    tracking_uri: str = "",
) -> Iterator[FetchedCheckpoint]:
    """A URI source looked up again and fetched into a scratch directory.

    An MLflow URI's files are downloaded whole (``app.storage.mlflow_sources``).

    Raises:
        SourceChangedError: Its objects changed since it was submitted.
        SourceForbiddenError, SourceNotFoundError, SourceUnreachableError: As at submission.
    """
    if is_mlflow_uri(uri):
        mlflow = resolve_source_uri(uri, allowed, tracking_uri=tracking_uri)
        assert isinstance(mlflow, MlflowSource)
        with _fetch_mlflow(mlflow, fingerprint=fingerprint, scratch=scratch) as fetched:
            yield fetched
        return
    source = resolve_uri(uri, allowed)
    if source.fingerprint != fingerprint:
        raise SourceChangedError(
            "The objects at this URI changed after the check was submitted (names, sizes or "
            "ETags); submit the check again."
        )
    with scratch_dir(scratch) as work, storage_errors(uri):
        total = 0
        for item in source.objects:
            is_index = item.name.endswith(INDEX_SUFFIX)
            total += fetch_object(source.bucket, item, work / item.name, whole=whole or is_index)
        yield FetchedCheckpoint(work / source.entry if source.entry else work, total)


@contextmanager
def _fetch_mlflow(
    source: MlflowSource, *, fingerprint: str, scratch: Path
) -> Iterator[FetchedCheckpoint]:
    """An MLflow source resolved again (its files unchanged) downloaded into scratch."""
    if source.fingerprint != fingerprint:
        raise SourceChangedError(
            "The MLflow artifacts at this URI changed after the check was submitted (names "
            "or sizes); submit the check again."
        )
    with scratch_dir(scratch) as work:
        total = download_mlflow_source(source, work)
        yield FetchedCheckpoint(work / source.entry, total)


@contextmanager
def fetch_stored_blob(
    storage: S3Storage, key: str, *, scratch: Path, whole: bool
) -> Iterator[FetchedCheckpoint]:
    """An upload kept in S3, fetched as a URI source's file is."""
    location = S3Location(storage.bucket, storage.object_key(key))
    with scratch_dir(scratch) as work, storage_errors(location.uri):
        head = s3_client().head_object(Bucket=location.bucket, Key=location.key)
        item = StoredObject("upload", location.key, head["ContentLength"], head["ETag"])
        total = fetch_object(location.bucket, item, work / item.name, whole=whole)
        yield FetchedCheckpoint(work / item.name, total)


def fetch_object(bucket: str, item: StoredObject, target: Path, *, whole: bool) -> int:
    """Write ``item`` to ``target``: sparse with what a report reads, or whole (a merge, a
    legacy torch file). Returns the bytes fetched."""
    head_bytes = 0
    if not whole:
        ranged = RangeFile(range_reader(bucket, item), item.size, name=item.name)
        if fetch_report_bytes(ranged):
            ranged.write_sparse(target)
            return ranged.bytes_read
        head_bytes = ranged.bytes_read
    download_object(bucket, item, target)
    return head_bytes + item.size
