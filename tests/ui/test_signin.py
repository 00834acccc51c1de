"""Sign-in, sessions, CSRF and the API's refusal of the dashboard's cookie, over real HTTP."""

from __future__ import annotations

import httpx

from modelyard.client import Client
from modelyard.ui.web import COOKIE, CSP
from tests.ui.conftest import csrf_of, sign_in


def test_a_key_signs_in_once_and_sees_only_its_namespaces(
    browser: httpx.Client, alpha_key: str
) -> None:
    answer = sign_in(browser, alpha_key)
    assert answer.status_code == 303 and answer.headers["location"] == "/ui"
    cookie = answer.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie and "path=/ui" in cookie
    assert alpha_key not in answer.headers["set-cookie"]  # the browser holds a session id only

    home = browser.get("/ui")
    assert home.status_code == 200
    assert "/ui/ns/alpha" in home.text and "/ui/ns/beta" not in home.text
    assert "<script>alert(1)</script>" not in home.text  # a hostile description is escaped
    assert "&lt;script&gt;" in home.text
    assert home.headers["content-security-policy"] == CSP
    assert "default-src 'self'" in CSP and "unsafe-inline" not in CSP
    assert "<script>" not in home.text.replace('<script src="/ui/static/app.js" defer>', "")

    assert browser.get("/ui/ns/alpha").status_code == 200
    assert browser.get("/ui/live?ns=beta").status_code == 403
    assert browser.get("/ui/").headers["location"] == "/ui"
    for path in ("/ui/ns/beta", "/ui/ns/beta/events", "/ui/ns/no-such/deployments/x"):
        refused = browser.get(path)
        assert refused.status_code == 403, path
        assert "no viewer role" in refused.text and "content-security-policy" in refused.headers


def test_the_api_never_accepts_the_dashboards_cookie(browser: httpx.Client, alpha_key: str) -> None:
    sign_in(browser, alpha_key)
    session = browser.cookies.get(COOKIE)
    assert session
    for path in ("/api/v1/namespaces", "/api/v1/namespaces/alpha/models", "/api/v1/events"):
        answer = httpx.get(f"{browser.base_url}{path}", cookies={COOKIE: session})
        assert answer.status_code == 401, path
        assert "unauthenticated" in answer.text


def test_forms_without_their_csrf_token_are_refused(browser: httpx.Client, alpha_key: str) -> None:
    browser.get("/ui/signin")  # the sign-in cookie is set, the form's token is not sent
    refused = browser.post("/ui/signin", data={"key": alpha_key, "csrf": "forged"})
    assert refused.status_code == 403 and COOKIE not in browser.cookies

    sign_in(browser, alpha_key)
    assert browser.post("/ui/signout", data={}).status_code == 403
    assert browser.post("/ui/signout", data={"csrf": "forged"}).status_code == 403
    assert browser.get("/ui/ns/alpha").status_code == 200  # still signed in

    page = browser.get("/ui/ns/alpha")
    out = browser.post("/ui/signout", data={"csrf": csrf_of(page)})
    assert out.status_code == 303 and out.headers["location"] == "/ui/signin"
    after = browser.get("/ui/ns/alpha")
    assert after.status_code == 303
    assert after.headers["location"].startswith("/ui/signin?next=")


def test_bad_keys_and_revoked_keys_end_at_once(
    browser: httpx.Client, teams: Client, alpha_key: str
) -> None:
    refused = sign_in(browser, "my_nothing_wrong")
    assert refused.status_code == 401 and "signin-error" in refused.text
    assert sign_in(browser, "not a key").status_code == 401

    sign_in(browser, alpha_key)
    assert browser.get("/ui/ns/alpha").status_code == 200
    teams.revoke_key("alpha-viewer")
    ended = browser.get("/ui/ns/alpha")
    assert ended.status_code == 303 and "/ui/signin" in ended.headers["location"]
    assert browser.get("/ui/live?ns=alpha").status_code in (303, 401)


def test_pages_need_a_session_and_the_next_url_stays_on_the_dashboard(
    browser: httpx.Client, alpha_key: str
) -> None:
    answer = browser.get("/ui/ns/alpha/events")
    assert answer.status_code == 303
    assert answer.headers["location"] == "/ui/signin?next=%2Fui%2Fns%2Falpha%2Fevents"
    assert browser.get("/ui/live?ns=alpha").status_code == 401

    form = browser.get("/ui/signin")
    for target in ("https://evil.example/", "//evil.example/ui/", "/api/v1/keys"):
        answer = browser.post(
            "/ui/signin", data={"csrf": csrf_of(form), "key": alpha_key, "next": target}
        )
        assert answer.headers["location"] == "/ui", target
        form = browser.get("/ui/signin")
