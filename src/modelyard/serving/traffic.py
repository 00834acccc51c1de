"""Which revisions a deployment's traffic reaches: pure functions over its stored rows, shared by
the deployments service (`modelyard.serving.deployments`) and the rollouts."""

from __future__ import annotations

from modelyard.errors import InvalidInput
from modelyard.serving.records import Traffic, TrafficTarget
from modelyard.serving.states import RevisionState
from modelyard.store.schema import DeploymentRow, RevisionRow


def resolve_traffic(
    targets: list[TrafficTarget], revisions: list[RevisionRow]
) -> dict[int, tuple[int, list[str]]]:
    """Revision number -> (percent, tags). A "latest ready" target with no ready revision routes
    nowhere (requests get 503 with the deployment's status)."""
    served = (RevisionState.READY, RevisionState.RETIRED, RevisionState.REJECTED)
    ready = [r.number for r in revisions if r.state in served and r.ready_at]
    latest_ready = max(
        (r.number for r in revisions if r.state == RevisionState.READY), default=None
    )
    routes: dict[int, tuple[int, list[str]]] = {}
    for target in targets:
        number = target.revision if target.revision is not None else latest_ready
        if number is None or (target.revision is not None and number not in ready):
            continue
        percent, tags = routes.get(number, (0, []))
        routes[number] = (percent + target.percent, tags + ([target.tag] if target.tag else []))
    return routes


def was_ready(
    revisions: dict[int, RevisionRow], number: int, deployment: str, field: str
) -> RevisionRow:
    """Revision ``number``, which must have been ready once to take traffic."""
    found = revisions.get(number)
    if found is None or found.ready_at is None:
        raise InvalidInput(
            f"revision {number} of {deployment} "
            + ("does not exist" if found is None else "was never ready")
            + ": use a revision listed as ready by "
            f"'modelyard deployments show {deployment}'",
            field=field,
        )
    return found


def stored_traffic(row: DeploymentRow) -> Traffic:
    # Deployments made before sticky and shadow traffic stored the bare list of targets.
    data = row.traffic
    return Traffic.model_validate({"targets": data} if isinstance(data, list) else data)
