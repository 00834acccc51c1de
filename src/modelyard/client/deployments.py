"""Deployments: their revisions, traffic, strategy and rollouts, history and logs."""

from __future__ import annotations

import datetime as dt
import re
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from modelyard.client.base import ClientBase
from modelyard.errors import DeploymentFailed

if TYPE_CHECKING:
    from modelyard.delivery.records import RolloutInfo
    from modelyard.events.records import Event
    from modelyard.serving.logs import LogLine
    from modelyard.serving.records import DeploymentInfo

# "ValueError: ...", "modelyard.errors.InvalidInput: ...": the line a Python traceback ends with
# (a dotted CapWords name at the start of a line, not a log level like "INFO:").
_ERROR_LINE = re.compile(r"^(?:[A-Za-z_]\w*\.)*[A-Z]\w*[a-z]\w*(?:: .*)?$")


def status_line(status: str) -> str:
    """A deployment's status on one line: a failure reason that holds a replica's last log lines
    (a traceback) keeps its first line and the error line the traceback ends with."""
    head, newline, rest = status.partition("\n")
    if not newline:
        return status
    serving = ""
    if "; still serving " in rest:
        rest, _, serving = rest.rpartition("; still serving ")
    lines = [line.rstrip() for line in rest.splitlines() if line.strip()]
    final = next((line for line in reversed(lines) if _ERROR_LINE.match(line)), None)
    final = final or (lines[-1].strip() if lines else "")
    head = head.removesuffix("; last log lines:").rstrip(" :")
    return f"{head}: {final}" + (f"; still serving {serving}" if serving else "")


