"""A deployment's SLOs: objectives, their status, alerts and Prometheus rules."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from modelyard.client.base import ClientBase
from modelyard.errors import error_from_body

if TYPE_CHECKING:
    from modelyard.delivery.burnrate import Objective
    from modelyard.delivery.records import AlertInfo, SloStatus


class Slos(ClientBase):
    """A deployment's objectives, their status and alerts."""

    def set_slos(
        self, namespace: str, name: str, objectives: Sequence[Objective | Mapping[str, Any]]
    ) -> list[Objective]:
        """Replace the deployment's objectives, e.g. ``[{"name": "availability", "kind":
        "availability", "target": 0.999}]``; ``[]`` removes them.

        Example: ``client.set_slos("team", "iris", objectives)``
        """
        from modelyard.delivery.burnrate import Objective

        body = {
            "objectives": [
                o.model_dump(exclude_none=True) if isinstance(o, Objective) else dict(o)
                for o in objectives
            ]
        }
        path = f"/namespaces/{namespace}/deployments/{name}/slos"
        answer = self.request("PUT", path, json=body)
        return [Objective.model_validate(o) for o in answer["objectives"]]

    def get_slos(self, namespace: str, name: str) -> list[Objective]:
        """The deployment's objectives.

        Example: ``[o.name for o in client.get_slos("team", "iris")]``
        """
        from modelyard.delivery.burnrate import Objective

        path = f"/namespaces/{namespace}/deployments/{name}/slos"
        return [Objective.model_validate(o) for o in self.request("GET", path)["objectives"]]

    def slo_status(self, namespace: str, name: str) -> SloStatus:
        """Per objective: SLI, error budget, burn rates over the alert windows, firing alerts.

        Example: ``client.slo_status("team", "iris").objectives[0].budget_remaining``
        """
        from modelyard.delivery.records import SloStatus

        path = f"/namespaces/{namespace}/deployments/{name}/slos/status"
        return SloStatus.model_validate(self.request("GET", path))

    def slo_alerts(self, namespace: str, name: str, limit: int = 50) -> list[AlertInfo]:
        """The deployment's latest alerts, firing or resolved, newest first.

        Example: ``client.slo_alerts("team", "iris", limit=10)``
        """
        from modelyard.delivery.records import AlertInfo

        path = f"/namespaces/{namespace}/deployments/{name}/slos/alerts"
        found = self.request("GET", path, params={"limit": limit})
        return [AlertInfo.model_validate(a) for a in found]

    def slo_rules(self, namespace: str, name: str) -> str:
        """The objectives as a Prometheus rule file (YAML).

        Example: ``Path("iris-rules.yaml").write_text(client.slo_rules("team", "iris"))``
        """
        response = self.http.get(f"/namespaces/{namespace}/deployments/{name}/slos/rules")
        if not response.is_success:
            raise error_from_body(response.status_code, response.json())
        return response.text
