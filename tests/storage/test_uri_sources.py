"""The allowlist of URI sources, checked before any request is made."""

from __future__ import annotations

import pytest

from app.errors import InvalidRequestError, SourceForbiddenError
from app.storage.s3_client import S3Location
from app.storage.uri_sources import check_allowed, is_uri

ALLOWED = ["s3://models/team-a/", "s3://other"]


def test_check_allowed_accepts_uris_under_a_prefix() -> None:
    assert check_allowed("s3://models/team-a/x.pth", ALLOWED) == S3Location(
        "models", "team-a/x.pth"
    )
    assert check_allowed("s3://other/deep/er/", ALLOWED) == S3Location("other", "deep/er/")


@pytest.mark.parametrize(
    "uri",
    [
        "s3://models/team-b/x.pth",
        "s3://models/team-ab/x.pth",  # a prefix ends at a segment boundary
        "s3://models/team-a/../team-b/x.pth",
        "s3://models/team-a//x.pth",
        "s3://otherbucket/x.pth",
    ],
)
def test_check_allowed_refuses_uris_outside_the_prefixes(uri: str) -> None:
    with pytest.raises(SourceForbiddenError):
        check_allowed(uri, ALLOWED)


def test_check_allowed_refuses_everything_when_off_and_other_schemes() -> None:
    with pytest.raises(SourceForbiddenError, match="CKPT_COMPAT_SOURCE_URIS"):
        check_allowed("s3://models/team-a/x.pth", [])
    with pytest.raises(InvalidRequestError, match=r"use s3://bucket/key"):
        check_allowed("gs://models/team-a/x.pth", ALLOWED)


def test_is_uri_tells_uris_from_paths() -> None:
    assert is_uri("s3://b/k") and not is_uri("/srv/models/x.pth")
