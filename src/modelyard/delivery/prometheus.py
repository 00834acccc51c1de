"""A deployment's SLOs as a Prometheus rule file, for teams that alert from their own Prometheus.

Recording rules keep each objective's bad-request ratio over the alert windows, computed from the
gateway's own metrics (``modelyard_requests_total``, ``modelyard_request_duration_seconds``; for a
lag objective the share of the window's evaluations at which ``modelyard_realtime_lag_seconds``
was over the threshold, a subquery); the alerting rules are the same multiwindow burn-rate rules
the control plane evaluates itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import yaml

from modelyard.delivery.burnrate import RULES, WINDOWS, Objective
from modelyard.telemetry.records import BUCKETS, LAG_BUCKETS

RATIO = "namespace_deployment_slo:modelyard_bad_requests:ratio_rate{window}"
ALERT = "ModelyardSloBurnRate"


def _selector(namespace: str, deployment: str, *more: str) -> str:
    """Label matchers: names are DNS labels, so nothing needs escaping."""
    return "{" + ",".join([f'namespace="{namespace}"', f'deployment="{deployment}"', *more]) + "}"


def _rate(metric: str, selector: str, window: str) -> str:
    return f"sum by (namespace, deployment) (rate({metric}{selector}[{window}]))"


def bad_ratio(namespace: str, deployment: str, objective: Objective, window: str) -> str:
    """PromQL for the share of bad requests of ``objective`` over ``window``."""
    every = _selector(namespace, deployment)
    if objective.kind == "availability":
        errors = _selector(namespace, deployment, 'code=~"5.."')
        return (
            f"{_rate('modelyard_requests_total', errors, window)} / "
            f"{_rate('modelyard_requests_total', every, window)}"
        )
    if objective.kind == "lag":
        lag = f"max by (namespace, deployment) (modelyard_realtime_lag_seconds{every})"
        over = f"{LAG_BUCKETS[objective.bucket]:g}"
        return f"avg_over_time(({lag} > bool {over})[{window}:])"
    # the gateway writes le as Python prints the bound: "0.25", "1.0"
    fast = _selector(namespace, deployment, f'le="{BUCKETS[objective.bucket]}"')
    return (
        f"1 - ({_rate('modelyard_request_duration_seconds_bucket', fast, window)} / "
        f"{_rate('modelyard_request_duration_seconds_count', every, window)})"
    )


def render_rules(namespace: str, deployment: str, objectives: Sequence[Objective]) -> str:
    """The rule file (YAML) for one deployment; ``promtool check rules`` accepts it."""
    recording: list[dict[str, Any]] = []
    alerting: list[dict[str, Any]] = []
    for objective in objectives:
        for window in WINDOWS:
            recording.append(
                {
                    "record": RATIO.format(window=window),
                    "expr": bad_ratio(namespace, deployment, objective, window),
                    "labels": {"slo": objective.name},
                }
            )
        for rule in RULES:
            threshold = f"({rule.factor:g} * {objective.budget:.6g})"
            selector = _selector(namespace, deployment, f'slo="{objective.name}"')
            alerting.append(
                {
                    "alert": ALERT,
                    "expr": (
                        f"{RATIO.format(window=rule.long)}{selector} > {threshold} and "
                        f"{RATIO.format(window=rule.short)}{selector} > {threshold}"
                    ),
                    "labels": {"severity": rule.severity, "slo": objective.name, "rule": rule.name},
                    "annotations": describe_alert(namespace, deployment, objective, rule.name),
                }
            )
    name = f"modelyard-slo-{namespace}-{deployment}"
    groups = [
        {"name": f"{name}-ratios", "rules": recording},
        {"name": f"{name}-alerts", "rules": alerting},
    ]
    header = (
        f"# SLO rules of modelyard deployment {namespace}/{deployment}; "
        f"regenerate with 'modelyard slos rules {namespace}/{deployment}'.\n"
    )
    return header + yaml.safe_dump(
        {"groups": groups if objectives else []}, sort_keys=False, width=1000
    )


def describe_alert(
    namespace: str, deployment: str, objective: Objective, rule_name: str
) -> dict[str, str]:
    rule = next(r for r in RULES if r.name == rule_name)
    return {
        "summary": (
            f"{namespace}/{deployment}: SLO {objective.name} burns its error budget over "
            f"{rule.factor:g}x too fast ({rule.long} and {rule.short})"
        ),
        "description": (
            f"Objective: {objective.describe()}. At this rate the budget lasts "
            f"{objective.window_days / rule.factor:.3g} days. "
            f"See 'modelyard slos show {namespace}/{deployment}'."
        ),
    }
