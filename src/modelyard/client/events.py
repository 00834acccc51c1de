"""The event stream (server-sent events) and webhooks."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import httpx

from modelyard.client.base import ClientBase
from modelyard.errors import ServerUnreachable, error_from_body

if TYPE_CHECKING:
    from modelyard.events.records import Event, Webhook


class Events(ClientBase):
    """The event stream and webhooks."""

    def events(
        self,
        *,
        after: int | None = None,
        types: list[str] | None = None,
        follow: bool = True,
        timeout: float | None = None,
        last: int | None = None,
    ) -> Iterator[Event]:
        """Server-sent events, in order; with ``follow`` it waits for new ones (when ``timeout``
        is given, it ends after that many seconds without any). Without ``after``, ``last``
        starts with the newest ``last`` events that match ``types``.

        Example: ``[e.type for e in client.events(types=["model.*"], last=10, follow=False)]``
        """
        from modelyard.events.records import Event

        params: dict[str, Any] = {"follow": follow}
        if after is not None:
            params["after"] = after
        elif last is not None:
            params["last"] = last
        if types:
            params["type"] = types
        try:
            with self.http.stream(
                "GET", "/events", params=params, timeout=httpx.Timeout(timeout, connect=10)
            ) as response:
                if not response.is_success:
                    response.read()
                    raise error_from_body(response.status_code, response.json())
                data: list[str] = []
                for line in response.iter_lines():
                    if line.startswith("data:"):
                        data.append(line[5:].strip())
                    elif not line and data:
                        yield Event.model_validate_json("\n".join(data))
                        data = []
        except httpx.ReadTimeout:
            return
        except httpx.TransportError as exc:
            raise ServerUnreachable(f"event stream from {self.url} broke: {exc}") from exc

    def create_webhook(
        self, namespace: str, url: str, events: list[str] | None = None
    ) -> tuple[Webhook, str]:
        """Send a namespace's events (those matching ``events``) to ``url``, HMAC-signed; returns
        the webhook and its signing secret (shown only now).

        Example: ``hook, secret = client.create_webhook("team", "https://ci.example.com/hook")``
        """
        from modelyard.events.records import Webhook

        body = self.request(
            "POST",
            f"/namespaces/{namespace}/webhooks",
            json={"url": url, "events": events or ["*"]},
        )
        return Webhook.model_validate(body["webhook"]), str(body["secret"])

    def list_webhooks(self, namespace: str) -> list[Webhook]:
        """The webhooks of a namespace.

        Example: ``client.list_webhooks("team")``
        """
        from modelyard.events.records import Webhook

        return [
            Webhook.model_validate(w)
            for w in self.request("GET", f"/namespaces/{namespace}/webhooks")
        ]

    def delete_webhook(self, namespace: str, webhook_id: str) -> None:
        """Stop sending events to a webhook.

        Example: ``client.delete_webhook("team", hook.id)``
        """
        self.request("DELETE", f"/namespaces/{namespace}/webhooks/{webhook_id}")
