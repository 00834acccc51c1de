"""The rollout benchmark's report: each scenario's table, verdict lines and summary line.

Part of ``bench/rollout.py``, which describes the method."""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Sequence
from typing import Any

from _harness import (
    verdict,
)
from rollout_load import FIRST_STEP, PROMOTED, CanaryRun, Load, ReplaceRun, Scenario, Window


def step_text(analysis: dict[str, Any]) -> str:
    """One recorded analysis: its step, verdict and what it saw (the judged latency, and the
    end-to-end one beside it when the judge compared service times)."""
    evidence = analysis.get("evidence", {})
    latency = evidence.get("latency", {})
    errors = evidence.get("error_rate", {})
    seen = ""
    if latency:
        measure = latency.get("measure", "end_to_end").replace("_", "-")
        seen += (
            f", median {measure} time canary {latency['canary_median_ms']:.1f} ms vs stable "
            f"{latency['stable_median_ms']:.1f} ms (p={latency['p_value']:.2g})"
        )
        end_to_end = latency.get("end_to_end")
        if end_to_end:
            seen += (
                f", end to end {end_to_end['canary_median_ms']:.1f} ms vs "
                f"{end_to_end['stable_median_ms']:.1f} ms"
            )
    if errors:
        seen += f", error rate canary {errors['canary']:.2%} vs stable {errors['stable']:.2%}"
    return (
        f"step {analysis.get('step', 0) + 1} ({analysis.get('percent')}%) "
        f"{analysis.get('result')} after {analysis.get('seconds', 0):.1f} s{seen}"
    )


def client_errors(load: Load) -> str:
    if not load.failures:
        return ""
    return "; client-side failures: " + ", ".join(f"{k} x{v}" for k, v in load.failures.items())


