"""The base of every area of the SDK: a client made from the settings, and one API call,
``request``, which sends again what a standby control plane refused during a failover."""

from __future__ import annotations

import functools
import json
import logging
import ssl
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

from modelyard.errors import ServerUnreachable, Unavailable, error_from_body
from modelyard.settings import Settings, load_settings

log = logging.getLogger(__name__)

MAX_RETRY_WAIT = 5.0
"""The longest one wait between tries of a request a standby refused, whatever its Retry-After."""
_LOOPBACK = {"127.0.0.1", "localhost", "::1", "[::1]"}


def _retry_after(response: httpx.Response) -> float:
    """The seconds a ``Retry-After`` header asks for (1 when absent, or an HTTP date)."""
    try:
        return max(0.0, float(response.headers.get("Retry-After", "1")))
    except ValueError:
        return 1.0


def _tls(url: str) -> ssl.SSLContext | bool:
    """What the API client verifies TLS with: the trust store for an ``https`` control plane;
    for plain ``http`` a context that trusts nothing, so no HTTPS request could pass unverified,
    made without loading the trust store (40-60 ms of every command's start-up)."""
    if urlsplit(url).scheme == "https":
        return True
    return ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)


class ClientBase:
    """The settings, the HTTP connections and ``request``: what the areas' mixins of `Client`
    (``modelyard.client``) call."""

    def __init__(
        self,
        url: str | None = None,
        api_key: str | None = None,
        *,
        settings: Settings | None = None,
        timeout: float = 60.0,
        cache_dir: Path | None = None,
        gateway_url: str | None = None,
        retry_unavailable_s: float = 30.0,
    ) -> None:
        """``retry_unavailable_s``: how long a request a standby control plane refused (503
        ``unavailable``, during a failover) is sent again before its error is raised; 0 never."""
        settings = settings or load_settings().settings
        self.retry_unavailable_s = retry_unavailable_s
        self.settings = settings
        self.url = (url or settings.url).rstrip("/")
        host = "127.0.0.1" if settings.gateway_host in ("0.0.0.0", "::") else settings.gateway_host
        self.gateway_url = gateway_url or f"http://{host}:{settings.gateway_port}"
        """Where events and prediction reads go (``realtime``)."""
        self.api_key = api_key or settings.resolved_api_key()
        self.cache_dir = cache_dir or settings.cache_dir or settings.home / "cache"
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        self.http = httpx.Client(
            base_url=f"{self.url}/api/v1", headers=headers, timeout=timeout, verify=_tls(self.url)
        )
        self._timeout = timeout
        self._local = urlsplit(self.url).hostname in _LOOPBACK

    @functools.cached_property
    def _plain(self) -> httpx.Client:
        """The client for blob-store URLs, made on first use: each httpx client loads the TLS
        trust store (tens of ms), and with a local blob store it is never used."""
        return httpx.Client(timeout=self._timeout)

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        """One API call (``path`` under ``/api/v1``): the decoded JSON answer, None when empty; an
        error answer raises the `ModelyardError` it names.

        A request a standby refused (503 ``unavailable``: it was not executed) is sent again after
        its ``Retry-After`` (at most `MAX_RETRY_WAIT` s a time) for up to ``retry_unavailable_s``,
        so that a write during a failover waits for the new leader instead of failing; a streamed
        body (a file's chunks) cannot be sent twice and is not retried.

        Example: ``client.request("GET", "/namespaces")``
        """
        content = kwargs.get("content")
        replayable = isinstance(content, bytes | str | None) and "files" not in kwargs
        budget = self.retry_unavailable_s if replayable else 0.0
        started, tries = time.monotonic(), 0
        while True:
            tries += 1
            try:
                response = self.http.request(method, path, **kwargs)
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:  # nothing was sent
                raise ServerUnreachable(
                    f"cannot reach the control plane at {self.url} ({exc}): start it with "
                    "'modelyard up' or set MODELYARD_URL"
                ) from exc
            except httpx.TransportError as exc:  # sent, and the answer never came
                why = str(exc) or type(exc).__name__
                raise ServerUnreachable(
                    f"the control plane at {self.url} stopped answering {method} {path} ({why})"
                    + (
                        ": is it still running?"
                        if method in ("GET", "HEAD")
                        else ": the request was sent and may have taken effect; look (a 'show' or "
                        "'list' command) before sending it again"
                    )
                ) from exc
            if response.is_success:
                break
            try:
                body = response.json()
            except json.JSONDecodeError:
                body = None
            error = error_from_body(response.status_code, body)
            if response.status_code != 503 or not isinstance(error, Unavailable):
                raise error
            elapsed = time.monotonic() - started
            if elapsed >= budget:
                if tries > 1:
                    raise Unavailable(
                        f"{error.message} (sent {tries} times over {elapsed:.1f} s)",
                        **error.details,
                    )
                raise error
            # At least a tenth of a second, so that a "Retry-After: 0" does not spin.
            wait = min(max(_retry_after(response), 0.1), MAX_RETRY_WAIT, budget - elapsed)
            log.info(
                "%s %s refused by a standby control plane: retry in %.1f s", method, path, wait
            )
            time.sleep(wait)
        if response.status_code == 204 or not response.content:
            return None
        return response.json()

    def _lines(self, path: str, params: dict[str, Any]) -> Iterator[str]:
        """A streamed text answer's lines, as they come (no read timeout)."""
        with self.http.stream(
            "GET", path, params=params, timeout=httpx.Timeout(None, connect=10)
        ) as response:
            if not response.is_success:
                response.read()
                raise error_from_body(response.status_code, response.json())
            yield from response.iter_lines()
