"""One boto3 S3 client per process, configured from the usual AWS environment.

boto3 (not s3fs or obstore) because the backend needs exact control of three things: byte
ranges read exactly as asked (s3fs reads 5 MiB blocks by default, so a 100 KB header would
cost 5 MiB), multipart uploads whose parts we send as bytes arrive, and a server-side copy
that also works above 5 GB (boto3's managed copy switches to ``UploadPartCopy``; a single
``CopyObject``, which obstore issues, stops at 5 GB and uploads go to 20 GiB).

Credentials, endpoint and region come from the environment as every AWS tool reads them
(``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_ENDPOINT_URL_S3`` /
``AWS_ENDPOINT_URL``, ``AWS_REGION`` / ``AWS_DEFAULT_REGION``, profiles, instance roles).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from typing import Any
from urllib.parse import unquote, urlsplit

from app.errors import StorageUnavailableError

log = logging.getLogger(__name__)

_NOT_FOUND = frozenset({"404", "NoSuchKey", "NoSuchBucket", "NotFound"})
# Answers that no retry mends: the bucket or the credentials are wrong until someone fixes them.
_MISCONFIGURED = frozenset(
    {
        "403",
        "AccessDenied",
        "AllAccessDisabled",
        "InvalidAccessKeyId",
        "InvalidBucketName",
        "NoSuchBucket",
        "SignatureDoesNotMatch",
        "ExpiredToken",
        "InvalidToken",
    }
)
STORAGE_RETRY_AFTER_SECONDS = 5
"""What a passing storage failure tells clients to wait: about a store's restart."""


@dataclass(frozen=True, slots=True)
class S3Location:
    """A bucket and a key (or key prefix) in it."""

    bucket: str
    key: str

    @property
    def uri(self) -> str:
        """The location as ``s3://bucket/key``."""
        return f"s3://{self.bucket}/{self.key}"


def parse_s3_url(url: str) -> S3Location:
    """``s3://bucket/key`` as a location (the key may be empty or end with ``/``).

    Raises:
        ValueError: Not an ``s3://`` URL with a bucket.

    Example:
        >>> parse_s3_url("s3://models/llama/")
        S3Location(bucket='models', key='llama/')
    """
    parts = urlsplit(url)
    if parts.scheme != "s3" or not parts.netloc or parts.query or parts.fragment:
        raise ValueError(f"not an s3://bucket/key URL: {url[:200]!r}")
    return S3Location(parts.netloc, unquote(parts.path).lstrip("/"))


def s3_client(*, probe: bool = False) -> Any:
    """The process's S3 client (thread-safe; made on first use, after any fork, and again
    if the endpoint or region in the environment changed). ``probe``: a client that tries
    once with short timeouts, for ``/readyz``, which must answer within a probe's timeout."""
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    return _client(os.getpid(), endpoint or "", region or "", probe)


@cache
def _client(_pid: int, endpoint: str, region: str, probe: bool) -> Any:
    import boto3
    from botocore.config import Config

    config = Config(
        connect_timeout=2 if probe else 5,
        read_timeout=5 if probe else 60,
        retries={"max_attempts": 1 if probe else 3, "mode": "standard"},
        # An S3-compatible server on a custom endpoint (MinIO, Ceph, moto) rarely has
        # virtual-host DNS for its buckets.
        s3={"addressing_style": "path"} if endpoint else {},
        max_pool_connections=32,
    )
    return boto3.session.Session().client(
        "s3", endpoint_url=endpoint or None, region_name=region or None, config=config
    )


def error_code(exc: BaseException) -> str | None:
    """The S3 error code of a botocore ClientError (``NoSuchKey``, ``404``...), else None."""
    response = getattr(exc, "response", None)
    if not isinstance(response, dict):
        return None
    code = response.get("Error", {}).get("Code")
    return str(code) if code is not None else None


def is_not_found(exc: BaseException) -> bool:
    """Whether S3 answered that the key (or the bucket) does not exist."""
    return error_code(exc) in _NOT_FOUND


def is_storage_error(exc: BaseException) -> bool:
    """Whether ``exc`` is boto's: the store refused, failed or could not be reached
    (botocore's errors, and those of boto3's managed transfers, which wrap them)."""
    from boto3.exceptions import Boto3Error
    from botocore.exceptions import BotoCoreError, ClientError
    from s3transfer.exceptions import (  # type: ignore[import-untyped]
        RetriesExceededError,
        S3UploadFailedError,
    )

    return isinstance(
        exc, BotoCoreError | ClientError | Boto3Error | RetriesExceededError | S3UploadFailedError
    )


def storage_unavailable(
    exc: BaseException, action: str, *, code: str | None = None
) -> StorageUnavailableError:
    """The problem for a failure of the service's own storage while it tried to ``action``.

    Passing failures (refused connections, timeouts, 5xx) carry ``retry_after``; a missing
    bucket or refused credentials do not (a retry fails the same way until they are fixed).
    The store's own message goes to the log, not to the client. ``code`` names the failure
    where the store's answer cannot (a HEAD's bare 404 for a missing bucket).

    Example:
        >>> storage_unavailable(TimeoutError(), "store the upload").extensions
        {'retry_after': 5}
    """
    code = code or error_code(exc) or _wrapped_code(exc)
    log.warning("The object storage failed to %s: %s: %s", action, type(exc).__name__, exc)
    if code in _MISCONFIGURED:
        return StorageUnavailableError(
            f"The object storage refused to {action} ({code}): its bucket or credentials "
            "are misconfigured on the server (CKPT_COMPAT_STORAGE_URL, AWS_* settings). "
            "Nothing was kept; tell the operator."
        )
    return StorageUnavailableError(
        f"The object storage could not {action} ({code or type(exc).__name__}); it may be "
        "down or restarting. Nothing was kept: retry after a few seconds.",
        retry_after=STORAGE_RETRY_AFTER_SECONDS,
    )


def _wrapped_code(exc: BaseException) -> str | None:
    """The S3 code of the ClientError a managed transfer's error wraps (in its cause or
    message: ``S3UploadFailedError`` keeps only the text)."""
    if exc.__cause__ is not None and error_code(exc.__cause__):
        return error_code(exc.__cause__)
    text = str(exc)
    return next((code for code in sorted(_MISCONFIGURED) if f"({code})" in text), None)


@contextmanager
def store_errors(action: str) -> Iterator[None]:
    """boto's errors inside as ``StorageUnavailableError``; a missing key stays what it was
    (the caller's ``FileNotFoundError`` or None), a missing bucket does not."""
    try:
        yield
    except Exception as exc:
        if not is_storage_error(exc) or (is_not_found(exc) and error_code(exc) != "NoSuchBucket"):
            raise
        raise storage_unavailable(exc, action) from exc
