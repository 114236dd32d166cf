"""Path normalisation: crafted paths route as their canonical form or are refused."""

import pytest

from vocelio_proxy.paths import PathError, normalize_path


@pytest.mark.parametrize(("raw", "expected"), [
    ("/api/v1/billing", "/api/v1/billing"),
    ("//api///v1//billing/", "/api/v1/billing/"),
    ("/api/v1/public/../admin", "/api/v1/admin"),
    ("/api/v1/public/%2e%2e/admin", "/api/v1/admin"),
    ("/api/v1/public/%2E%2E/admin", "/api/v1/admin"),
    ("/api/./v1/./x", "/api/v1/x"),
    ("/../../etc/passwd", "/etc/passwd"),
    ("/a/b/..", "/a/"),
    ("/a/%7euser", "/a/~user"),
    ("/a/%41", "/a/A"),
    ("/a/%20b", "/a/%20b"),
    ("/", "/"),
])
def test_normalised_paths_resolve_dot_segments_and_duplicate_slashes(raw: str, expected: str) -> None:
    assert normalize_path(raw) == expected


@pytest.mark.parametrize("raw", ["/public%2F..%2Fadmin", "/a%5c..%5cb", "/a\\b", "relative", "/a/%2f"])
def test_encoded_separators_and_backslashes_are_refused(raw: str) -> None:
    with pytest.raises(PathError):
        normalize_path(raw)
