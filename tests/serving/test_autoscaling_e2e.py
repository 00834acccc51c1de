"""The autoscaler with real replicas: from zero with a held request, up under load and back."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from modelyard.registry.records import VersionSpec
from modelyard.testing import wait_for
from tests.conftest import Serving, iris_model

pytestmark = pytest.mark.slow
ROWS = [[5.9, 3.0, 4.2, 1.5]]
# 20 ms a call, whatever the machine: six closed-loop client threads keep about six requests in
# flight. With a sub-millisecond model the client threads' own Python (one GIL) is the bottleneck
# and the data plane sees less than one request in flight, which asks for no second replica.
SLOW_MODEL = """
import time

import numpy as np


def predict(inputs):
    time.sleep(0.02)
    return {"predict": np.zeros(len(next(iter(inputs.values()))), dtype=np.int64)}
"""


def ready_replicas(serving: Serving) -> int:
    info = serving.client.get_deployment("team", "iris")
    return sum(p.state == "ready" for r in info.revisions for p in r.replicas)


def test_a_request_at_zero_waits_for_a_replica(serving: Serving, tmp_path: Path) -> None:
    serving.client.push("team/iris", iris_model(tmp_path / "v1"), VersionSpec(runtime="sklearn"))
    scaling = {
        "scale_to_zero": True,
        "min_replicas": 0,
        "max_replicas": 1,
        "stable_window_s": 2,
        "scale_to_zero_grace_s": 1,
    }
    serving.client.create_deployment("team", "iris", "iris@latest", autoscaling=scaling)
    serving.client.wait_deployment("team", "iris", timeout=60)
    wait_for(lambda: ready_replicas(serving) == 0, 60, "scale to zero", 0.2)

    started = time.monotonic()
    answer = serving.infer("iris", ROWS)
    waited = time.monotonic() - started
    assert answer.status_code == 200, answer.text
    assert ready_replicas(serving) == 1
    metrics = httpx.get(f"{serving.gateway}/metrics").text
    assert 'modelyard_cold_starts_total{namespace="team",deployment="iris"} 1' in metrics
    print(f"first answer from zero after {waited:.2f} s")


def test_scales_up_under_load_and_back_down(serving: Serving, tmp_path: Path) -> None:
    folder = tmp_path / "slow"
    folder.mkdir()
    (folder / "model.py").write_text(SLOW_MODEL)
    serving.client.push("team/iris", folder, VersionSpec(runtime="python"))
    scaling = {
        "min_replicas": 1,
        "max_replicas": 3,
        "target_concurrency": 1,
        "stable_window_s": 4,
    }
    serving.client.create_deployment("team", "iris", "iris@latest", autoscaling=scaling)
    serving.client.wait_deployment("team", "iris", timeout=60)
    assert ready_replicas(serving) == 1
    with serving.load("iris", ROWS, workers=6) as load:
        wait_for(lambda: ready_replicas(serving) == 3, 60, "scale up to 3", 0.2)
    assert load.failures == []
    wait_for(lambda: ready_replicas(serving) == 1, 60, "scale back down to 1", 0.2)
