"""Static files come from the running gunicorn itself (WhiteNoise), as a deployment serves them.

The stack ran `collectstatic` like `make run` does: the pages name content-hashed
files, which are served gzipped with a year's cache, and nothing loads from another host.
"""

from __future__ import annotations

import re
import urllib.error
import urllib.request

import pytest

pytestmark = pytest.mark.e2e

YEAR_SECONDS = 60 * 60 * 24 * 365


def fetch(stack, path: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(stack.base_url + path, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, {k.lower(): v for k, v in response.headers.items()}, response.read()
    except urllib.error.HTTPError as error:
        return error.code, {k.lower(): v for k, v in error.headers.items()}, error.read()


def static_paths(html: str) -> list[str]:
    return re.findall(r"(?:src|href)=\"(/static/[^\"]+)\"", html)


def test_pages_name_hashed_files_served_gzipped_with_a_years_cache(stack):
    status, _, login = fetch(stack, "/admin/login/")
    assert status == 200
    status, _, docs = fetch(stack, "/api/docs/")
    assert status == 200
    paths = static_paths(login.decode()) + static_paths(docs.decode())
    names = " ".join(paths)
    assert "admin/css/base." in names and "swagger-ui-bundle." in names, paths
    assert not re.search(r"(src|href)=\"(https?:)?//", login.decode() + docs.decode()), "a CDN"
    for path in paths:
        assert re.search(r"\.[0-9a-f]{12}\.(css|js|png|svg|ico)$", path), f"not a hashed name: {path}"
        status, headers, body = fetch(stack, path, {"Accept-Encoding": "gzip"})
        assert status == 200, path
        assert body, path
        max_age = int(re.search(r"max-age=(\d+)", headers["cache-control"]).group(1))
        assert max_age >= YEAR_SECONDS and "immutable" in headers["cache-control"], (path, headers)
        if path.endswith((".css", ".js")):
            assert headers.get("content-encoding") == "gzip", (path, headers)


def test_an_unknown_static_file_is_a_404_in_the_error_format(stack):
    status, headers, body = fetch(stack, "/static/admin/css/nope.css")
    assert status == 404
    assert headers["content-type"].startswith("application/json")
    assert b'"not_found"' in body
