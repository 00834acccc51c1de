"""The SDK's realtime part: streams and realtime deployments through the API, events and
predictions through the gateway. ``client.realtime`` and ``client.stream(ns, name)``."""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

import httpx
import orjson

from modelyard.errors import Overloaded, ServerUnreachable, error_from_body
from modelyard.realtime.predictions import Prediction
from modelyard.realtime.queue import DeadLetter
from modelyard.realtime.records import RealtimeInfo
from modelyard.realtime.streams import StreamInfo
from modelyard.types import check_name

if TYPE_CHECKING:
    from modelyard.client import Client

BATCH = 1000


class Stream:
    """Sends events to one stream through the gateway; an answer means they are durable."""

    def __init__(self, http: httpx.Client, namespace: str, name: str, retry_s: float = 30.0):
        self.http = http
        self.path = f"/{check_name(namespace, 'namespace')}/streams/{check_name(name)}/events"
        self.retry_s = retry_s
        """How long to keep retrying a 429 (backpressure) before raising `Overloaded`."""

    def send(self, event: Mapping[str, Any]) -> dict[str, Any]:
        """One event; returns ``{"accepted", "stored", "duplicates"}``.

        Example: ``client.stream("team", "clicks").send({"user_id": "u42", "type": "view"})``
        """
        return self._post(orjson.dumps(event), b"application/json")

    def send_many(self, events: Iterable[Mapping[str, Any]], batch: int = BATCH) -> dict[str, Any]:
        """Events in batches of ``batch`` (NDJSON); each batch is stored whole or not at all,
        and a failing batch raises with the batches before it stored. Totals of the answers.

        Example: ``client.stream("team", "clicks").send_many(events, batch=500)``
        """
        totals: dict[str, Any] = {"accepted": 0, "stored": 0, "duplicates": []}
        chunk: list[bytes] = []
        for event in events:
            chunk.append(orjson.dumps(event))
            if len(chunk) >= batch:
                _add(totals, self._post(b"\n".join(chunk) + b"\n", b"application/x-ndjson"))
                chunk = []
        if chunk:
            _add(totals, self._post(b"\n".join(chunk) + b"\n", b"application/x-ndjson"))
        return totals

    def _post(self, body: bytes, content_type: bytes) -> dict[str, Any]:
        deadline = time.monotonic() + self.retry_s
        while True:
            try:
                answer = self.http.post(
                    self.path, content=body, headers={"content-type": content_type.decode()}
                )
            except httpx.TransportError as exc:
                raise ServerUnreachable(f"cannot reach the gateway ({exc})") from exc
            if answer.status_code == 429 and time.monotonic() < deadline:
                time.sleep(min(float(answer.headers.get("retry-after", "1")), 5.0))
                continue
            if not answer.is_success:
                raise error_from_body(answer.status_code, _json(answer))
            result: dict[str, Any] = answer.json()
            return result


def _add(totals: dict[str, Any], answer: dict[str, Any]) -> None:
    totals["accepted"] += answer["accepted"]
    totals["stored"] += answer["stored"]
    totals["duplicates"] += answer["duplicates"]


def _json(answer: httpx.Response) -> Any:
    try:
        return answer.json()
    except ValueError:
        return None