class Deployments(ClientBase):
    """Deployments, their traffic and rollouts, history and logs."""

    def create_deployment(
        self, namespace: str, name: str, model: str, **spec: Any
    ) -> DeploymentInfo:
        """Deploy ``model`` (``name@alias|latest|N`` of the namespace) as a Web API; ``spec``
        holds the other DeploymentSpec fields (autoscaling, batching, resources, ...).

        Example: ``client.create_deployment("team", "iris", "iris@production", timeout_s=10)``
        """
        from modelyard.serving.records import DeploymentInfo

        body = {"name": name, "model": model, **spec}
        return DeploymentInfo.model_validate(
            self.request("POST", f"/namespaces/{namespace}/deployments", json=body)
        )

    def list_deployments(self, namespace: str) -> list[DeploymentInfo]:
        """The deployments of a namespace, with their revisions and traffic.

        Example: ``[d.name for d in client.list_deployments("team")]``
        """
        from modelyard.serving.records import DeploymentInfo

        return [
            DeploymentInfo.model_validate(d)
            for d in self.request("GET", f"/namespaces/{namespace}/deployments")
        ]

    def get_deployment(self, namespace: str, name: str) -> DeploymentInfo:
        """One deployment: spec, traffic, revisions, replicas and status.

        Example: ``client.get_deployment("team", "iris").ready``
        """
        from modelyard.serving.records import DeploymentInfo

        return DeploymentInfo.model_validate(
            self.request("GET", f"/namespaces/{namespace}/deployments/{name}")
        )

    def update_deployment(self, namespace: str, name: str, **changes: Any) -> DeploymentInfo:
        """Change some fields of the spec (``DeploymentSpec``); a new revision when the model or the
        spec changed.

        Example: ``client.update_deployment("team", "iris", timeout_s=10)``
        """
        from modelyard.serving.records import DeploymentInfo

        return DeploymentInfo.model_validate(
            self.request("PATCH", f"/namespaces/{namespace}/deployments/{name}", json=changes)
        )

    def set_traffic(
        self,
        namespace: str,
        name: str,
        targets: list[dict[str, Any]],
        *,
        sticky_header: str | None = None,
        shadow: dict[str, int] | None = None,
    ) -> DeploymentInfo:
        """Split traffic by percent over ready revisions (``targets``: revision, percent, tag);
        ``sticky_header`` keeps one value of that header on one revision; ``shadow``
        ({"revision", "percent"}) copies a share of requests to a revision to compare.

        Example: ``client.set_traffic("team", "iris", [{"revision": 2, "percent": 100}])``
        """
        from modelyard.serving.records import DeploymentInfo

        body: dict[str, Any] = {"targets": targets}
        if sticky_header is not None:
            body["sticky_header"] = sticky_header
        if shadow is not None:
            body["shadow"] = shadow
        path = f"/namespaces/{namespace}/deployments/{name}/traffic"
        return DeploymentInfo.model_validate(self.request("PUT", path, json=body))

    def set_strategy(self, namespace: str, name: str, **strategy: Any) -> DeploymentInfo:
        """``strategy="canary"``, ``steps=[10, 50, 100]``, ``min_step_seconds``,
        ``max_step_seconds``, ``analysis={...}``; or ``strategy="replace"``.

        Example: ``client.set_strategy("team", "iris", strategy="canary", steps=[10, 50, 100])``
        """
        from modelyard.serving.records import DeploymentInfo

        path = f"/namespaces/{namespace}/deployments/{name}/strategy"
        return DeploymentInfo.model_validate(self.request("PUT", path, json=strategy))

    def start_rollout(self, namespace: str, name: str, revision: int) -> RolloutInfo:
        """Roll ``revision`` out with the deployment's canary steps, from the revision serving now.

        Example: ``client.start_rollout("team", "iris", 2)``
        """
        from modelyard.delivery.records import RolloutInfo

        path = f"/namespaces/{namespace}/deployments/{name}/rollouts"
        return RolloutInfo.model_validate(self.request("POST", path, json={"revision": revision}))

    def rollout_action(self, namespace: str, name: str, action: str) -> RolloutInfo:
        """``action``: promote, rollback, pause or resume the rollout under way.

        Example: ``client.rollout_action("team", "iris", "promote")``
        """
        from modelyard.delivery.records import RolloutInfo

        path = f"/namespaces/{namespace}/deployments/{name}/rollouts/{action}"
        return RolloutInfo.model_validate(self.request("POST", path))

    def rollouts(self, namespace: str, name: str, limit: int = 20) -> list[RolloutInfo]:
        """The deployment's rollouts, newest first, with each step's analysis.

        Example: ``client.rollouts("team", "iris", limit=5)``
        """
        from modelyard.delivery.records import RolloutInfo

        path = f"/namespaces/{namespace}/deployments/{name}/rollouts"
        return [
            RolloutInfo.model_validate(r)
            for r in self.request("GET", path, params={"limit": limit})
        ]

    def deployment_history(self, namespace: str, name: str, limit: int = 100) -> list[Event]:
        """The deployment's events (revisions, traffic, rollouts), newest first.

        Example: ``[e.type for e in client.deployment_history("team", "iris")]``
        """
        from modelyard.events.records import Event

        path = f"/namespaces/{namespace}/deployments/{name}/history"
        return [Event.model_validate(e) for e in self.request("GET", path, params={"limit": limit})]

    def deployment_logs(
        self,
        namespace: str,
        name: str,
        *,
        revision: int | None = None,
        replica: str | None = None,
        since: str | dt.datetime | None = None,
        tail: int | None = None,
        follow: bool = False,
    ) -> Iterator[LogLine]:
        """What the deployment's replicas logged (of one ``revision`` or ``replica``), each line
        with its time and replica, merged in time order: since ``since`` (``10m``, ``2h``, an
        ISO time or a datetime), the last ``tail`` lines; with ``follow``, new lines as they
        come, until you stop iterating.

        Example: ``for line in client.deployment_logs("team", "iris", tail=20): print(line.text)``
        """
        from modelyard.serving.logs import LogLine

        params: dict[str, Any] = {"follow": follow}
        if revision is not None:
            params["revision"] = revision
        if replica is not None:
            params["replica"] = replica
        if since is not None:
            params["since"] = since.isoformat() if isinstance(since, dt.datetime) else since
        if tail is not None:
            params["tail"] = tail
        for line in self._lines(f"/namespaces/{namespace}/deployments/{name}/logs", params):
            if line:
                yield LogLine.parse(line)

    def delete_deployment(self, namespace: str, name: str) -> None:
        """Delete a deployment: its replicas stop and its route goes away.

        Example: ``client.delete_deployment("team", "iris")``
        """
        self.request("DELETE", f"/namespaces/{namespace}/deployments/{name}")

    def wait_deployment(
        self,
        namespace: str,
        name: str,
        *,
        version: int | None = None,
        revision: int | None = None,
        timeout: float = 120.0,
    ) -> DeploymentInfo:
        """Wait until the deployment serves (``version`` when given; revision number
        ``revision`` when given) with a ready replica; raise with the deployment's status when
        the latest revision failed (``revision``: failed or was rejected), or time ran out.

        Example: ``client.wait_deployment("team", "iris", version=3, timeout=120)``
        """
        from modelyard.serving.states import ReplicaState, RevisionState

        deadline = time.monotonic() + timeout
        while True:
            info = self.get_deployment(namespace, name)
            if revision is not None:
                target = next((r for r in info.revisions if r.number == revision), None)
                if target is None:
                    raise DeploymentFailed(f"{namespace}/{name} has no revision {revision}")
            else:
                target = info.revisions[-1] if info.revisions else None
            # a revision asked for may also have been rejected (a canary rolled back)
            ended = (
                (RevisionState.FAILED, RevisionState.REJECTED)
                if revision is not None
                else (RevisionState.FAILED,)
            )
            if target is not None and target.state in ended:
                raise DeploymentFailed(
                    f"{namespace}/{name}: {status_line(info.status)}", status=info.status
                )
            serving = [r for r in info.revisions if r.percent > 0]
            if revision is not None:
                serving = [r for r in serving if r.number == revision]
            if (
                info.ready
                and any(p.state == ReplicaState.READY for r in serving for p in r.replicas)
                and (version is None or any(r.model_version == version for r in serving))
            ):
                return info
            if time.monotonic() > deadline:
                raise DeploymentFailed(
                    f"{namespace}/{name} not serving after {timeout:.0f} s: "
                    f"{status_line(info.status)}",
                    status=info.status,
                )
            time.sleep(0.1)
