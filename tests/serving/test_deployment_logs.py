"""A deployment's logs through the API, the SDK and the CLI: a real platform whose two local
replicas log the requests they serve."""

from __future__ import annotations

import datetime as dt
import itertools
import queue
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from modelyard.errors import BadRequest, NotFound
from modelyard.registry.records import VersionSpec
from modelyard.serving.logs import LogLine, stamp
from modelyard.serving.states import ReplicaState
from modelyard.testing import wait_for
from tests.cli.conftest import Cli
from tests.conftest import Serving

MODEL_PY = """
import logging
import time
import numpy as np

log = logging.getLogger("model")


def predict(inputs):
    x = next(iter(inputs.values()))
    log.info("request x=%s", x.tolist())
    time.sleep(0.02)  # busy a while: concurrent requests go to both replicas
    print("printed", x.tolist())
    return {"y": np.asarray(x) * 2}
"""


def call(serving: Serving, value: float) -> None:
    body = {"inputs": [{"name": "x", "shape": [1], "datatype": "FP64", "data": [value]}]}
    answer = serving.http.post("/team/echo/v2/models/echo/infer", json=body)
    assert answer.status_code == 200, answer.text


def requests(lines: list[LogLine]) -> list[LogLine]:
    return [line for line in lines if "request x=" in line.text]


def in_time_order(lines: list[LogLine]) -> bool:
    return all(a.time <= b.time for a, b in itertools.pairwise(lines))


@pytest.mark.slow
def test_logs_of_two_replicas_merged_tailed_filtered_and_followed(
    serving: Serving, tmp_path: Path
) -> None:
    folder = tmp_path / "echo"
    folder.mkdir()
    (folder / "model.py").write_text(MODEL_PY)
    client = serving.client
    client.push("team/echo", folder, VersionSpec(runtime="python"))
    client.create_deployment(
        "team", "echo", "echo@latest", autoscaling={"min_replicas": 2, "max_replicas": 2}
    )
    client.wait_deployment("team", "echo", timeout=60)

    def two_ready() -> bool:
        replicas = client.get_deployment("team", "echo").revisions[-1].replicas
        return sum(r.state == ReplicaState.READY for r in replicas) == 2

    wait_for(two_ready, 60, "two ready replicas", 0.1)
    replica_ids = {r.id for r in client.get_deployment("team", "echo").revisions[-1].replicas}
    sent: list[int] = []

    def both_logged() -> bool:
        batch = list(range(len(sent) + 1, len(sent) + 9))
        with ThreadPoolExecutor(4) as pool:
            list(pool.map(lambda value: call(serving, value), batch))
        sent.extend(batch)
        logged = requests(list(client.deployment_logs("team", "echo")))
        return {line.replica for line in logged} == replica_ids

    wait_for(both_logged, 60, "requests served by both replicas", 0.05)

    lines = list(client.deployment_logs("team", "echo"))
    logged = requests(lines)
    assert sorted(line.text.split("x=")[1] for line in logged) == sorted(f"[{n}.0]" for n in sent)
    assert in_time_order(lines)
    assert all(line.text.startswith("INFO model request") for line in logged)  # stamped once
    assert any(line.text == f"printed [{sent[-1]}.0]" for line in lines)  # print() too
    assert any("loaded from" in line.text for line in lines)  # the server's own lines

    assert list(client.deployment_logs("team", "echo", tail=3)) == lines[-3:]
    middle = logged[len(logged) // 2]
    since = list(client.deployment_logs("team", "echo", since=middle.time))
    assert since == [line for line in lines if line.time >= middle.time] and middle in since
    assert list(client.deployment_logs("team", "echo", since=stamp(middle.time))) == since
    assert list(client.deployment_logs("team", "echo", since="1h", revision=1)) == lines
    one = next(iter(replica_ids))
    mine = list(client.deployment_logs("team", "echo", replica=one))
    assert mine and {line.replica for line in mine} == {one}

    with pytest.raises(NotFound, match="no revision 9"):
        list(client.deployment_logs("team", "echo", revision=9))
    with pytest.raises(NotFound, match="nobody"):
        list(client.deployment_logs("team", "echo", replica="nobody"))
    with pytest.raises(NotFound):
        list(client.deployment_logs("team", "nothing"))
    with pytest.raises(BadRequest, match="neither a duration"):
        list(client.deployment_logs("team", "echo", since="last tuesday"))
    raw = httpx.get(
        f"{serving.platform.url}/api/v1/namespaces/team/deployments/echo/logs",
        params={"since": "last tuesday"},
        headers={"Authorization": f"Bearer {serving.token}"},
    )
    assert raw.status_code == 400

    # follow: the lines there are, then a new request's line as it is logged
    seen: queue.Queue[LogLine] = queue.Queue()

    def follow() -> None:
        for line in client.deployment_logs("team", "echo", tail=1, follow=True):
            seen.put(line)
            if "x=[1000.0]" in line.text:
                return

    follower = threading.Thread(target=follow, daemon=True)
    follower.start()
    assert seen.get(timeout=30) == lines[-1]
    call(serving, 1000)
    new = seen.get(timeout=30)
    while "x=[1000.0]" not in new.text:
        new = seen.get(timeout=30)
    assert new.replica in replica_ids
    assert new.time > lines[-1].time
    follower.join(10)
    assert not follower.is_alive()

    # the CLI prints the same lines
    cli = Cli()
    env = {
        "MODELYARD_URL": serving.platform.url,
        "MODELYARD_API_KEY": serving.token,
        "MODELYARD_HOME": str(tmp_path / "cli-home"),
    }
    result = cli.run("deployments", "logs", "team/echo", "--tail", "2", env=env)
    assert result.exit_code == 0, result.output
    shown = [LogLine.parse(line) for line in result.stdout.splitlines()]
    assert shown == list(client.deployment_logs("team", "echo", tail=2))
    result = cli.run("deployments", "logs", "team/echo", "--replica", one, env=env)
    assert {LogLine.parse(line).replica for line in result.stdout.splitlines()} == {one}
    since_now = (dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)).isoformat()
    result = cli.run("deployments", "logs", "team/echo", "--since", since_now, env=env)
    assert result.exit_code == 0 and result.stdout == ""
    bad = cli.run("deployments", "logs", "team/echo", "--since", "soon", env=env)
    assert bad.exit_code == BadRequest.exit_code and "neither a duration" in bad.stderr
    missing = cli.run("deployments", "logs", "team/echo", "--revision", "7", env=env)
    assert missing.exit_code == NotFound.exit_code and "no revision 7" in missing.stderr
