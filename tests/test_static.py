"""Static path resolution, the file cache and conditional requests."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from server.web.static import FileCache, content_type, not_modified, resolve


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/", "index.html"),
        ("/app.js", "app.js"),
        ("/sub/", "sub/index.html"),
        ("/a%20b.txt", "a b.txt"),
        ("//double//slash.css", "double/slash.css"),
        ("/../etc/passwd", None),
        ("/%2e%2e/etc/passwd", None),
        ("/a/%2E%2E/%2E%2E/x", None),
        ("/..%2fetc", None),
        ("/..%5cetc", None),
        ("/a\\..\\b", None),
        ("/x%00.html", None),
        ("/./index.html", None),
        ("/%ff", None),
        ("relative", None),
    ],
)
def test_resolve(path: str, expected: str | None) -> None:
    assert resolve(path) == expected


@pytest.mark.parametrize(
    ("name", "ctype"),
    [
        ("index.html", "text/html; charset=utf-8"),
        ("app.js", "text/javascript; charset=utf-8"),
        ("s.css", "text/css; charset=utf-8"),
        ("f.svg", "image/svg+xml"),
        ("blob", "application/octet-stream"),
    ],
)
def test_content_type(name: str, ctype: str) -> None:
    assert content_type(name) == ctype


def test_cache_rereads_changed_files(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("one")
    cache = FileCache(tmp_path)
    first = cache.get("a.txt")
    assert first is not None and first.body == b"one"
    assert cache.get("a.txt") is first
    (tmp_path / "a.txt").write_text("two!")
    second = cache.get("a.txt")
    assert second is not None and second.body == b"two!" and second.etag != first.etag


def test_a_cached_file_is_looked_at_again_at_most_once_a_second(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("one")
    cache = FileCache(tmp_path)
    first = cache.get("a.txt", now=10.0)
    assert first is not None and first.body == b"one"
    (tmp_path / "a.txt").write_text("two!")
    assert cache.get("a.txt", now=10.9) is first  # no stat within the second
    second = cache.get("a.txt", now=11.0)
    assert second is not None and second.body == b"two!"
    (tmp_path / "a.txt").unlink()
    assert cache.get("a.txt", now=11.5) is second and cache.get("a.txt", now=12.0) is None


def test_cache_refuses_missing_directories_and_symlinks_out(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    (root / "dir").mkdir()
    secret = tmp_path / "secret.txt"
    secret.write_text("secret")
    os.symlink(secret, root / "link.txt")
    (root / "ok.txt").write_text("ok")
    os.symlink(root / "ok.txt", root / "inner.txt")
    cache = FileCache(root)
    assert cache.get("missing") is None
    assert cache.get("dir") is None
    assert cache.get("link.txt") is None
    inner = cache.get("inner.txt")
    assert inner is not None and inner.body == b"ok"


def test_conditional_requests(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("x")
    f = FileCache(tmp_path).get("a.txt")
    assert f is not None
    assert not_modified(f, {"if-none-match": f.etag})
    assert not_modified(f, {"if-none-match": f'"other", W/{f.etag}'})
    assert not_modified(f, {"if-none-match": "*"})
    assert not not_modified(f, {"if-none-match": '"other"'})
    assert not_modified(f, {"if-modified-since": f.last_modified})
    assert not not_modified(f, {"if-modified-since": "Mon, 01 Jan 2001 00:00:00 GMT"})
    assert not not_modified(f, {"if-modified-since": "garbage"})
    # If-None-Match wins over If-Modified-Since (RFC 9110 §13.1.3)
    assert not not_modified(f, {"if-none-match": '"x"', "if-modified-since": f.last_modified})
    assert not not_modified(f, {})
