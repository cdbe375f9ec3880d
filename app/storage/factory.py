"""The storage backend a ``CKPT_COMPAT_STORAGE_URL`` names (one place decides)."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote, urlsplit

from app.storage.backend import Storage
from app.storage.local import LocalStorage
from app.storage.s3_client import parse_s3_url


def storage_root(url: str) -> Path | None:
    """The shared directory of a ``file://`` URL; None for the empty URL (the data directory)
    and for ``s3://`` (not a directory).

    Raises:
        ValueError: Another scheme, a host, or a relative path (the message says what works).

    Example:
        >>> storage_root("file:///srv/ckpt-compat")
        PosixPath('/srv/ckpt-compat')
    """
    if url.startswith("s3://"):
        parse_s3_url(url)  # ValueError: no bucket
        return None
    if not url:
        return None
    parts = urlsplit(url)
    path = unquote(parts.path)
    if parts.scheme != "file" or parts.netloc not in ("", "localhost") or not path.startswith("/"):
        raise ValueError(
            f"CKPT_COMPAT_STORAGE_URL={url!r} is not supported: use file:///absolute/dir (a "
            "directory every API process and worker mounts at the same path), or leave it "
            "empty to store in CKPT_COMPAT_DATA_DIR."
        )
    return Path(path)


def open_storage(url: str, *, data_dir: Path, presign: bool = False) -> Storage:
    """The backend for ``url``: the data directory when empty, a shared directory for
    ``file://``, a bucket for ``s3://`` (``presign``: redirect downloads to presigned URLs).

    Raises:
        FileNotFoundError: The shared directory does not exist (not mounted?): it is not
            created, so an unmounted share never fills this machine's disk unseen.
    """
    if url.startswith("s3://"):
        from app.storage.s3 import S3Storage  # boto3 is imported only when S3 is used

        return S3Storage(parse_s3_url(url), scratch=data_dir / "scratch", presign=presign)
    root = storage_root(url)
    if root is None:
        return LocalStorage(data_dir)
    if not root.is_dir():
        raise FileNotFoundError(
            f"The storage directory {root} (CKPT_COMPAT_STORAGE_URL) does not exist; create "
            "or mount it first."
        )
    return LocalStorage(root, shared=True)
