"""The realtime loop on a real platform (`modelyard up`: control plane, gateway, a worker
replica of the realtime deployment's revision): ingest through the gateway, predictions read
through it, bad input, roles, isolation between namespaces, and kill -9 of the gateway, of the
control plane and of a worker in the middle of a stream (counted: lost 0, duplicated 0, out of
order 0)."""

from __future__ import annotations

import functools
import itertools
import json
import os
import signal
import threading
from collections import Counter
from pathlib import Path

import httpx
import pytest

from modelyard.errors import InvalidInput
from modelyard.testing import wait_for
from modelyard.types import Role
from tests.conftest import Serving
from tests.realtime.conftest import events_url_of

pytestmark = pytest.mark.slow
ENTITIES = [f"u{i}" for i in range(8)]


def setup(serving: Serving, **extra: object) -> None:
    serving.client.gateway_url = serving.gateway
    rt = serving.client.realtime
    rt.create_stream("team", "clicks", fields={"price": "number"})
    rt.create(
        "team",
        "scorer",
        stream="clicks",
        function="tests.realtime.functions:score",
        rule={"types": ["cart"]},
        **extra,
    )
    # the gateway learns the stream with its next routing table
    wait_for(lambda: _post(serving, [_event(-1, "warmup")]).status_code == 200, 30, "the stream")


def _event(i: int, entity: str, type: str = "cart") -> dict[str, object]:
    return {"event_id": f"e{i}", "user_id": entity, "type": type, "n": i}