class RealtimeClient:
    def __init__(self, client: Client, gateway: str | None = None) -> None:
        self.client = client
        self.gateway = (gateway or client.gateway_url).rstrip("/")
        headers = {"Authorization": f"Bearer {client.api_key}"} if client.api_key else {}
        self.http = httpx.Client(base_url=self.gateway, headers=headers, timeout=60)

    def stream(self, namespace: str, name: str) -> Stream:
        """A stream to send events to, through the gateway (also ``client.stream``).

        Example: ``client.realtime.stream("team", "clicks").send({"user_id": "u42"})``
        """
        return Stream(self.http, namespace, name)

    # streams ------------------------------------------------------------------------------------
    def create_stream(self, namespace: str, name: str, **spec: Any) -> StreamInfo:
        """A new stream; ``spec`` holds the other StreamSpec fields (entity key, fields, retention).

        Example: ``client.realtime.create_stream("team", "clicks", fields={"price": "number"})``
        """
        body = self.client.request("POST", _streams(namespace), json={"name": name, **spec})
        return StreamInfo.model_validate(body)

    def list_streams(self, namespace: str) -> list[StreamInfo]:
        """The streams of a namespace.

        Example: ``[s.name for s in client.realtime.list_streams("team")]``
        """
        return [
            StreamInfo.model_validate(s) for s in self.client.request("GET", _streams(namespace))
        ]

    def get_stream(self, namespace: str, name: str) -> StreamInfo:
        """One stream and its spec.

        Example: ``client.realtime.get_stream("team", "clicks")``
        """
        body = self.client.request("GET", f"{_streams(namespace)}/{check_name(name)}")
        return StreamInfo.model_validate(body)

    def delete_stream(self, namespace: str, name: str) -> None:
        """Delete a stream.

        Example: ``client.realtime.delete_stream("team", "clicks")``
        """
        self.client.request("DELETE", f"{_streams(namespace)}/{check_name(name)}")

    def delete_entity(self, namespace: str, stream: str, entity: str) -> int:
        """Remove every event of ``entity`` from the stream's log; returns how many.

        Example: ``client.realtime.delete_entity("team", "clicks", "u42")``
        """
        path = f"{_streams(namespace)}/{check_name(stream)}/entities/{entity}/events"
        return int(self.client.request("DELETE", path)["deleted"])

    def entity_events(
        self, namespace: str, stream: str, entity: str, limit: int = 100
    ) -> list[dict[str, Any]]:
        """An entity's events in log order (through the gateway).

        Example: ``client.realtime.entity_events("team", "clicks", "u42", limit=10)``
        """
        path = f"/{namespace}/streams/{stream}/entities/{entity}/events"
        events: list[dict[str, Any]] = self._get(path, {"limit": limit})["events"]
        return events

    # realtime deployments -----------------------------------------------------------------------
    def create(self, namespace: str, name: str, **spec: Any) -> RealtimeInfo:
        """A new realtime deployment: a function (``module:function``) run on the events its trigger
        rule selects; ``spec`` holds the other fields.

        Example: ``client.realtime.create("team", "score", stream="clicks", function="shop:score")``
        """
        body = self.client.request("POST", _realtime(namespace), json={"name": name, **spec})
        return RealtimeInfo.model_validate(body)

    def list_deployments(self, namespace: str) -> list[RealtimeInfo]:
        """The realtime deployments of a namespace.

        Example: ``[r.name for r in client.realtime.list_deployments("team")]``
        """
        return [
            RealtimeInfo.model_validate(r) for r in self.client.request("GET", _realtime(namespace))
        ]

    def get(self, namespace: str, name: str) -> RealtimeInfo:
        """One realtime deployment, with its spec and state.

        Example: ``client.realtime.get("team", "cart-score")``
        """
        body = self.client.request("GET", f"{_realtime(namespace)}/{check_name(name)}")
        return RealtimeInfo.model_validate(body)

    def update(self, namespace: str, name: str, **changes: Any) -> RealtimeInfo:
        """Change some fields of a realtime deployment.

        Example: ``client.realtime.update("team", "cart-score", concurrency=8)``
        """
        body = self.client.request(
            "PATCH", f"{_realtime(namespace)}/{check_name(name)}", json=changes
        )
        return RealtimeInfo.model_validate(body)

    def delete(self, namespace: str, name: str) -> None:
        """Delete a realtime deployment.

        Example: ``client.realtime.delete("team", "cart-score")``
        """
        self.client.request("DELETE", f"{_realtime(namespace)}/{check_name(name)}")

    def lag(self, namespace: str, name: str) -> dict[str, float]:
        """How far the deployment's workers are behind its stream.

        Example: ``client.realtime.lag("team", "cart-score")``
        """
        result: dict[str, float] = self.client.request("GET", f"{_realtime(namespace)}/{name}/lag")
        return result

    def dead_letters(self, namespace: str, name: str, limit: int = 100) -> list[DeadLetter]:
        """The triggers that failed every attempt, with their errors: at most ``limit`` (up to
        1,000) of them.

        Example: ``client.realtime.dead_letters("team", "cart-score")``
        """
        items = self.client.request(
            "GET", f"{_realtime(namespace)}/{name}/dead-letters", params={"limit": limit}
        )
        return [DeadLetter.model_validate(d) for d in items]

    def retry_dead_letters(self, namespace: str, name: str) -> int:
        """Queue the dead letters again; returns how many.

        Example: ``client.realtime.retry_dead_letters("team", "cart-score")``
        """
        path = f"{_realtime(namespace)}/{name}/dead-letters/retry"
        return int(self.client.request("POST", path)["retried"])

    # predictions (through the gateway) ----------------------------------------------------------
    def prediction(
        self, namespace: str, deployment: str, entity: str, *, shadow: bool = False
    ) -> Prediction:
        """The latest prediction of ``entity`` (through the gateway); `NotFound` before the first.
        ``shadow``: the one the shadow revision wrote aside (`NotFound` without a shadow).

        Example: ``client.realtime.prediction("team", "cart-score", "u42").value``
        """
        path = f"/{namespace}/predictions/{deployment}/{entity}"
        return Prediction.model_validate(self._get(path, _revision(shadow)))

    def predictions(
        self, namespace: str, deployment: str, entities: list[str]
    ) -> dict[str, Prediction]:
        """The latest predictions of several entities, by entity.

        Example: ``client.realtime.predictions("team", "cart-score", ["u42", "u43"])``
        """
        body = self._get(f"/{namespace}/predictions/{deployment}", {"entity": entities})
        return {e: Prediction.model_validate(p) for e, p in body["predictions"].items()}

    def prediction_history(
        self, namespace: str, deployment: str, entity: str, limit: int = 100, shadow: bool = False
    ) -> list[Prediction]:
        """An entity's predictions, newest first (``shadow``: the shadow revision's).

        Example: ``client.realtime.prediction_history("team", "cart-score", "u42", limit=5)``
        """
        path = f"/{namespace}/predictions/{deployment}/{entity}/history"
        body = self._get(path, {"limit": limit, **(_revision(shadow) or {})})
        return [Prediction.model_validate(p) for p in body["predictions"]]

    def _get(self, path: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        try:
            answer = self.http.get(path, params=params)
        except httpx.TransportError as exc:
            raise ServerUnreachable(f"cannot reach the gateway at {self.gateway} ({exc})") from exc
        if not answer.is_success:
            raise error_from_body(answer.status_code, _json(answer))
        result: dict[str, Any] = answer.json()
        return result

    def close(self) -> None:
        """Close the connections to the gateway (``Client.close`` does it too).

        Example: ``client.realtime.close()``
        """
        self.http.close()


def _streams(namespace: str) -> str:
    return f"/namespaces/{check_name(namespace, 'namespace')}/streams"


def _realtime(namespace: str) -> str:
    return f"/namespaces/{check_name(namespace, 'namespace')}/realtime"


__all__ = ["Overloaded", "RealtimeClient", "Stream"]


def _revision(shadow: bool) -> dict[str, Any] | None:
    return {"revision": "shadow"} if shadow else None
