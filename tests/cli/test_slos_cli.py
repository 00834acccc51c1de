"""SLOs through the API and the CLI, against a real control plane on a free port."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest
import yaml

from modelyard.api.server import BackgroundServer
from modelyard.client import Client
from modelyard.errors import Forbidden, InvalidInput, NotFound
from tests.cli.conftest import TERMINAL_80, Cli, fits
from tests.delivery.test_slo import minute


def test_set_show_and_export_slos(
    cli: Cli, admin: Client, server: BackgroundServer, tmp_path: Path
) -> None:
    cli("namespaces", "create", "team")
    (tmp_path / "m.bin").write_bytes(b"model")
    admin.push("team/m", tmp_path / "m.bin")
    admin.create_deployment("team", "iris", "m@latest")

    out = cli("slos", "set", "team/iris", "--availability", "99.9", "--latency", "99:250")
    assert "availability: 99.9 % of requests answered without a 5xx over 30 days" in out
    assert "latency-250ms: 99 % of requests answered within 250 ms over 30 days" in out
    assert [o.name for o in admin.get_slos("team", "iris")] == ["availability", "latency-250ms"]
    refused = cli.fail("slos", "set", "team/iris", "--latency", "99:300")
    assert refused.exit_code == InvalidInput.exit_code
    assert "give threshold_ms as one of 1, 2.5, 5, 10, 25, 50, 100, 250, 500" in refused.stderr
    for flag, value in (("--availability", "120"), ("--latency", "100:250")):
        over = cli.fail("slos", "set", "team/iris", flag, value)
        assert over.exit_code == InvalidInput.exit_code
        assert "give a percent strictly between 0 and 100, e.g. 99.9" in over.stderr
    with pytest.raises(InvalidInput, match="strictly between 0 and 1"):
        admin.set_slos("team", "iris", [{"name": "a", "kind": "availability", "target": 1}])
    with pytest.raises(NotFound, match="team/ghost does not exist"):
        admin.slo_status("team", "ghost")
    assert len(admin.get_slos("team", "iris")) == 2

    # 2 % errors in the last three minutes: every window burns at 20
    plane = server.plane
    deployment_id = plane.deployments.plans()[0].deployment_id
    now = dt.datetime.now(dt.UTC)
    plane.telemetry.record(
        [minute(deployment_id, now - dt.timedelta(minutes=m), errors=20) for m in range(3)]
    )
    plane.slos.evaluate()
    shown = cli("slos", "show", "team/iris")
    assert "page-1h" in shown and "ticket-3d" in shown and "20.00x" in shown
    on_terminal = cli.run("slos", "show", "team/iris", env=TERMINAL_80).stdout
    assert fits(on_terminal), on_terminal
    row = next(line for line in on_terminal.splitlines() if line.startswith(" availability "))
    assert row.split() == ["availability", "98", "%", "-1900.0", "%", *["20.00x"] * 5], row
    status = json.loads(cli("slos", "show", "team/iris", "--json"))
    first = status["objectives"][0]
    assert (first["requests"], first["bad"]) == (3000, 60)
    assert first["budget_remaining"] == pytest.approx(1 - 60 / 3)  # 3 may fail, 60 did
    assert {a["rule"] for a in first["alerts"]} == {"page-1h", "page-6h", "ticket-3d"}
    assert "firing" in cli("slos", "alerts", "team/iris")
    for n in range(25):  # newer events of other types: --last counts only matching ones
        admin.create_namespace(f"other-{n}")
    tail = cli("events", "tail", "--type", "slo.*")
    assert tail.count("slo.alert.firing") == 3, tail
    assert "namespace" not in tail
    assert cli("events", "tail", "--type", "slo.*", "--last", "1").count("slo.alert") == 1

    exported = cli("slos", "rules", "team/iris")
    assert exported == admin.slo_rules("team", "iris")
    assert sum(len(g["rules"]) for g in yaml.safe_load(exported)["groups"]) == 16

    _, viewer_token = admin.create_key("viewer", {"team": "viewer"})
    with Client(admin.url, viewer_token, cache_dir=tmp_path / "viewer") as viewer:
        assert viewer.slo_status("team", "iris").objectives[0].alerts
        assert "ModelyardSloBurnRate" in viewer.slo_rules("team", "iris")
        with pytest.raises(Forbidden):
            viewer.set_slos("team", "iris", [])
    changes = admin.events(after=0, types=["deployment.slos.changed"], follow=False)
    assert [(e.subject, e.actor) for e in changes] == [("team/iris", admin.whoami()["key_id"])]
    assert "no SLOs now" in cli("slos", "set", "team/iris", "--clear")
    assert "has no SLOs" in cli("slos", "show", "team/iris")


def test_a_lag_objective_of_a_realtime_deployment(cli: Cli, admin: Client) -> None:
    cli("namespaces", "create", "team")
    admin.realtime.create_stream("team", "clicks")
    admin.realtime.create(
        "team", "scorer", stream="clicks", function="tests.realtime.functions:score"
    )
    out = cli("slos", "set", "team/scorer", "--lag", "99:5")
    assert "lag-5s: 99 % of the time no event waits longer than 5 s to be done over 30 days" in out
    refused = cli.fail("slos", "set", "team/scorer", "--lag", "99:7")
    assert refused.exit_code == InvalidInput.exit_code
    assert "give threshold_s as one of 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60" in refused.stderr
    assert "PERCENT:SECONDS" in cli.fail("slos", "set", "team/scorer", "--lag", "99").stderr
    assert "lag-5s" in cli("slos", "show", "team/scorer")
    rules = yaml.safe_load(cli("slos", "rules", "team/scorer"))
    assert "modelyard_realtime_lag_seconds" in rules["groups"][0]["rules"][0]["expr"]