def _post(serving: Serving, body: object, token: str | None = None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return serving.http.post("/team/streams/clicks/events", json=body, headers=headers)


class Sender:
    """Sends events one request each from a thread, resending on a connection error (the same
    id: the log keeps one); records what the gateway acknowledged."""

    def __init__(self, serving: Serving, count: int) -> None:
        self.serving, self.count = serving, count
        self.acked: list[str] = []
        self.refused: Counter[str] = Counter()
        """What the producer saw instead of a 200: status codes and transport errors."""
        self.thread = threading.Thread(target=self._run)

    def _run(self) -> None:
        with httpx.Client(base_url=self.serving.gateway, timeout=10) as http:
            headers = {"Authorization": f"Bearer {self.serving.token}"}
            for i in range(self.count):
                event = _event(i, ENTITIES[i % len(ENTITIES)], "cart" if i % 2 else "view")
                while True:
                    try:
                        answer = http.post(
                            "/team/streams/clicks/events", json=event, headers=headers
                        )
                    except httpx.TransportError as exc:
                        self.refused[type(exc).__name__] += 1
                        continue
                    if answer.status_code == 200:
                        self.acked.append(str(event["event_id"]))
                        break
                    self.refused[str(answer.status_code)] += 1


def check_no_loss(serving: Serving, acked: list[str]) -> None:
    """Every acknowledged event is in the log once; every trigger has one prediction; each
    entity's predictions were written in log order."""
    rt = serving.client.realtime
    logged: list[dict[str, object]] = []
    for entity in ENTITIES:
        logged += rt.entity_events("team", "clicks", entity, limit=10_000)
    ids = Counter(str(e["event_id"]) for e in logged)
    lost = [i for i in acked if i not in ids]
    duplicated = [i for i, n in ids.items() if n > 1]
    triggers = {str(e["event_id"]) for e in logged if e["type"] == "cart"}

    def predicted() -> set[str]:
        return {
            p.event_id
            for entity in ENTITIES
            for p in rt.prediction_history("team", "scorer", entity, limit=10_000)
        }

    wait_for(lambda: triggers <= predicted(), 60, "a prediction for every trigger", 0.1)
    out_of_order = 0
    made = 0
    for entity in ENTITIES:
        history = rt.prediction_history("team", "scorer", entity, limit=10_000)
        made += len(history)
        by_write = sorted(history, key=lambda p: (p.written_at, p.seq))  # ties: one write
        out_of_order += sum(a.seq > b.seq for a, b in itertools.pairwise(by_write))
    assert (len(lost), len(duplicated), made - len(triggers), out_of_order) == (0, 0, 0, 0)


def test_events_in_predictions_out(serving: Serving) -> None:
    setup(serving)
    rt = serving.client.realtime
    stream = serving.client.stream("team", "clicks")
    assert stream.send(_event(1, "u1", "view"))["stored"] == 1
    answer = stream.send_many([_event(i, "u1", "cart") for i in (1, 2, 3)], batch=2)
    assert (answer["accepted"], answer["stored"], answer["duplicates"]) == (3, 2, ["e1"])
    wait_for(lambda: _latest(serving, "u1") == 3, 30, "the prediction of e3")
    p = rt.prediction("team", "scorer", "u1")
    assert p.event_id == "e3" and p.value["n"] == 3 and p.model is None
    assert set(rt.predictions("team", "scorer", ["u1", "nobody"])) == {"u1"}
    events = rt.entity_events("team", "clicks", "u1")
    assert [e["event_id"] for e in events] == ["e1", "e2", "e3"]
    assert p.value["seqs"] == [e["seq"] for e in events]  # its history, up to the trigger
    # a bad event refuses the whole batch, naming it
    bad = _post(serving, [_event(10, "u2"), {"event_id": "e11", "user_id": "u2", "price": "x"}])
    assert bad.status_code == 422
    assert bad.json()["error"]["details"] == {"index": 1, "field": "price"}
    assert "nothing of this request was stored" in bad.json()["error"]["message"]
    assert rt.entity_events("team", "clicks", "u2") == []
    with pytest.raises(InvalidInput, match="event 0: no entity key"):
        stream.send({"event_id": "x"})
    assert serving.http.post("/team/streams/nope/events", json=_event(1, "u")).status_code == 404
    malformed = serving.http.post("/team/streams/clicks/events", content=b"{")
    assert malformed.status_code == 400  # as the control plane's API answers it
    assert malformed.json()["error"]["code"] == "malformed_json"
    gauge = 'modelyard_realtime_lag_events{namespace="team",deployment="scorer"}'
    # the gateway measures the lag every half second
    wait_for(lambda: gauge in httpx.get(f"{serving.gateway}/metrics").text, 10, "the lag gauge")
    # forgetting an entity
    assert rt.delete_entity("team", "clicks", "u1") == 3
    assert rt.entity_events("team", "clicks", "u1") == []


def _latest(serving: Serving, entity: str) -> int | None:
    answer = serving.http.get(f"/team/predictions/scorer/{entity}")
    return answer.json()["value"]["n"] if answer.status_code == 200 else None


def test_roles_reserved_names_and_isolation(serving: Serving) -> None:
    setup(serving)
    read = "/team/predictions/scorer/u1"
    client = serving.client
    client.create_namespace("other")
    _, invoker = client.create_key("reader", {"team": Role.INVOKER})
    _, producer = client.create_key("producer", {"team": Role.PRODUCER})
    _, outsider = client.create_key("outsider", {"other": Role.ADMIN})
    # new keys reach the gateway with its next routing table
    for key in (invoker, producer, outsider):
        auth = {"Authorization": f"Bearer {key}"}

        def accepted(auth: dict[str, str] = auth) -> bool:
            return serving.http.get(read, headers=auth).status_code != 401

        wait_for(accepted, 10, "the new keys at the gateway")
    assert _post(serving, _event(1, "u1"), invoker).status_code == 403
    assert _post(serving, _event(1, "u1"), producer).status_code == 200
    assert _post(serving, _event(2, "u1"), outsider).status_code == 403
    assert _post(serving, _event(2, "u1"), "my_nope_nope").status_code == 401
    wait_for(lambda: _latest(serving, "u1") == 1, 30, "the prediction")
    assert serving.http.get(read, headers={"Authorization": f"Bearer {invoker}"}).status_code == 200
    assert (
        serving.http.get(read, headers={"Authorization": f"Bearer {outsider}"}).status_code == 403
    )
    # the same names in another namespace are other objects
    client.realtime.create_stream("other", "clicks")
    assert client.realtime.list_streams("other")[0].namespace == "other"
    other = httpx.get(
        f"{serving.gateway}/other/predictions/scorer/u1",
        headers={"Authorization": f"Bearer {outsider}"},
    )
    assert other.status_code == 404
    for name in ("streams", "predictions"):
        with pytest.raises(InvalidInput, match="reserved"):
            client.create_deployment("team", name, "iris@latest")


def test_kill_9_of_the_gateway_mid_stream(serving: Serving) -> None:
    setup(serving)
    sender = Sender(serving, 400)
    sender.thread.start()
    wait_for(lambda: len(sender.acked) > 100, 60, "a hundred events acknowledged")
    old = serving.platform.gateway_pid()
    os.kill(old, signal.SIGKILL)
    sender.thread.join(120)
    assert len(sender.acked) == 400
    # the producer saw its connection fail while no gateway listened, never an error answer
    assert sender.refused and all(not what.isdigit() for what in sender.refused), sender.refused
    check_no_loss(serving, sender.acked)


@pytest.mark.parametrize("gateway_too", [False, True], ids=["alone", "with-the-gateway"])
def test_kill_9_of_the_control_plane_mid_stream(
    serving: Serving, tmp_path: Path, gateway_too: bool
) -> None:
    """The gateway ingests and the worker predicts (with the model it loaded) while the control
    plane is down; the next control plane adopts the worker instead of starting a second one.
    With the gateway killed too, producers cannot connect until the next control plane has
    started the next gateway."""
    from modelyard.registry.records import VersionSpec
    from tests.conftest import iris_model

    serving.client.push("team/iris", iris_model(tmp_path / "v1"), VersionSpec(runtime="sklearn"))
    setup(serving, model="iris@latest")
    state = serving.platform.home / "replicas"
    wait_for(lambda: _worker_pid(state), 30, "the worker")
    worker = _worker_pid(state)
    assert worker is not None
    wait_for(lambda: _latest(serving, "warmup") == -1, 60, "the first prediction", 0.05)
    sender = Sender(serving, 600)
    sender.thread.start()
    wait_for(lambda: len(sender.acked) > 100, 60, "a hundred events acknowledged")
    gateway = serving.platform.gateway_pid()
    serving.platform.kill()
    if gateway_too:
        os.kill(gateway, signal.SIGKILL)
    else:
        at_kill = len(sender.acked)
        wait_for(lambda: len(sender.acked) > at_kill + 100, 60, "events acknowledged while down")
        after = int(sender.acked[-1][1:])
        wait_for(lambda: _newest_prediction(serving) >= after - 1, 60, "predictions", 0.05)
    assert _workers(serving) == [worker]

    with serving.platform.start() as client:
        serving.client, client.gateway_url = client, serving.gateway
        for _ in range(3):  # supervision rounds of the new control plane
            _next_round(serving, "replicas")
        assert _workers(serving) == [worker]
        assert client.realtime.get("team", "scorer").status == f"running (pid {worker})"
        sender.thread.join(120)
        assert len(sender.acked) == 600
        if gateway_too:  # connections refused, never an error answer
            assert all(not what.isdigit() for what in sender.refused), sender.refused
        else:  # ingest never needed the control plane
            assert not sender.refused, sender.refused
        check_no_loss(serving, sender.acked)
        assert _workers(serving) == [worker]
        # the adopted worker is supervised: killed, one new worker takes its place
        os.kill(worker, signal.SIGKILL)
        wait_for(functools.partial(_restarted, state, worker), 30, "a new worker")
        client.stream("team", "clicks").send(_event(1001, "u1"))
        wait_for(lambda: _latest(serving, "u1") == 1001, 60, "a prediction of the new worker")
        assert _workers(serving) == [_worker_pid(state)]


def test_kill_9_of_a_worker_mid_stream(serving: Serving) -> None:
    setup(serving)
    state = serving.platform.home / "replicas"
    wait_for(lambda: _worker_pid(state), 30, "the worker")
    sender = Sender(serving, 400)
    sender.thread.start()
    for _ in range(2):
        wait_for(lambda: _latest_n(serving) > 0, 60, "predictions")
        killed = _worker_pid(state)
        assert killed is not None
        os.kill(killed, signal.SIGKILL)
        wait_for(functools.partial(_restarted, state, killed), 30, "a new worker")
    sender.thread.join(120)
    check_no_loss(serving, sender.acked)


def _newest_prediction(serving: Serving) -> int:
    """The number of the newest trigger predicted, over every entity (-1: none yet)."""
    return max(
        (n for n in map(functools.partial(_latest, serving), ENTITIES) if n is not None), default=-1
    )


def _workers(serving: Serving) -> list[int]:
    """The live worker processes of this platform's ``scorer``: the replicas its orchestrators
    started (each writes a state file before anything else), whoever started them."""
    return sorted(pid for pid in _pids(serving.platform.home / "replicas") if _alive(pid))


def _pids(folder: Path) -> list[int]:
    found = []
    for path in folder.glob("scorer-*.json"):
        try:
            found.append(int(json.loads(path.read_text())["pid"]))
        except (OSError, ValueError, KeyError):
            continue
    return found


def _alive(pid: int) -> bool:
    try:  # a zombie (exited, not reaped yet) has an empty command line
        return bool(Path(f"/proc/{pid}/cmdline").read_bytes())
    except OSError:
        return False


def _next_round(serving: Serving, loop: str) -> None:
    """Wait until the control plane's ``loop`` has finished a round it had not started yet."""

    def last() -> str | None:
        try:
            health = httpx.get(f"{serving.platform.url}/api/v1/health").json()
        except httpx.TransportError:
            return None
        ticks = [h.get("last_tick") for h in health["loops"] if h["name"] == loop]
        return str(ticks[0]) if ticks and ticks[0] else None

    before = last()
    wait_for(lambda: last() not in (None, before), 30, f"a round of {loop}", 0.05)


def _latest_n(serving: Serving) -> int:
    return sum(_latest(serving, e) is not None for e in ENTITIES)


def _worker_pid(folder: Path) -> int | None:
    """The pid of the one live worker replica of ``scorer`` (its state file in ``folder``);
    None while there is none, or more than one."""
    live = [pid for pid in _pids(folder) if _alive(pid)]
    return live[0] if len(live) == 1 else None


def _restarted(state: Path, old: int) -> bool:
    return _worker_pid(state) not in (None, old)


def test_replay_with_the_model_gives_the_online_predictions(
    serving: Serving, tmp_path: Path
) -> None:
    from modelyard.realtime.backends import open_event_store
    from modelyard.realtime.models import load_model
    from modelyard.realtime.replay import replay_to_dataset
    from modelyard.registry.records import VersionSpec
    from tests.conftest import iris_model

    client = serving.client
    client.push("team/iris", iris_model(tmp_path / "v1"), VersionSpec(runtime="sklearn"))
    setup(serving, model="iris@latest")
    sent = [_event(i, ENTITIES[i % 3], "cart" if i % 2 else "view") for i in range(30)]
    client.stream("team", "clicks").send_many(sent)
    triggers = {str(e["event_id"]) for e in sent if e["type"] == "cart"}

    def online() -> dict[str, tuple[str | None, object]]:
        return {
            p.event_id: (p.model, p.value)
            for entity in ENTITIES[:3]
            for p in client.realtime.prediction_history("team", "scorer", entity)
        }

    wait_for(lambda: triggers <= set(online()), 60, "the online predictions", 0.1)
    made = online()
    assert {model for model, _ in made.values()} == {"team/iris@1"}
    events = open_event_store(events_url_of(serving))
    model = load_model(client, "team/iris@1")
    version = replay_to_dataset(client, events, "team", "scorer", 0, 2e9, "scores", model)
    events.close()
    assert version.params["rows"] == len(triggers) + 1  # and setup's warm-up event
    folder = client.pull("team/scores@latest", kind="dataset")
    import pyarrow.parquet as pq

    table = pq.read_table(folder / "predictions.parquet").to_pylist()
    replayed = {r["event_id"]: (r["model"], json.loads(r["value"])) for r in table}
    assert {k: v for k, v in replayed.items() if k in triggers} == {
        k: v for k, v in made.items() if k in triggers
    }