# report ------------------------------------------------------------------------------------------
def median(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def fmt(value: float | None, spec: str = ".2f", unit: str = "") -> str:
    return "-" if value is None else f"{value:{spec}}{unit}"


def ratio(replace: ReplaceRun, canary: CanaryRun) -> float | None:
    if replace.window is None or canary.window is None:
        return None
    if canary.window.failed == 0:
        return None if replace.window.failed == 0 else float("inf")
    return replace.window.failed / canary.window.failed


def window_cells(w: Window | None) -> str:
    if w is None:
        return f"{'-':>8s} {'-':>8s} {'-':>6s} {'-':>7s} {'-':>7s} {'-':>7s}"
    return (
        f"{w.seconds:8.2f} {w.requests:8d} {w.failed:6d} {w.share * 100:6.2f}% "
        f"{w.p50_ms:7.2f} {w.p99_ms:7.2f}"
    )


def median_cells(windows: Sequence[Window]) -> str:
    if not windows:
        return window_cells(None)
    return (
        f"{statistics.median(w.seconds for w in windows):8.2f} "
        f"{statistics.median(w.requests for w in windows):8.0f} "
        f"{statistics.median(w.failed for w in windows):6.0f} "
        f"{statistics.median(w.share for w in windows) * 100:6.2f}% "
        f"{statistics.median(w.p50_ms for w in windows):7.2f} "
        f"{statistics.median(w.p99_ms for w in windows):7.2f}"
    )


def revisions_text(w: Window | None) -> str:
    if w is None:
        return "-"
    per = ", ".join(f"{n} {c[0]} req {c[1]} failed" for n, c in w.by_revision.items())
    return f"{per}; statuses {w.statuses}"


def warmup_text(w: Window | None) -> str:
    if w is None:
        return "before the push: -"
    return (
        f"before the push: {w.requests} requests in {w.seconds:.1f} s, {w.failed} failed, "
        f"p50 {w.p50_ms:.2f} ms, p99 {w.p99_ms:.2f} ms"
    )


def outcome_text(run: CanaryRun) -> str:
    """The outcome and the step it came at."""
    if run.outcome == "promoted":
        return f"promoted after step {run.step + 1} ({run.weight}%)"
    if run.outcome == "rolled_back":
        return f"rolled_back at step {run.step + 1} ({run.weight}%)"
    return run.outcome


def verdict_lines(scenario: Scenario, first_percent: int) -> list[str]:
    """One line per goal of the scenario: how many runs met it, and PASS or MISS."""
    canary = scenario.canary
    runs = len(canary)

    def line(text: str, count: int, goal: str = "goal all") -> str:
        return f"  {text}: {count} of {runs} runs   {goal}  {verdict(count == runs)}"

    met = sum(scenario.met(r) for r in canary)
    if scenario.goal == PROMOTED:
        rolled_back = sum(r.outcome == "rolled_back" for r in canary)
        return [
            line("promoted, never rolled back", met, "goal all (no false rollbacks)"),
            f"  rolled back: {rolled_back} of {runs} runs (false rollbacks)",
        ]
    if scenario.goal == FIRST_STEP:
        return [line(f"rolled back at the first step ({first_percent}%)", met)]
    within = sum(
        1
        for r in canary
        if r.window is not None
        and r.window.failed <= r.weight / 100 * scenario.error_rate * r.window.requests
    )
    return [
        line("rolled back by itself", met),
        line("failed share <= canary weight x error rate", within),
    ]


def print_scenario(scenario: Scenario, args: argparse.Namespace) -> None:
    canary, replace = scenario.canary, scenario.replace
    print(f"\n[{scenario.label}] {scenario.title}")
    times = f"{'run':>4s} {'push':>6s} {'commit->canary':>14s} {'canary->end':>12s}"
    figures = f"{'window s':>8s} {'requests':>8s} {'failed':>6s} {'share':>7s} {'p50 ms':>7s}"
    print(
        f"  canary   {times} {'commit->end':>12s} {'gateway':>7s} {figures} "
        f"{'p99 ms':>7s} {'ceiling':>7s}  outcome"
    )
    for run in canary:
        print(
            f"           {run.index:4d} {run.push_s:6.2f} {fmt(run.commit_to_start_s):>14s} "
            f"{fmt(run.canary_to_end_s):>12s} {fmt(run.commit_to_end_s):>12s} "
            f"{fmt(run.gateway_s, '.3f'):>7s} {window_cells(run.window)} "
            f"{run.weight / 100 * scenario.error_rate * 100:6.2f}%  {outcome_text(run)}"
        )
    print(
        f"           {'med':>4s} {fmt(median([r.push_s for r in canary])):>6s} "
        f"{fmt(median([r.commit_to_start_s for r in canary])):>14s} "
        f"{fmt(median([r.canary_to_end_s for r in canary])):>12s} "
        f"{fmt(median([r.commit_to_end_s for r in canary])):>12s} "
        f"{fmt(median([r.gateway_s for r in canary]), '.3f'):>7s} "
        f"{median_cells([r.window for r in canary if r.window])}"
    )
    if replace:
        print(
            f"  replace  {'run':>4s} {'push':>6s} {'commit->ready':>14s} {'first answer':>12s} "
            f"{'':>20s} {figures} "
            f"{'p99 ms':>7s}  failed replace / canary"
        )
    ratios: list[float | None] = []
    for rrun, paired in zip(replace, canary, strict=False):
        r = ratio(rrun, paired)
        ratios.append(r)
        shown = fmt(r, ".1f", "x") if r is not None else "n/a (0 / 0)"
        print(
            f"           {rrun.index:4d} {rrun.push_s:6.2f} {fmt(rrun.commit_to_ready_s):>14s} "
            f"{fmt(rrun.first_answer_s, '.3f'):>12s} {'':>20s} {window_cells(rrun.window)}  "
            f"{shown}" + ("" if rrun.outcome == "replaced" else f"  {rrun.outcome}")
        )
    if replace:
        med_ratio = median(ratios)
        print(
            f"           {'med':>4s} {fmt(median([r.push_s for r in replace])):>6s} "
            f"{fmt(median([r.commit_to_ready_s for r in replace])):>14s} "
            f"{fmt(median([r.first_answer_s for r in replace]), '.3f'):>12s} {'':>20s} "
            f"{median_cells([r.window for r in replace if r.window])}  "
            + (fmt(med_ratio, ".1f", "x") if med_ratio is not None else "n/a")
        )
    print("  per run:")
    for run in canary:
        rate = run.canary_requests / run.window.seconds if run.window else 0.0
        floor = args.min_requests / rate if rate else None
        print(
            f"    canary {run.index}: {run.reason[:300]}\n"
            f"      last analysis' evidence: {run.evidence or '-'}; the canary answered "
            f"{rate:.1f} req/s, so {args.min_requests} requests took >= "
            f"{fmt(floor, '.2f', ' s')}\n"
            f"      window: {revisions_text(run.window)}\n"
            f"      {warmup_text(run.warmup)}; {run.load}"
        )
        for step in run.steps:
            print(f"      analysis: {step}")
    for rrun in replace:
        print(
            f"    replace {rrun.index}: window: {revisions_text(rrun.window)}\n"
            f"      {warmup_text(rrun.warmup)}; {rrun.load}"
        )
    print("\n".join(verdict_lines(scenario, args.steps[0])))


def summary_line(scenario: Scenario) -> str:
    canary, replace = scenario.canary, scenario.replace
    windows = [r.window for r in canary if r.window]
    rwindows = [r.window for r in replace if r.window]
    steps = ", ".join(outcome_text(r) for r in canary)
    text = (
        f"  {scenario.label + ':':21s} {sum(map(scenario.met, canary))} of {len(canary)} "
        f"{scenario.goal} ({steps}); commit->end "
        f"{fmt(median([r.commit_to_end_s for r in canary]), '.2f', ' s')} (commit->canary "
        f"{fmt(median([r.commit_to_start_s for r in canary]), '.2f', ' s')}, canary->end "
        f"{fmt(median([r.canary_to_end_s for r in canary]), '.2f', ' s')}); "
    )
    if not windows:
        return text + "no window measured"
    failed = statistics.median(w.failed for w in windows)
    requests = statistics.median(w.requests for w in windows)
    seconds = statistics.median(w.seconds for w in windows)
    canary_figures = (
        f"client p50 / p99 {statistics.median(w.p50_ms for w in windows):.2f} / "
        f"{statistics.median(w.p99_ms for w in windows):.2f} ms with canary"
    )
    if not rwindows:
        return text + f"{canary_figures} over {seconds:.2f} s; failed {failed:.0f}"
    if scenario.error_rate:
        ceiling = statistics.median(r.weight for r in canary) / 100 * scenario.error_rate
        ratios = median([ratio(r, c) for r, c in zip(replace, canary, strict=False)])
        return text + (
            f"failed {failed:.0f} of {requests:.0f} requests "
            f"({statistics.median(w.share for w in windows):.2%}, ceiling {ceiling:.2%}) with "
            f"canary, {statistics.median(w.failed for w in rwindows):.0f} "
            f"({statistics.median(w.share for w in rwindows):.2%}) with replace over the same "
            f"{seconds:.2f} s: {fmt(ratios, '.1f', 'x')} as many"
        )
    return text + (
        f"{canary_figures}, "
        f"{statistics.median(w.p50_ms for w in rwindows):.2f} / "
        f"{statistics.median(w.p99_ms for w in rwindows):.2f} ms with replace over the same "
        f"{seconds:.2f} s; failed {failed:.0f} and "
        f"{statistics.median(w.failed for w in rwindows):.0f}"
    )
