"""The dashboard's screens: each reads what the API would answer this key, with the same role
checks (`Principal.require`), and renders it server-side."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from modelyard.controlplane import ControlPlane
from modelyard.errors import NotFound
from modelyard.pipelines.records import RunInfo
from modelyard.serving.records import DeploymentInfo
from modelyard.types import Role
from modelyard.ui import charts, measured, realtime
from modelyard.ui.graph import layout, summary
from modelyard.ui.web import PREFIX, UiRoute, Viewer, plane_of, render, viewer

router = APIRouter(route_class=UiRoute, include_in_schema=False)
Signed = Annotated[Viewer, Depends(viewer)]
RECENT = 20


def _readable(who: Viewer, namespace: str) -> None:
    who.principal.require(namespace, Role.VIEWER)


@router.get("")
async def home(request: Request, who: Signed) -> Response:
    plane = plane_of(request)
    found = await run_in_threadpool(plane.namespaces.list, who.namespaces)
    return render(request, "home.html", namespaces=found)


@router.get("/ns/{namespace}")
async def overview(request: Request, namespace: str, who: Signed) -> HTMLResponse:
    _readable(who, namespace)
    plane = plane_of(request)
    context = await run_in_threadpool(_overview, plane, namespace, who)
    return render(request, "overview.html", namespace=namespace, **context)


def _overview(plane: ControlPlane, namespace: str, who: Viewer) -> dict[str, Any]:
    plane.namespaces.get(namespace)
    rows = []
    for info in plane.deployments.list_deployments(namespace):
        rows.append(
            {
                "info": info,
                "live": measured.deployment_rates(plane, info),
                "slo": _slo_state(plane, info),
            }
        )
    runs = plane.pipelines.list_runs(namespace, limit=RECENT)
    models = plane.versions.list_artifacts("model", namespace)
    start = plane.events.before_last(RECENT, (), [namespace])
    events = plane.events.scan(start, 500, (), [namespace])[0][-RECENT:]
    return {"deployments": rows, "runs": runs, "models": models, "events": events[::-1]}


def _slo_state(plane: ControlPlane, info: DeploymentInfo) -> dict[str, Any]:
    status = plane.slos.status(info.namespace, info.name)
    if not status.objectives:
        return {"state": "none", "budget": None}
    firing = any(o.alerts for o in status.objectives)
    budget = min(o.budget_remaining for o in status.objectives)
    state = "firing" if firing else "exhausted" if budget < 0 else "ok"
    return {"state": state, "budget": budget}


@router.get("/ns/{namespace}/deployments/{name}")
async def deployment(
    request: Request, namespace: str, name: str, who: Signed, range: str = charts.DEFAULT_RANGE
) -> HTMLResponse:
    _readable(who, namespace)
    if range not in charts.RANGES:
        range = charts.DEFAULT_RANGE
    plane = plane_of(request)
    context = await run_in_threadpool(_deployment, plane, namespace, name, range)
    return render(request, "deployment.html", namespace=namespace, range=range, **context)


def _deployment(plane: ControlPlane, namespace: str, name: str, span: str) -> dict[str, Any]:
    info = plane.serving.describe(plane.deployments.get(namespace, name))
    end = plane.events.clock()
    start = end - charts.RANGES[span]
    marks = measured.markers(plane, namespace, name)
    drawn = charts.charts(
        measured.minutes(plane, namespace, name, start, charts.step_of(charts.RANGES[span])),
        marks,
        end,
        charts.RANGES[span],
    )
    per_revision = []
    if charts.RANGES[span] <= charts.RANGES["1h"]:  # the gateway's reports kept in memory
        per_revision = charts.by_revision(
            measured.revision_reports(plane, info, start),
            marks,
            end,
            charts.RANGES[span],
        )
    return {
        "info": info,
        "live": measured.deployment_rates(plane, info),
        "charts": drawn,
        "per_revision": per_revision,
        "ranges": list(charts.RANGES),
        "rollouts": plane.rollouts.history(namespace, name, 20),
        "slo": plane.slos.status(namespace, name),
        "alerts": plane.slos.alerts(namespace, name, 20),
        "events": plane.events.history(namespace, f"{namespace}/{name}", 30)[::-1],
    }


@router.get("/ns/{namespace}/runs")
async def runs(
    request: Request, namespace: str, who: Signed, pipeline: str = "", state: str = ""
) -> HTMLResponse:
    _readable(who, namespace)
    plane = plane_of(request)
    found = await run_in_threadpool(plane.pipelines.list_runs, namespace, pipeline or None, 200)
    names = await run_in_threadpool(plane.pipelines.list_pipelines, namespace)
    shown = [r for r in found if not state or r.state == state]
    return render(
        request,
        "runs.html",
        namespace=namespace,
        runs=shown,
        pipelines=[p.name for p in names],
        pipeline=pipeline,
        state=state,
        states=sorted({r.state for r in found} | {state} - {""}),
    )


@router.get("/ns/{namespace}/runs/{run_id}")
async def run(request: Request, namespace: str, run_id: str, who: Signed) -> HTMLResponse:
    _readable(who, namespace)
    plane = plane_of(request)
    context = await run_in_threadpool(_run, plane, namespace, run_id)
    return render(request, "run.html", namespace=namespace, **context)


def _run(plane: ControlPlane, namespace: str, run_id: str) -> dict[str, Any]:
    info: RunInfo = plane.pipelines.get_run(namespace, run_id)
    try:
        spec = plane.pipelines.spec(namespace, info.pipeline, info.digest)[1]
        nodes = [t.id for t in spec.tasks]
        edges = sorted(
            {(dep, t.id) for t in spec.tasks for dep in t.after}
            | {(i.task, t.id) for t in spec.tasks for i in t.inputs.values() if i.task}
        )
    except NotFound:  # the pipeline was deleted: draw the steps that ran, unlinked
        nodes, edges = list(dict.fromkeys(s.node for s in info.steps)), []
    latest = {s.node: s for s in info.steps}  # steps are listed by attempt: keep the last
    attempts: dict[str, int] = {}
    by_task: dict[str, list[str]] = {}
    for s in info.steps:
        attempts[s.node] = max(attempts.get(s.node, 0), s.attempt)
    for step in latest.values():  # a loop's iterations are nodes of one task
        by_task.setdefault(step.task, []).append(step.state)
    return {
        "run": info,
        "graph": layout(nodes, edges, {task: summary(st) for task, st in by_task.items()}),
        "latest": latest,
        "attempts": attempts,
        "events": plane.events.history(namespace, f"{namespace}/runs/{run_id}", 200),
    }


@router.get("/ns/{namespace}/models/{name}")
async def model(request: Request, namespace: str, name: str, who: Signed) -> HTMLResponse:
    _readable(who, namespace)
    plane = plane_of(request)
    context = await run_in_threadpool(_model, plane, namespace, name)
    return render(request, "model.html", namespace=namespace, name=name, **context)


def _model(plane: ControlPlane, namespace: str, name: str) -> dict[str, Any]:
    versions = plane.versions.list_versions("model", namespace, name)
    history = plane.aliases.history("model", namespace, name)
    served = [
        (d.name, r.number, r.model_version)
        for d in plane.deployments.list_deployments(namespace)
        if d.model.split("@")[0] == name
        for r in d.revisions
        if r.percent > 0
    ]
    return {"versions": versions[::-1], "history": history, "served": served}


@router.get("/ns/{namespace}/events")
async def events(request: Request, namespace: str, who: Signed, type: str = "") -> HTMLResponse:
    _readable(who, namespace)
    plane = plane_of(request)
    types = [t for t in type.split(",") if t]
    start = await run_in_threadpool(plane.events.before_last, 100, types, [namespace])
    found = (await run_in_threadpool(plane.events.scan, start, 1000, types, [namespace]))[0]
    return render(request, "events.html", namespace=namespace, events=found[::-1][:100], type=type)


@router.get("/ns/{namespace}/realtime")
async def realtime_screen(request: Request, namespace: str, who: Signed) -> HTMLResponse:
    _readable(who, namespace)
    plane = plane_of(request)
    context = await run_in_threadpool(_realtime, plane, namespace)
    return render(request, "realtime.html", namespace=namespace, **context)


def _realtime(plane: ControlPlane, namespace: str) -> dict[str, Any]:
    plane.namespaces.get(namespace)
    found = realtime.figures(plane, namespace)
    return {"figures": found, "values": realtime.values(found)}


@router.get("/")
@router.get("/ns")
async def to_home() -> Response:
    return RedirectResponse(PREFIX, status_code=303)
