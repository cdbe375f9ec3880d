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

import os
from dataclasses import dataclass
from functools import cache
from typing import Any
from urllib.parse import unquote, urlsplit

_NOT_FOUND = frozenset({"404", "NoSuchKey", "NoSuchBucket", "NotFound"})


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


def s3_client() -> Any:
    """The process's S3 client (thread-safe; made on first use, after any fork, and again
    if the endpoint or region in the environment changed)."""
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    return _client(os.getpid(), endpoint or "", region or "")


@cache
def _client(_pid: int, endpoint: str, region: str) -> Any:
    import boto3
    from botocore.config import Config

    config = Config(
        connect_timeout=5,
        read_timeout=60,
        retries={"max_attempts": 3, "mode": "standard"},
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
    """Whether ``exc`` is botocore's: the store refused, failed or could not be reached."""
    from botocore.exceptions import BotoCoreError, ClientError

    return isinstance(exc, BotoCoreError | ClientError)
