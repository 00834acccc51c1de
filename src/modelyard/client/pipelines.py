"""Pipelines, runs and schedules."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from modelyard.client.events import Events
from modelyard.errors import ServerUnreachable, error_from_body
from modelyard.types import check_name

if TYPE_CHECKING:
    from modelyard.pipelines.dsl import Pipeline
    from modelyard.pipelines.records import PipelineInfo, RunInfo, ScheduleInfo, ScheduleSpec
    from modelyard.pipelines.spec import PipelineSpec


class Pipelines(Events):
    """Pipelines, runs and schedules; ``wait_run`` is woken by the event stream (`Events`)."""

    def register_pipeline(self, namespace: str, pipeline: Pipeline | PipelineSpec) -> PipelineInfo:
        """Compile (when given a ``@pipeline``) and register; the same content is one version.

        Example: ``client.register_pipeline("team", training)  # a @pipeline function``
        """
        from modelyard.pipelines.dsl import Pipeline
        from modelyard.pipelines.records import PipelineInfo

        spec = pipeline.compile() if isinstance(pipeline, Pipeline) else pipeline
        return PipelineInfo.model_validate(
            self.request(
                "POST",
                f"/namespaces/{check_name(namespace, 'namespace')}/pipelines",
                json=spec.model_dump(mode="json"),
            )
        )

    def list_pipelines(self, namespace: str) -> list[PipelineInfo]:
        """The pipelines registered in a namespace.

        Example: ``[p.name for p in client.list_pipelines("team")]``
        """
        from modelyard.pipelines.records import PipelineInfo

        return [
            PipelineInfo.model_validate(p)
            for p in self.request("GET", f"/namespaces/{namespace}/pipelines")
        ]

    def get_pipeline(self, namespace: str, name: str) -> tuple[PipelineInfo, PipelineSpec]:
        """A pipeline and the spec of its latest version.

        Example: ``info, spec = client.get_pipeline("team", "training")``
        """
        from modelyard.pipelines.records import PipelineInfo
        from modelyard.pipelines.spec import PipelineSpec

        body = self.request("GET", f"/namespaces/{namespace}/pipelines/{name}")
        return (
            PipelineInfo.model_validate(body["pipeline"]),
            PipelineSpec.model_validate(body["spec"]),
        )

    def export_pipeline(self, namespace: str, name: str, format: str = "kfp") -> str:
        """The pipeline in another format: ``kfp`` (a Kubeflow Pipelines v2 spec, YAML).

        Example: ``Path("training.yaml").write_text(client.export_pipeline("team", "training"))``
        """
        response = self.http.get(
            f"/namespaces/{namespace}/pipelines/{name}/export", params={"format": format}
        )
        if not response.is_success:
            raise error_from_body(response.status_code, response.json())
        return response.text

    def run_pipeline(
        self, namespace: str, name: str, params: dict[str, Any] | None = None
    ) -> RunInfo:
        """Start a run of the pipeline's latest version with ``params``; it is queued at once.

        Example: ``run = client.run_pipeline("team", "training", {"lr": 0.05})``
        """
        from modelyard.pipelines.records import RunInfo

        return RunInfo.model_validate(
            self.request(
                "POST",
                f"/namespaces/{namespace}/pipelines/{name}/runs",
                json={"params": params or {}},
            )
        )

    def get_run(self, namespace: str, run_id: str) -> RunInfo:
        """One run with its steps and history; ``run_id`` may be a unique prefix.

        Example: ``client.get_run("team", run.id).state``
        """
        from modelyard.pipelines.records import RunInfo

        return RunInfo.model_validate(self.request("GET", f"/namespaces/{namespace}/runs/{run_id}"))

    def list_runs(self, namespace: str, pipeline: str | None = None) -> list[RunInfo]:
        """The runs of a namespace (of one ``pipeline`` when given), newest first.

        Example: ``client.list_runs("team", pipeline="training")``
        """
        from modelyard.pipelines.records import RunInfo

        params = {"pipeline": pipeline} if pipeline else {}
        return [
            RunInfo.model_validate(r)
            for r in self.request("GET", f"/namespaces/{namespace}/runs", params=params)
        ]

    def cancel_run(self, namespace: str, run_id: str) -> RunInfo:
        """Cancel a queued or running run; its running steps are stopped.

        Example: ``client.cancel_run("team", run.id)``
        """
        from modelyard.pipelines.records import RunInfo

        return RunInfo.model_validate(
            self.request("POST", f"/namespaces/{namespace}/runs/{run_id}/cancel")
        )

    def retry_run(self, namespace: str, run_id: str) -> RunInfo:
        """A new run of a failed or cancelled run that reuses the steps that succeeded.

        Example: ``client.retry_run("team", run.id)``
        """
        from modelyard.pipelines.records import RunInfo

        return RunInfo.model_validate(
            self.request("POST", f"/namespaces/{namespace}/runs/{run_id}/retry")
        )

    def wait_run(self, namespace: str, run_id: str, timeout: float = 600.0) -> RunInfo:
        """Block until the run ends, woken by its events (no polling); returns the final run.

        Example: ``client.wait_run("team", run.id, timeout=300).state``
        """
        from modelyard.pipelines.states import FINISHED, RUN_ENDED

        deadline = time.monotonic() + timeout
        after = int(self.request("GET", "/events/cursor")["last_id"])
        run = self.get_run(namespace, run_id)
        while run.state not in FINISHED:
            if time.monotonic() > deadline:
                raise ServerUnreachable(f"run {run_id} did not finish within {timeout:g} s")
            for event in self.events(
                after=after,
                types=["run.*"],
                follow=True,
                timeout=max(0.1, deadline - time.monotonic()),
            ):
                after = event.id
                if event.data.get("run") == run_id and event.type in RUN_ENDED.values():
                    break
            run = self.get_run(namespace, run_id)
        return run

    def run_logs(
        self, namespace: str, run_id: str, step: str | None = None, follow: bool = False
    ) -> Iterator[str]:
        """The log lines of a run (of one ``step``); with ``follow``, until the run ends.

        Example: ``for line in client.run_logs("team", run.id, follow=True): print(line)``
        """
        params: dict[str, Any] = {"follow": follow}
        if step:
            params["step"] = step
        yield from self._lines(f"/namespaces/{namespace}/runs/{run_id}/logs", params)

    def create_schedule(self, namespace: str, spec: ScheduleSpec) -> ScheduleInfo:
        """Run a pipeline on a cron, an interval or an event (``ScheduleSpec``).

        Example: ``client.create_schedule("team", ScheduleSpec(name="nightly", pipeline="train",
        cron="@daily"))``
        """
        from modelyard.pipelines.records import ScheduleInfo

        return ScheduleInfo.model_validate(
            self.request(
                "POST", f"/namespaces/{namespace}/schedules", json=spec.model_dump(mode="json")
            )
        )

    def list_schedules(self, namespace: str) -> list[ScheduleInfo]:
        """The schedules of a namespace, with their last and next fire.

        Example: ``client.list_schedules("team")``
        """
        from modelyard.pipelines.records import ScheduleInfo

        return [
            ScheduleInfo.model_validate(s)
            for s in self.request("GET", f"/namespaces/{namespace}/schedules")
        ]

    def pause_schedule(self, namespace: str, name: str, paused: bool = True) -> ScheduleInfo:
        """Pause a schedule (``paused=False`` resumes it).

        Example: ``client.pause_schedule("team", "nightly")``
        """
        from modelyard.pipelines.records import ScheduleInfo

        action = "pause" if paused else "resume"
        return ScheduleInfo.model_validate(
            self.request("POST", f"/namespaces/{namespace}/schedules/{name}/{action}")
        )

    def delete_schedule(self, namespace: str, name: str) -> None:
        """Delete a schedule; its runs stay.

        Example: ``client.delete_schedule("team", "nightly")``
        """
        self.request("DELETE", f"/namespaces/{namespace}/schedules/{name}")
