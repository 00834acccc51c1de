"""Two teams, a key that reads one of them, and a signed-in dashboard session over real HTTP."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from modelyard.client import Client

CSRF = re.compile(r'name="csrf" value="([^"]+)"')


@pytest.fixture
def teams(admin: Client) -> Client:
    admin.create_namespace("alpha", "team <b>alpha</b><script>alert(1)</script>")
    admin.create_namespace("beta", "team beta")
    return admin


@pytest.fixture
def alpha_key(teams: Client) -> str:
    _, token = teams.create_key("alpha-viewer", {"alpha": "viewer"})
    return token


def sign_in(browser: httpx.Client, key: str) -> httpx.Response:
    form = browser.get("/ui/signin")
    found = CSRF.search(form.text)
    assert found, form.text
    return browser.post("/ui/signin", data={"csrf": found.group(1), "key": key, "next": "/ui"})


@pytest.fixture
def browser(teams: Client) -> Iterator[httpx.Client]:
    """An HTTP client that keeps cookies like a browser, not signed in."""
    with httpx.Client(base_url=teams.url, follow_redirects=False, timeout=10) as client:
        yield client


def csrf_of(page: httpx.Response) -> str:
    found = CSRF.search(page.text)
    assert found, page.text
    return found.group(1)


__all__ = ["Path", "csrf_of", "sign_in"]
