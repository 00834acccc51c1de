"""Pipelines and runs: register specs, start, watch, cancel and retry runs, stream their logs."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import PlainTextResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from modelyard.api.deps import Caller, Plane
from modelyard.controlplane import ControlPlane
from modelyard.errors import InvalidInput
from modelyard.pipelines.kfp import to_kfp_yaml
from modelyard.pipelines.records import PipelineInfo, RunInfo, ScheduleInfo, ScheduleSpec
from modelyard.pipelines.spec import PipelineSpec
from modelyard.pipelines.states import FINISHED
from modelyard.types import Role

router = APIRouter(prefix="/namespaces/{namespace}", tags=["pipelines"])
LOG_POLL_SECONDS = 0.25


class RunRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    params: dict[str, Any] = Field(default_factory=dict)


class PipelineDetail(BaseModel):
    pipeline: PipelineInfo
    spec: PipelineSpec


@router.post("/pipelines", status_code=201)
def register(namespace: str, spec: PipelineSpec, plane: Plane, caller: Caller) -> PipelineInfo:
    """Store a compiled spec (``modelyard pipelines register`` compiles it); same content, same
    version."""
    caller.require(namespace, Role.EDITOR)
    return plane.pipelines.register(namespace, spec, actor=caller.key_id)


@router.get("/pipelines")
def list_pipelines(namespace: str, plane: Plane, caller: Caller) -> list[PipelineInfo]:
    caller.require(namespace, Role.VIEWER)
    return plane.pipelines.list_pipelines(namespace)


@router.get("/pipelines/{name}")
def get_pipeline(namespace: str, name: str, plane: Plane, caller: Caller) -> PipelineDetail:
    caller.require(namespace, Role.VIEWER)
    info = plane.pipelines.get(namespace, name)
    return PipelineDetail(pipeline=info, spec=plane.pipelines.spec(namespace, name)[1])


@router.get("/pipelines/{name}/export", response_class=PlainTextResponse)
def export(
    namespace: str,
    name: str,
    plane: Plane,
    caller: Caller,
    format: Annotated[str, Query(description="kfp: Kubeflow Pipelines v2 IR YAML")] = "kfp",
) -> PlainTextResponse:
    caller.require(namespace, Role.VIEWER)
    if format != "kfp":
        raise InvalidInput(f"unknown export format {format!r}: use 'kfp'")
    return PlainTextResponse(
        to_kfp_yaml(plane.pipelines.spec(namespace, name)[1]), media_type="application/yaml"
    )


@router.post("/pipelines/{name}/runs", status_code=201)
def start_run(namespace: str, name: str, body: RunRequest, plane: Plane, caller: Caller) -> RunInfo:
    caller.require(namespace, Role.EDITOR)
    run_id = plane.pipelines.create_run(namespace, name, body.params, actor=caller.key_id)
    plane.executor.wake()
    return plane.pipelines.get_run(namespace, run_id)


@router.get("/runs")
def list_runs(
    namespace: str,
    plane: Plane,
    caller: Caller,
    pipeline: str | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[RunInfo]:
    caller.require(namespace, Role.VIEWER)
    return plane.pipelines.list_runs(namespace, pipeline, limit)


@router.get("/runs/{run_id}")
def get_run(namespace: str, run_id: str, plane: Plane, caller: Caller) -> RunInfo:
    """The run with every step attempt (state, reason, cache hits, outputs) and its history.
    Every ``run_id`` here may be a unique prefix of the id (4 characters or more)."""
    caller.require(namespace, Role.VIEWER)
    return plane.pipelines.get_run(namespace, plane.pipelines.resolve_run(namespace, run_id))


@router.post("/runs/{run_id}/cancel")
def cancel_run(namespace: str, run_id: str, plane: Plane, caller: Caller) -> RunInfo:
    """SIGTERM to running steps, SIGKILL after the grace period; pending steps never start."""
    caller.require(namespace, Role.EDITOR)
    run = plane.pipelines.get_run(namespace, plane.pipelines.resolve_run(namespace, run_id))
    if run.state not in FINISHED:
        plane.executor.cancel(run.id)
    return run


@router.post("/runs/{run_id}/retry")
def retry_run(namespace: str, run_id: str, plane: Plane, caller: Caller) -> RunInfo:
    """Run the failed and cancelled steps of a finished run again; successful ones are kept."""
    caller.require(namespace, Role.EDITOR)
    run_id = plane.pipelines.resolve_run(namespace, run_id)
    plane.pipelines.check_retryable(namespace, run_id)
    plane.executor.retry(run_id)
    return plane.pipelines.get_run(namespace, run_id)


@router.get(
    "/runs/{run_id}/logs",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/plain": {}}}},
)
async def run_logs(
    namespace: str,
    run_id: str,
    plane: Plane,
    caller: Caller,
    step: str | None = None,
    follow: bool = False,
) -> StreamingResponse:
    """Every step's output, each line prefixed with ``[step]``; ``follow`` streams until the
    run ends."""
    caller.require(namespace, Role.VIEWER)
    run_id = await run_in_threadpool(plane.pipelines.resolve_run, namespace, run_id)
    return StreamingResponse(
        _tail(plane, namespace, run_id, step, follow), media_type="text/plain; charset=utf-8"
    )


async def _tail(
    plane: ControlPlane, namespace: str, run_id: str, step: str | None, follow: bool
) -> AsyncIterator[bytes]:
    folder = plane.executor.home / run_id
    offsets: dict[Path, int] = {}
    partial: dict[Path, bytes] = {}
    while True:
        finished = (
            await run_in_threadpool(plane.pipelines.get_run, namespace, run_id)
        ).state in FINISHED
        files = sorted(folder.glob("*.log")) if folder.is_dir() else []
        for path in files:
            node = path.name[:-4]
            if step is not None and node != step and not node.startswith(f"{step}["):
                continue
            with open(path, "rb") as handle:
                handle.seek(offsets.get(path, 0))
                data = partial.pop(path, b"") + handle.read()
                offsets[path] = handle.tell()
            *lines, rest = data.split(b"\n")
            if rest:
                partial[path] = rest
            for line in lines:
                yield f"[{node}] ".encode() + line + b"\n"
        if not follow or finished:
            for path, rest in partial.items():
                yield f"[{path.name[:-4]}] ".encode() + rest + b"\n"
            return
        await asyncio.sleep(LOG_POLL_SECONDS)


@router.post("/schedules", status_code=201, tags=["schedules"])
def create_schedule(
    namespace: str, spec: ScheduleSpec, plane: Plane, caller: Caller
) -> ScheduleInfo:
    """A cron or interval schedule, or a trigger on new dataset/model versions."""
    caller.require(namespace, Role.EDITOR)
    return plane.schedules.create(namespace, spec, actor=caller.key_id)


@router.get("/schedules", tags=["schedules"])
def list_schedules(namespace: str, plane: Plane, caller: Caller) -> list[ScheduleInfo]:
    caller.require(namespace, Role.VIEWER)
    return plane.schedules.list(namespace)


@router.post("/schedules/{name}/pause", tags=["schedules"])
def pause_schedule(namespace: str, name: str, plane: Plane, caller: Caller) -> ScheduleInfo:
    caller.require(namespace, Role.EDITOR)
    return plane.schedules.set_paused(namespace, name, True, actor=caller.key_id)


@router.post("/schedules/{name}/resume", tags=["schedules"])
def resume_schedule(namespace: str, name: str, plane: Plane, caller: Caller) -> ScheduleInfo:
    caller.require(namespace, Role.EDITOR)
    return plane.schedules.set_paused(namespace, name, False, actor=caller.key_id)


@router.delete("/schedules/{name}", status_code=204, tags=["schedules"])
def delete_schedule(namespace: str, name: str, plane: Plane, caller: Caller) -> None:
    caller.require(namespace, Role.EDITOR)
    plane.schedules.delete(namespace, name, actor=caller.key_id)
