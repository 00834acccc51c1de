"""Charts and the pipeline graph are pure functions: fast checks of what they draw."""

from __future__ import annotations

import datetime as dt
import time

import pytest

from modelyard.ui.charts import RANGES, Marker, Minute, by_revision, charts, percentile
from modelyard.ui.graph import MAX_ROWS, layout

END = dt.datetime(2026, 1, 31, tzinfo=dt.UTC)


def test_percentiles_come_from_the_histogram_bounds() -> None:
    assert percentile([], 0.99) is None
    assert percentile([0, 10], 0.5) == 2.5  # all in the 2.5 ms bucket
    assert percentile([90, 0, 0, 0, 0, 0, 0, 0, 10], 0.99) == 500.0
    assert percentile([90, 0, 0, 0, 0, 0, 0, 0, 10], 0.5) == 1.0


def test_thirty_days_of_minutes_draw_quickly_with_markers_in_range() -> None:
    span = RANGES["30d"]
    minutes = [
        Minute(END - dt.timedelta(minutes=m), 60, m % 7, [50, 9, 1])
        for m in range(1, int(span.total_seconds() // 60))
    ]
    marks = [
        Marker(END - dt.timedelta(days=3), "revision.created revision=2", "revision"),
        Marker(END - dt.timedelta(days=40), "too old", "alert"),
    ]
    started = time.perf_counter()
    drawn = charts(minutes, marks, END, span)
    assert time.perf_counter() - started < 0.5
    qps, errors, latency = drawn
    assert abs(qps.peak - 1.0) < 1e-9  # 60 a minute
    assert len(qps.series[0].points.split()) <= 240
    assert [label for _, label, _ in qps.markers] == ["revision.created revision=2"]
    assert [s.name for s in latency.series] == ["p50", "p95", "p99"]
    assert errors.peak > 0


def test_a_range_without_traffic_draws_zero_rates_and_no_latency() -> None:
    qps, errors, latency = charts([], [], END, RANGES["5m"])
    assert qps.peak == errors.peak == 0 and qps.series[0].last == 0
    assert all(s.points == "" and s.last is None for s in latency.series)


def test_a_wide_fan_out_is_collapsed_and_edges_follow_the_dependencies() -> None:
    nodes = ["split", *[f"shard-{i}" for i in range(200)], "merge"]
    edges = [("split", f"shard-{i}") for i in range(200)]
    edges += [(f"shard-{i}", "merge") for i in range(200)]
    states = {"split": "succeeded", "shard-150": "failed", "merge": "pending"}
    graph = layout(nodes, edges, states)
    assert len(graph.nodes) == 1 + MAX_ROWS + 1 + 1
    collapsed = next(n for n in graph.nodes if n.hidden)
    assert collapsed.hidden == 200 - MAX_ROWS and collapsed.state == "failed"
    assert len(graph.edges) == 2 * (MAX_ROWS + 1)  # edges into one collapsed node drawn once
    assert graph.width < 1000 and graph.height < 1000
    xs = {n.id: n.x for n in graph.nodes}
    assert xs["split"] < xs["shard-0"] < xs["merge"]


def test_each_revision_has_its_own_series_from_the_gateways_reports() -> None:
    span = RANGES["5m"]
    stable = [(END - dt.timedelta(seconds=s), 10, 0, [5.0]) for s in range(1, 300)]
    canary = [(END - dt.timedelta(seconds=s), 1, 1, [50.0, 70.0]) for s in range(1, 60)]
    qps, errors, p99 = by_revision({"r1": stable, "r2": canary}, [], END, span)
    assert [s.name for s in qps.series] == ["r1", "r2"]
    assert qps.series[0].last == pytest.approx(10.0, abs=1e-9)
    assert qps.series[1].last == pytest.approx(1.0, abs=1e-9)
    assert errors.series[0].last == 0 and errors.series[1].last == 1.0
    assert p99.series[0].last == 5.0 and p99.series[1].last == 70.0
