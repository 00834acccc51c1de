"""The Python SDK: ``modelyard.Client`` talks to the control plane over HTTP.

It finds the server from ``MODELYARD_URL`` and the key from ``MODELYARD_API_KEY`` or the
``admin.key`` file a local server wrote, exactly like the CLI. Large files move straight between
the client and the blob store at the locations the API hands out; the API verifies them at commit.

The `Client` is one mixin per area, like the API's modules: ``namespaces`` (health, identity,
namespaces, keys), ``artifacts`` (models and datasets), ``pipelines`` (pipelines, runs,
schedules), ``events`` (the event stream, webhooks), ``deployments`` (traffic, rollouts, logs)
and ``slos``, each on ``base.ClientBase`` (the settings, the connections, ``request``). The
records of pipelines, deployments, SLOs, events and keys load in the methods that return them:
a process that only moves versions (``datasets import-sql``, ``pull``) starts without them.
"""

from __future__ import annotations

import functools
from types import TracebackType
from typing import TYPE_CHECKING

from modelyard.client.artifacts import Artifacts, Progress, hash_file, scan_files
from modelyard.client.deployments import Deployments, status_line
from modelyard.client.events import Events
from modelyard.client.namespaces import Namespaces
from modelyard.client.pipelines import Pipelines
from modelyard.client.slos import Slos

if TYPE_CHECKING:
    from modelyard.realtime.sdk import RealtimeClient, Stream

__all__ = ["Client", "Progress", "hash_file", "scan_files", "status_line"]


class Client(Namespaces, Artifacts, Pipelines, Events, Deployments, Slos):
    """The control plane's API over HTTP: ``Client()`` finds the server and the key in the
    settings, like the CLI. The realtime entry points and ``close`` are here, where the whole
    client is.

    Example: ``with Client() as client: client.push("team/iris", "./iris")``
    """

    @functools.cached_property
    def realtime(self) -> RealtimeClient:
        """Streams, realtime deployments, events and predictions (`modelyard.realtime.sdk`).

        Example: ``client.realtime.prediction("team", "cart-score", "u42")``
        """
        from modelyard.realtime.sdk import RealtimeClient

        return RealtimeClient(self)

    def stream(self, namespace: str, name: str) -> Stream:
        """A stream to send events to, through the gateway (`modelyard.realtime.sdk.Stream`).

        Example: ``client.stream("team", "clicks").send({"user_id": "u42", "type": "view"})``
        """
        return self.realtime.stream(namespace, name)

    def close(self) -> None:
        """Close the HTTP connections (also at the end of a ``with Client() as client:`` block).

        Example: ``client.close()``
        """
        self.http.close()
        if "_plain" in self.__dict__:  # made only if it was used
            self._plain.close()
        if "realtime" in self.__dict__:
            self.realtime.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
