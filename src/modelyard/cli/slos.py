"""``slos``: objectives of a deployment, its error budget and burn rates, Prometheus rules."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from modelyard.cli.options import AsJson, split_target
from modelyard.cli.output import print_json, say, table
from modelyard.cli.state import state
from modelyard.delivery.burnrate import DEFAULT_WINDOW_DAYS, WINDOWS
from modelyard.delivery.records import SloStatus

app = typer.Typer(
    help="SLOs: availability, latency and lag objectives of deployments, burn-rate alerts.",
    no_args_is_help=True,
)
Name = Annotated[str, typer.Argument(help="NAMESPACE/DEPLOYMENT")]


def _percent(text: str, what: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise typer.BadParameter(f"{what} {text!r}: give a percent, e.g. 99.9") from None
    if not 0 < value < 100:  # the API's message speaks of fractions, which no flag takes
        raise typer.BadParameter(
            f"{what} {text!r}: give a percent strictly between 0 and 100, e.g. 99.9 "
            "(100 leaves no error budget to spend)"
        )
    return round(value / 100, 12)


def _threshold(item: str, flag: str, unit: str, example: str) -> tuple[str, float]:
    """``PERCENT:THRESHOLD`` (the threshold with or without its ``unit``): the percent as
    written, the threshold as a number."""
    percent, sep, threshold = item.partition(":")
    try:
        value = float(threshold.removesuffix(unit))
    except ValueError:
        value = None
    if not sep or value is None:
        raise typer.BadParameter(f"{flag} {item!r}: write {example}")
    return percent, value


def _latency(item: str, window_days: int) -> dict[str, Any]:
    percent, threshold_ms = _threshold(item, "--latency", "ms", "PERCENT:MILLISECONDS, e.g. 99:250")
    return {
        "name": f"latency-{threshold_ms:g}ms".replace(".", "-"),
        "kind": "latency",
        "target": _percent(percent, "--latency"),
        "threshold_ms": threshold_ms,
        "window_days": window_days,
    }


def _lag(item: str, window_days: int) -> dict[str, Any]:
    percent, threshold_s = _threshold(item, "--lag", "s", "PERCENT:SECONDS, e.g. 99:5")
    return {
        "name": f"lag-{threshold_s:g}s".replace(".", "-"),
        "kind": "lag",
        "target": _percent(percent, "--lag"),
        "threshold_s": threshold_s,
        "window_days": window_days,
    }


@app.command("set")
def set_slos(
    ctx: typer.Context,
    target: Name,
    availability: Annotated[
        str | None, typer.Option(help="Percent of requests answered without a 5xx, e.g. 99.9.")
    ] = None,
    latency: Annotated[
        list[str] | None,
        typer.Option(help="PERCENT:MS, e.g. 99:250: that share answered within MS (repeatable)."),
    ] = None,
    lag: Annotated[
        list[str] | None,
        typer.Option(
            help="PERCENT:SECONDS, e.g. 99:5, of a realtime deployment: that share of the time no "
            "event waits longer than SECONDS (repeatable)."
        ),
    ] = None,
    window_days: Annotated[int, typer.Option(help="Days each objective is judged over.")] = (
        DEFAULT_WINDOW_DAYS
    ),
    clear: Annotated[bool, typer.Option("--clear", help="Remove every objective.")] = False,
    as_json: AsJson = False,
) -> None:
    """Replace the deployment's objectives, e.g. ``--availability 99.9 --latency 99:250``, or
    of a realtime deployment ``--lag 99:5``."""
    objectives: list[dict[str, Any]] = []
    if availability is not None:
        objectives.append(
            {
                "name": "availability",
                "kind": "availability",
                "target": _percent(availability, "--availability"),
                "window_days": window_days,
            }
        )
    objectives += [_latency(item, window_days) for item in latency or []]
    objectives += [_lag(item, window_days) for item in lag or []]
    if not objectives and not clear:
        raise typer.BadParameter("give --availability, --latency and/or --lag, or --clear")
    if objectives and clear:
        raise typer.BadParameter("--clear removes every objective: give it alone")
    saved = state(ctx).client().set_slos(*split_target(target), objectives)
    if as_json:
        print_json(saved)
        return
    if not saved:
        say(f"{target} has no SLOs now")
    for objective in saved:
        say(f"{objective.name}: {objective.describe()}")


@app.command("show")
def show(ctx: typer.Context, target: Name, as_json: AsJson = False) -> None:
    """Error budget left, burn rates over the alert windows and the alerts firing now."""
    status = state(ctx).client().slo_status(*split_target(target))
    if as_json:
        print_json(status)
        return
    _show(status)


@app.command("alerts")
def alerts(
    ctx: typer.Context,
    target: Name,
    limit: Annotated[int, typer.Option(help="How many, newest first.")] = 20,
    as_json: AsJson = False,
) -> None:
    """The latest burn-rate alerts, firing and resolved."""
    found = state(ctx).client().slo_alerts(*split_target(target), limit)
    if as_json:
        print_json(found)
        return
    table(
        f"SLO alerts of {target}",
        ["objective", "rule", "severity", "state", "fired (UTC)", "resolved"],
        [
            (
                a.objective,
                a.rule,
                a.severity,
                a.state,
                f"{a.fired_at:%Y-%m-%d %H:%M}",
                f"{a.resolved_at:%Y-%m-%d %H:%M}" if a.resolved_at else "",
            )
            for a in found
        ],
    )


@app.command("rules")
def rules(ctx: typer.Context, target: Name) -> None:
    """Print the objectives as a Prometheus rule file: ``modelyard slos rules NS/NAME > r.yml``."""
    typer.echo(state(ctx).client().slo_rules(*split_target(target)), nl=False)


def _rate(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def _show(status: SloStatus) -> None:
    name = f"{status.namespace}/{status.deployment}"
    if not status.objectives:
        say(f"{name} has no SLOs: set some with 'modelyard slos set {name} --availability 99.9'")
        return
    for s in status.objectives:
        say(
            (s.objective.name, "bold"),
            f": {s.objective.describe()}; {s.budget_consumed} bad of "
            f"{s.budget_total:.1f} allowed so far",
        )
    table(
        f"SLOs of {name}: error budget and burn rate per window",
        ["objective", "SLI", "budget left", *WINDOWS],
        [
            (
                s.objective.name,
                "-" if s.sli is None else f"{s.sli * 100:.4g} %",
                f"{s.budget_remaining * 100:.1f} %",
                *(_rate(s.burn_rates.get(w)) for w in WINDOWS),
            )
            for s in status.objectives
        ],
    )
    firing = [a for s in status.objectives for a in s.alerts]
    if not firing:
        say("no alert firing")
        return
    table(
        "firing alerts",
        ["objective", "rule", "severity", "since (UTC)", "burn rates"],
        [
            (
                a.objective,
                a.rule,
                a.severity,
                f"{a.fired_at:%Y-%m-%d %H:%M}",
                ", ".join(f"{w} {_rate(v)}" for w, v in a.evidence.get("burn_rates", {}).items()),
            )
            for a in firing
        ],
    )
