"""The model server as a real process: an Open Inference Protocol v2 (and v1) conformance suite.

Every server here is ``python -m modelyard.serving.server`` on a free port, serving a tiny model
trained in the test (iris ships with scikit-learn), and every answer is checked against the
model's own predictions. Servers that no test disturbs are shared by the module; the tests that
stop or break a server (load gating, load failure, graceful shutdown) start their own.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import joblib
import numpy as np
import orjson
import pytest
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

from modelyard.serving.replica_headers import SERVICE_HEADER, TOKEN_ENV, TOKEN_HEADER
from modelyard.serving.server import EXIT_LOAD_FAILED, SLOW_CALLS_TO_MOVE
from modelyard.testing import free_port, wait_for

pytestmark = pytest.mark.slow

START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 15.0
MAX_BODY_MB = 0.05  # the shared sklearn server's limit, so a 413 needs only a small body
TOKEN = "0123456789abcdef-replica-token"
AUTH = {TOKEN_HEADER.decode(): TOKEN}
"""What the gateway sends every replica: these tests call replicas as the gateway does."""

# Doubles its input; 13 anywhere makes predict raise, as a buggy model would.
ECHO_MODEL = """
import numpy as np


def predict(inputs):
    x = inputs["x"]
    if (x == 13).any():
        raise ValueError("13 is not a number this model takes")
    return {"doubled": x * 2, "total": x.sum(axis=1)}
"""

# Each row answers how many rows the predict call that computed it saw, so a test can tell that
# requests were batched together. It sleeps so that concurrent requests queue behind it.
BATCH_PROBE_MODEL = """
import time

import numpy as np


def predict(inputs):
    x = inputs["x"]
    time.sleep(0.05)
    if (x == 13).any():
        raise ValueError("13 is not a number this model takes")
    return {"doubled": x * 2, "rows_in_call": np.full(len(x), len(x), dtype=np.int64)}
"""

# Marks each call it starts (so a test knows requests are inside the model), then takes 0.5 s.
SLOW_MODEL = """
import time
import uuid
from pathlib import Path

STARTED = Path(__file__).parent / "started"


def predict(inputs):
    (STARTED / uuid.uuid4().hex).touch()
    time.sleep(0.5)
    return {"doubled": inputs["x"] * 2}
"""

# Loading waits for a file the test creates, so the test controls when the model is loaded.
GATED_MODEL = """
import time


def load(path):
    deadline = time.monotonic() + 60
    while not (path / "go").exists():
        if time.monotonic() > deadline:
            raise TimeoutError("the test never created the go file")
        time.sleep(0.01)


def predict(inputs):
    return {"doubled": inputs["x"] * 2}
"""

BROKEN_MODEL = """
def load(path):
    raise RuntimeError("the weights are corrupt: broken-model-marker")


def predict(inputs):
    return inputs
"""


class ServerProcess:
    """One ``python -m modelyard.serving.server`` with its output in a log file."""

    def __init__(
        self,
        model_dir: Path,
        runtime: str,
        name: str,
        log_path: Path,
        extra: tuple[str, ...] = (),
        token: str | None = TOKEN,
    ) -> None:
        self.name = name
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self._log = log_path.open("wb")
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "modelyard.serving.server",
                "--model-dir",
                str(model_dir),
                "--runtime",
                runtime,
                "--name",
                name,
                "--version",
                "1",
                "--port",
                str(self.port),
                *extra,
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env={k: v for k, v in os.environ.items() if k != TOKEN_ENV}
            | ({TOKEN_ENV: token} if token else {}),
        )

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def status(self, path: str) -> int | None:
        """The status of ``GET path``, or None while nothing answers."""
        try:
            return httpx.get(self.url + path, timeout=5, headers=AUTH).status_code
        except httpx.TransportError:
            return None

    def wait_ready(self) -> None:
        def ready() -> bool:
            if self.process.poll() is not None:
                raise AssertionError(
                    f"server {self.name} exited with {self.process.returncode}:\n{self.log}"
                )
            return self.status("/v2/health/ready") == 200

        wait_for(ready, START_TIMEOUT_S, f"server {self.name} to be ready")

    def stop(self) -> int:
        """SIGTERM, as an orchestrator stops a replica; SIGKILL only if it does not exit."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(STOP_TIMEOUT_S)
        self._log.close()
        return self.process.returncode


StartServer = Callable[..., ServerProcess]


@pytest.fixture(scope="module")
def iris() -> tuple[np.ndarray, np.ndarray]:
    data = load_iris()
    return np.asarray(data.data, dtype=np.float64), np.asarray(data.target)


@pytest.fixture(scope="module")
def classifier(iris: tuple[np.ndarray, np.ndarray]) -> LogisticRegression:
    x, y = iris
    return LogisticRegression(max_iter=1000).fit(x, y)


@pytest.fixture(scope="module")
def model_dirs(
    tmp_path_factory: pytest.TempPathFactory, classifier: LogisticRegression
) -> dict[str, Path]:
    from skl2onnx import to_onnx

    root = tmp_path_factory.mktemp("models")
    dirs = {name: root / name for name in ("sklearn", "onnx", "echo", "probe")}
    for folder in dirs.values():
        folder.mkdir()
    joblib.dump(classifier, dirs["sklearn"] / "model.joblib")
    # Without ZipMap the probabilities are a plain FP32 tensor, which OIP can carry.
    onx = to_onnx(
        classifier,
        np.zeros((1, 4), dtype=np.float32),
        options={id(classifier): {"zipmap": False}},
        target_opset=15,
    )
    (dirs["onnx"] / "model.onnx").write_bytes(onx.SerializeToString())
    (dirs["echo"] / "model.py").write_text(ECHO_MODEL)
    (dirs["probe"] / "model.py").write_text(BATCH_PROBE_MODEL)
    return dirs


@pytest.fixture(scope="module")
def servers(
    tmp_path_factory: pytest.TempPathFactory, model_dirs: dict[str, Path]
) -> Iterator[dict[str, ServerProcess]]:
    """The servers no test disturbs, started together and shared by the whole module."""
    logs = tmp_path_factory.mktemp("logs")
    batching = ("--max-batch-size", "16", "--max-wait-ms", "5")
    specs: dict[str, tuple[str, str, tuple[str, ...]]] = {
        "iris": ("sklearn", "sklearn", ("--max-body-mb", str(MAX_BODY_MB))),
        "iris-onnx": ("onnx", "onnx", ()),
        "echo": ("echo", "python", ()),
        "iris-batched": ("sklearn", "sklearn", batching),
        "probe": ("probe", "python", batching),
    }
    started: dict[str, ServerProcess] = {}
    try:
        for name, (folder, runtime, extra) in specs.items():
            started[name] = ServerProcess(
                model_dirs[folder], runtime, name, logs / f"{name}.log", extra
            )
        for server in started.values():
            server.wait_ready()
        yield started
    finally:
        for server in started.values():
            server.stop()


@pytest.fixture(scope="module")
def onnx_session(model_dirs: dict[str, Path]) -> Any:
    import onnxruntime

    return onnxruntime.InferenceSession(
        str(model_dirs["onnx"] / "model.onnx"), providers=["CPUExecutionProvider"]
    )


@pytest.fixture
def start(tmp_path: Path) -> Iterator[StartServer]:
    """Start a server of the test's own; every one is stopped at teardown, whatever happened."""
    started: list[ServerProcess] = []

    def start_server(source: str, name: str, *extra: str) -> ServerProcess:
        folder = tmp_path / name
        folder.mkdir()
        (folder / "model.py").write_text(source)
        server = ServerProcess(folder, "python", name, tmp_path / f"{name}.log", extra)
        started.append(server)
        return server

    yield start_server
    for server in started:
        server.stop()


def infer_body(
    x: Any, datatype: str = "FP64", name: str = "input-0", **extra: Any
) -> dict[str, Any]:
    array = np.asarray(x)
    return {
        "inputs": [
            {
                "name": name,
                "shape": list(array.shape),
                "datatype": datatype,
                "data": array.reshape(-1).tolist(),
            }
        ],
        **extra,
    }


def infer(server: ServerProcess, body: Any, path: str | None = None) -> httpx.Response:
    url = server.url + (path or f"/v2/models/{server.name}/infer")
    if isinstance(body, bytes):
        return httpx.post(url, content=body, headers={**AUTH, "content-type": "application/json"})
    return httpx.post(url, json=body, headers=AUTH)


def output(response: httpx.Response, name: str) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    outputs: dict[str, dict[str, Any]] = {
        tensor["name"]: tensor for tensor in response.json()["outputs"]
    }
    return outputs[name]


def assert_error(response: httpx.Response, status: int, *fragments: str) -> str:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert set(body) == {"error"}
    assert isinstance(body["error"], str) and body["error"]
    for fragment in fragments:
        assert fragment in body["error"]
    return str(body["error"])


# -- health and metadata -------------------------------------------------------------------------


def test_server_is_live_and_ready(servers: dict[str, ServerProcess]) -> None:
    server = servers["iris"]
    live = httpx.get(server.url + "/v2/health/live", headers=AUTH)
    assert live.status_code == 200
    assert live.json() == {"live": True}
    ready = httpx.get(server.url + "/v2/health/ready", headers=AUTH)
    assert ready.status_code == 200
    assert ready.json() == {"ready": True}


def test_server_metadata(servers: dict[str, ServerProcess]) -> None:
    response = httpx.get(servers["iris"].url + "/v2", headers=AUTH)
    assert response.status_code == 200
    metadata = response.json()
    assert metadata["name"] == "modelyard"
    assert isinstance(metadata["version"], str) and metadata["version"]
    assert isinstance(metadata["extensions"], list)


def test_model_metadata_and_readiness(servers: dict[str, ServerProcess]) -> None:
    url = servers["iris"].url
    expected = {
        "name": "iris",
        "versions": ["1"],
        "platform": "sklearn",
        "inputs": [{"name": "input-0", "datatype": "FP64", "shape": [-1, 4]}],
        "outputs": [
            {"name": "predict", "datatype": "INT64", "shape": [-1]},
            {"name": "predict_proba", "datatype": "FP64", "shape": [-1, 3]},
        ],
    }
    for path in ("/v2/models/iris", "/v2/models/iris/versions/1"):
        response = httpx.get(url + path, headers=AUTH)
        assert response.status_code == 200, path
        assert response.json() == expected
    for path in ("/v2/models/iris/ready", "/v2/models/iris/versions/1/ready"):
        response = httpx.get(url + path, headers=AUTH)
        assert response.status_code == 200, path
        assert response.json() == {"name": "iris", "ready": True}
    v1 = httpx.get(url + "/v1/models/iris", headers=AUTH)
    assert v1.status_code == 200
    assert v1.json() == {"name": "iris", "ready": True}


def test_onnx_metadata_comes_from_the_graph(servers: dict[str, ServerProcess]) -> None:
    metadata = httpx.get(servers["iris-onnx"].url + "/v2/models/iris-onnx", headers=AUTH).json()
    assert metadata["platform"] == "onnxruntime"
    assert metadata["inputs"] == [{"name": "X", "datatype": "FP32", "shape": [-1, 4]}]
    assert metadata["outputs"] == [
        {"name": "label", "datatype": "INT64", "shape": [-1]},
        {"name": "probabilities", "datatype": "FP32", "shape": [-1, 3]},
    ]


def test_unknown_version_is_404(servers: dict[str, ServerProcess]) -> None:
    url = servers["iris"].url
    for path in ("/v2/models/iris/versions/2", "/v2/models/iris/versions/2/ready"):
        assert_error(httpx.get(url + path, headers=AUTH), 404, "no version 2")


# -- only the gateway ----------------------------------------------------------------------------


def test_a_request_that_did_not_come_through_the_gateway_is_401(
    servers: dict[str, ServerProcess],
) -> None:
    server = servers["echo"]
    url = server.url
    body = infer_body(np.array([[1, 2]]), "INT64", name="x")
    wrong = {TOKEN_HEADER.decode(): TOKEN[:-1] + "X"}
    for headers in ({}, wrong, {TOKEN_HEADER.decode(): ""}, {"authorization": f"Bearer {TOKEN}"}):
        refused = httpx.post(url + "/v2/models/echo/infer", json=body, headers=headers)
        assert_error(refused, 401, "through the gateway")
        for path in ("/v2", "/v2/models/echo", "/v2/models/echo/ready", "/v1/models/echo"):
            assert_error(httpx.get(url + path, headers=headers), 401, "through the gateway")
        v1 = httpx.post(url + "/v1/models/echo:predict", json={"instances": [[1]]}, headers=headers)
        assert_error(v1, 401)
    # The probes a supervisor or a kubelet sends need no token.
    assert httpx.get(url + "/v2/health/live").json() == {"live": True}
    assert httpx.get(url + "/v2/health/ready").json() == {"ready": True}
    # As the gateway sends it: answered.
    assert output(infer(server, body), "doubled")["data"] == [2, 4]


def test_a_server_without_a_token_does_not_start(tmp_path: Path) -> None:
    folder = tmp_path / "open"
    folder.mkdir()
    (folder / "model.py").write_text(ECHO_MODEL)
    server = ServerProcess(folder, "python", "open", tmp_path / "open.log", token=None)
    try:
        code = server.process.wait(START_TIMEOUT_S)
    finally:
        server.stop()
    assert code == 2, server.log
    assert TOKEN_ENV in server.log


def service_ms(response: httpx.Response) -> float:
    assert response.status_code == 200, response.text
    return float(response.headers[SERVICE_HEADER.decode()])


def test_inference_answers_report_the_service_time_and_nothing_else_does(
    servers: dict[str, ServerProcess],
) -> None:
    server = servers["echo"]
    body = infer_body(np.array([[1, 2]]), "INT64", name="x")
    assert 0 <= service_ms(infer(server, body)) < 1000
    v1 = httpx.post(
        servers["iris"].url + "/v1/models/iris:predict",
        json={"instances": [[5.1, 3.5, 1.4, 0.2]]},
        headers=AUTH,
    )
    assert 0 <= service_ms(v1) < 1000
    metadata = httpx.get(server.url + "/v2/models/echo", headers=AUTH)
    failed = infer(server, infer_body(np.array([[13]]), "INT64", name="x"))
    invalid = infer(server, b"{")
    for response in (metadata, failed, invalid):
        assert SERVICE_HEADER.decode() not in response.headers


def test_the_service_time_leaves_out_the_queue_for_the_model(
    start: StartServer, servers: dict[str, ServerProcess]
) -> None:
    # 0.2 s per call on the one worker thread: four calls at once queue behind each other.
    server = start(SLOW_MODEL.replace("0.5", "0.2"), "queued")
    (server.log_path.parent / "queued" / "started").mkdir()
    server.wait_ready()
    url = server.url + "/v2/models/queued/infer"

    async def timed(client: httpx.AsyncClient, i: int) -> tuple[float, float]:
        began = time.perf_counter()
        response = await client.post(url, json=infer_body(np.array([[float(i)]]), name="x"))
        return time.perf_counter() - began, service_ms(response)

    async def fire() -> list[tuple[float, float]]:
        async with httpx.AsyncClient(timeout=30, headers=AUTH) as client:
            for _ in range(SLOW_CALLS_TO_MOVE):  # these move the model to the worker thread
                await timed(client, 0)
            return await asyncio.gather(*(timed(client, i) for i in range(4)))

    answers = asyncio.run(fire())
    assert max(seconds for seconds, _ in answers) > 0.55  # the last one queued for 3 calls
    assert all(195 <= spent < 400 for _, spent in answers), answers  # each reports its 0.2 s
    # Batched: each request reports the batch call that computed it (the probe sleeps 50 ms).
    rows = [infer_body(np.array([[100 + i]]), "INT64", name="x") for i in range(8)]
    batched = asyncio.run(_infer_all(servers["probe"].url + "/v2/models/probe/infer", rows))
    assert all(50 <= service_ms(response) < 1000 for response in batched)


# -- inference -----------------------------------------------------------------------------------


def test_infer_fp64_batch_matches_the_model(
    servers: dict[str, ServerProcess],
    iris: tuple[np.ndarray, np.ndarray],
    classifier: LogisticRegression,
) -> None:
    x = iris[0]
    response = infer(servers["iris"], infer_body(x))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model_name"] == "iris"
    assert body["model_version"] == "1"
    assert "id" not in body
    assert body["outputs"] == [
        {
            "name": "predict",
            "datatype": "INT64",
            "shape": [len(x)],
            "data": classifier.predict(x).tolist(),
        }
    ]


def test_infer_one_row_and_nested_data_agree_with_flat(
    servers: dict[str, ServerProcess],
    iris: tuple[np.ndarray, np.ndarray],
    classifier: LogisticRegression,
) -> None:
    x = iris[0][::25]
    expected = classifier.predict(x).tolist()
    flat = infer_body(x)
    nested = infer_body(x)
    nested["inputs"][0]["data"] = x.tolist()
    assert output(infer(servers["iris"], flat), "predict")["data"] == expected
    assert output(infer(servers["iris"], nested), "predict")["data"] == expected
    one = output(infer(servers["iris"], infer_body(x[:1])), "predict")
    assert one["shape"] == [1]
    assert one["data"] == expected[:1]


def test_request_id_is_echoed_and_the_versioned_path_infers(
    servers: dict[str, ServerProcess], iris: tuple[np.ndarray, np.ndarray]
) -> None:
    server = servers["iris"]
    body = infer_body(iris[0][:3], id="req-42")
    response = infer(server, body, "/v2/models/iris/versions/1/infer")
    assert response.status_code == 200, response.text
    assert response.json()["id"] == "req-42"
    other = infer(server, body, "/v2/models/iris/versions/2/infer")
    assert_error(other, 404, "no version 2")


def test_infer_fp32_on_onnx_with_requested_outputs(
    servers: dict[str, ServerProcess], iris: tuple[np.ndarray, np.ndarray], onnx_session: Any
) -> None:
    x = iris[0][::10].astype(np.float32)
    labels, probabilities = onnx_session.run(["label", "probabilities"], {"X": x})
    server = servers["iris-onnx"]

    both = infer(server, infer_body(x, "FP32", name="X"))
    assert [tensor["name"] for tensor in both.json()["outputs"]] == ["label", "probabilities"]
    assert output(both, "label")["data"] == labels.tolist()

    body = infer_body(x, "FP32", name="X", outputs=[{"name": "probabilities"}])
    response = infer(server, body)
    (tensor,) = response.json()["outputs"]
    assert tensor["name"] == "probabilities"
    assert tensor["datatype"] == "FP32"
    assert tensor["shape"] == [len(x), 3]
    got = np.asarray(tensor["data"], dtype=np.float32).reshape(tensor["shape"])
    np.testing.assert_array_equal(got, probabilities)

    body = infer_body(x, "FP32", name="X", outputs=[{"name": "logits"}])
    assert_error(infer(server, body), 400, "no output 'logits'")


@pytest.mark.parametrize("server", ["iris", "iris-batched"])
def test_a_classifier_answers_predict_proba_when_a_request_names_it(
    servers: dict[str, ServerProcess],
    server: str,
    iris: tuple[np.ndarray, np.ndarray],
    classifier: LogisticRegression,
) -> None:
    """The KServe iris request asking for probabilities; a request naming no outputs still gets
    ``predict`` alone (`test_infer_fp64_batch_matches_the_model`)."""
    x = iris[0][::30]
    body = {
        "inputs": [
            {"name": "input-0", "shape": [len(x), 4], "datatype": "FP32", "data": x.tolist()}
        ],
        "outputs": [{"name": "predict_proba"}],
    }
    response = infer(servers[server], body)
    (tensor,) = response.json()["outputs"]
    assert tensor["name"] == "predict_proba"
    assert (tensor["datatype"], tensor["shape"]) == ("FP64", [5, 3])
    want = classifier.predict_proba(x.astype(np.float32).astype(np.float64))
    np.testing.assert_allclose(np.reshape(tensor["data"], (5, 3)), want)

    body["outputs"] = [{"name": "predict"}, {"name": "predict_proba"}]
    both = infer(servers[server], body).json()["outputs"]
    assert [tensor["name"] for tensor in both] == ["predict", "predict_proba"]
    assert both[0]["data"] == classifier.predict(x).tolist()

    body["outputs"] = [{"name": "decision_function"}]
    assert_error(infer(servers[server], body), 400, "no output 'decision_function'")


def test_infer_int64_on_a_python_model(servers: dict[str, ServerProcess]) -> None:
    x = np.array([[1, -2, 3], [2**40, 0, 7]], dtype=np.int64)
    response = infer(servers["echo"], infer_body(x, "INT64", name="x"))
    doubled = output(response, "doubled")
    assert doubled["datatype"] == "INT64"
    assert doubled["shape"] == [2, 3]
    assert doubled["data"] == (x * 2).reshape(-1).tolist()
    total = output(response, "total")
    assert total == {"name": "total", "datatype": "INT64", "shape": [2], "data": [2, 2**40 + 7]}


def test_infer_fp32_and_fp64_on_a_python_model(servers: dict[str, ServerProcess]) -> None:
    x = np.array([[0.5, 1.25], [-3.0, 1e-3]])
    for datatype, dtype in (("FP32", np.float32), ("FP64", np.float64)):
        doubled = output(infer(servers["echo"], infer_body(x, datatype, name="x")), "doubled")
        assert doubled["datatype"] == datatype
        np.testing.assert_array_equal(
            np.asarray(doubled["data"], dtype=dtype), (x.astype(dtype) * 2).reshape(-1)
        )


def test_v1_predict(
    servers: dict[str, ServerProcess],
    iris: tuple[np.ndarray, np.ndarray],
    classifier: LogisticRegression,
) -> None:
    x = iris[0][::7]
    response = httpx.post(
        servers["iris"].url + "/v1/models/iris:predict",
        json={"instances": x.tolist()},
        headers=AUTH,
    )
    assert response.status_code == 200, response.text
    assert response.json() == {"predictions": classifier.predict(x).tolist()}
    bad = httpx.post(
        servers["iris"].url + "/v1/models/iris:predict", json={"rows": []}, headers=AUTH
    )
    assert_error(bad, 400, "instances")
    unknown = httpx.post(
        servers["iris"].url + "/v1/models/nope:predict", json={"instances": []}, headers=AUTH
    )
    assert_error(unknown, 404, "'nope'")


# -- errors --------------------------------------------------------------------------------------


def test_malformed_json_is_400(servers: dict[str, ServerProcess]) -> None:
    assert_error(infer(servers["iris"], b'{"inputs": ['), 400, "not valid JSON")
    assert_error(infer(servers["iris"], b"[1, 2]"), 400, "JSON object")
    assert_error(infer(servers["iris"], {"inputs": []}), 400, "'inputs'")
    body = infer_body(np.zeros((1, 4)), id=7)
    assert_error(infer(servers["iris"], body), 400, "'id' must be a string")
    body = infer_body(np.zeros((1, 4)), parameters=[])
    assert_error(infer(servers["iris"], body), 400, "'parameters' must be an object")


def test_wrong_shape_is_400(
    servers: dict[str, ServerProcess], iris: tuple[np.ndarray, np.ndarray]
) -> None:
    x = iris[0][:2, :3]
    assert_error(infer(servers["iris"], infer_body(x)), 400, "shape [2, 3]", "[any, 4]")
    flat = iris[0][:2].reshape(-1)
    assert_error(infer(servers["iris"], infer_body(flat)), 400, "shape [8]")


def test_wrong_datatype_is_400(
    servers: dict[str, ServerProcess], iris: tuple[np.ndarray, np.ndarray]
) -> None:
    x = iris[0][:2]
    # INT64 is not exact as FP64 (a lossless upcast like FP32 for FP64 is taken: test_protocol)
    assert_error(infer(servers["iris"], infer_body(x, "INT64")), 400, "INT64", "FP64")
    assert_error(infer(servers["iris-onnx"], infer_body(x, name="X")), 400, "FP64", "FP32")
    strings = infer_body(x)
    strings["inputs"][0]["data"][0] = "five"
    assert_error(infer(servers["iris"], strings), 400, "'five'")
    unknown = infer_body(x, "FLOAT128")
    assert_error(infer(servers["iris"], unknown), 400, "unknown datatype")


def test_data_count_must_match_the_shape(
    servers: dict[str, ServerProcess], iris: tuple[np.ndarray, np.ndarray]
) -> None:
    body = infer_body(iris[0][:2])
    body["inputs"][0]["data"].pop()
    assert_error(infer(servers["iris"], body), 400, "7 value(s)", "holds 8")


def test_unknown_model_is_404(
    servers: dict[str, ServerProcess], iris: tuple[np.ndarray, np.ndarray]
) -> None:
    url = servers["iris"].url
    body = infer_body(iris[0][:1])
    assert_error(httpx.post(url + "/v2/models/nope/infer", json=body, headers=AUTH), 404, "'nope'")
    for path in ("/v2/models/nope", "/v2/models/nope/ready", "/v1/models/nope"):
        assert_error(httpx.get(url + path, headers=AUTH), 404, "'nope'")


def test_unknown_path_is_404(servers: dict[str, ServerProcess]) -> None:
    url = servers["iris"].url
    for path in ("/v3", "/v2/health", "/v2/models/iris/explain"):
        assert_error(httpx.get(url + path, headers=AUTH), 404)
    assert_error(httpx.post(url + "/v2/health/live", json={}, headers=AUTH), 404)
    assert_error(httpx.post(url + "/v2/models/iris/explain", json={}, headers=AUTH), 404)
    assert_error(httpx.put(url + "/v2/models/iris/infer", json={}, headers=AUTH), 405)


def test_oversized_body_is_413_and_the_server_goes_on(
    servers: dict[str, ServerProcess], iris: tuple[np.ndarray, np.ndarray]
) -> None:
    server = servers["iris"]
    url = server.url + "/v2/models/iris/infer"
    # A small overshoot, and one far beyond what socket buffers hold before the server answers.
    for factor in (2, 40):
        rows = int(MAX_BODY_MB * 1024 * 1024 * factor / 16)  # ~4 bytes a value, 4 a row
        x = np.tile(iris[0], (rows // len(iris[0]) + 1, 1))[:rows]
        body = orjson.dumps(infer_body(x))
        assert len(body) > MAX_BODY_MB * 1024 * 1024 * (factor - 1)
        with httpx.Client(timeout=30, headers=AUTH) as client:
            headers = {"content-type": "application/json"}
            assert_error(client.post(url, content=body, headers=headers), 413, "request body over")
            # The same keep-alive client goes on working.
            assert client.post(url, json=infer_body(iris[0][:1])).status_code == 200


def test_a_predict_that_raises_is_500_with_an_error_id_in_the_log(
    servers: dict[str, ServerProcess],
) -> None:
    server = servers["echo"]
    bad = infer(server, infer_body(np.array([[1, 13]]), "INT64", name="x"))
    message = assert_error(bad, 500, "ValueError", "13 is not a number")
    match = re.search(r"error id ([0-9a-f]+)", message)
    assert match, message
    error_id = match.group(1)
    wait_for(lambda: error_id in server.log, 10, "the error id in the server log")
    logged = server.log[server.log.index(error_id) :]
    assert "Traceback" in logged and "13 is not a number" in logged
    good = infer(server, infer_body(np.array([[1, 12]]), "INT64", name="x"))
    assert output(good, "doubled")["data"] == [2, 24]


# -- adaptive batching ---------------------------------------------------------------------------


async def _infer_all(url: str, bodies: list[dict[str, Any]]) -> list[httpx.Response]:
    limits = httpx.Limits(max_connections=len(bodies))
    async with httpx.AsyncClient(limits=limits, timeout=30, headers=AUTH) as client:
        return await asyncio.gather(*(client.post(url, json=body) for body in bodies))


def test_batched_answers_equal_unbatched_ones(
    servers: dict[str, ServerProcess],
    iris: tuple[np.ndarray, np.ndarray],
    classifier: LogisticRegression,
) -> None:
    x = iris[0]
    # Requests of 1 to 3 rows each, every iris row once, all sent at the same time.
    sizes = [1 + i % 3 for i in range(75)]
    bounds = np.cumsum(sizes)[:-1]
    parts = [part for part in np.split(x, bounds) if len(part)]
    bodies = [infer_body(part, id=f"r{i}") for i, part in enumerate(parts)]
    batched = asyncio.run(
        _infer_all(servers["iris-batched"].url + "/v2/models/iris-batched/infer", bodies)
    )
    unbatched = asyncio.run(_infer_all(servers["iris"].url + "/v2/models/iris/infer", bodies))
    for i, (part, got, want) in enumerate(zip(parts, batched, unbatched, strict=True)):
        assert got.status_code == 200, got.text
        assert got.json()["id"] == f"r{i}"
        assert output(got, "predict") == output(want, "predict")
        assert output(got, "predict")["data"] == classifier.predict(part).tolist()


def test_concurrent_requests_are_batched(servers: dict[str, ServerProcess]) -> None:
    rows = [[100 + i, 200 + i] for i in range(24)]  # no 13 anywhere: none of them raises
    bodies = [infer_body(np.array([row]), "INT64", name="x") for row in rows]
    responses = asyncio.run(_infer_all(servers["probe"].url + "/v2/models/probe/infer", bodies))
    rows_in_call = []
    for i, response in enumerate(responses):
        assert output(response, "doubled")["data"] == [2 * rows[i][0], 2 * rows[i][1]]
        rows_in_call.append(output(response, "rows_in_call")["data"][0])
    # While one call sleeps, the rest queue and leave together in the next one.
    assert max(rows_in_call) > 1, rows_in_call


# -- lifecycle -----------------------------------------------------------------------------------


def test_a_request_that_raises_fails_alone_in_a_batch(servers: dict[str, ServerProcess]) -> None:
    bodies = [infer_body(np.array([[13 if i == 5 else i]]), "INT64", name="x") for i in range(12)]
    responses = asyncio.run(_infer_all(servers["probe"].url + "/v2/models/probe/infer", bodies))
    assert_error(responses[5], 500, "13 is not a number")
    for i, response in enumerate(responses):
        if i != 5:
            assert output(response, "doubled")["data"] == [2 * i]


def test_ready_only_after_the_model_is_loaded(start: StartServer, tmp_path: Path) -> None:
    server = start(GATED_MODEL, "gated")
    wait_for(lambda: server.status("/v2/health/live") == 200, START_TIMEOUT_S, "liveness")
    # Live but loading: not ready, and inference says so rather than failing obscurely.
    assert server.status("/v2/health/ready") == 503
    assert server.status("/v2/models/gated/ready") == 503
    assert server.status("/v2/models/gated") == 503
    body = infer_body(np.array([[1.0]]), name="x")
    assert_error(infer(server, body), 503, "still loading")
    (tmp_path / "gated" / "go").touch()
    server.wait_ready()
    assert server.status("/v2/models/gated/ready") == 200
    assert output(infer(server, body), "doubled")["data"] == [2.0]


def test_a_model_that_fails_to_load_exits_non_zero(start: StartServer) -> None:
    server = start(BROKEN_MODEL, "broken")
    try:
        code = server.process.wait(START_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"the server did not exit:\n{server.log}") from None
    assert code == EXIT_LOAD_FAILED
    log = server.log
    assert "Traceback" in log
    assert "RuntimeError: the weights are corrupt: broken-model-marker" in log


def test_sigterm_lets_requests_in_flight_finish(start: StartServer, tmp_path: Path) -> None:
    server = start(SLOW_MODEL, "slow")
    started = tmp_path / "slow" / "started"
    started.mkdir()
    server.wait_ready()
    count = 4
    url = server.url + "/v2/models/slow/infer"
    bodies = [infer_body(np.array([[float(i)]]), name="x") for i in range(count)]

    async def fire() -> list[httpx.Response]:
        task = asyncio.create_task(_infer_all(url, bodies))
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(
            None,
            lambda: wait_for(lambda: any(started.iterdir()), 10, "a request inside the model"),
        )
        server.process.send_signal(signal.SIGTERM)
        assert not task.done()  # every request was in flight when the signal arrived
        return await task

    responses = asyncio.run(fire())
    for i, response in enumerate(responses):
        assert output(response, "doubled")["data"] == [2.0 * i]
    code = server.process.wait(STOP_TIMEOUT_S)
    assert code in (0, -signal.SIGTERM), server.log
    assert "Traceback" not in server.log


def test_a_runtime_plug_in_serves_its_own_routes(tmp_path: Path) -> None:
    folder = tmp_path / "echo"
    folder.mkdir()
    (folder / "greeting.txt").write_text("hello")
    runtime = "tests.serving.echo_runtime:EchoRuntime"  # loaded by module:Class
    server = ServerProcess(folder, runtime, "echo", tmp_path / "echo.log")
    try:
        server.wait_ready()
        answer = httpx.post(f"{server.url}/greet?loud=1", json={"name": "ada"}, headers=AUTH)
        assert httpx.post(f"{server.url}/greet", json={"name": "ada"}).status_code == 401
        assert answer.status_code == 200
        assert answer.json() == {"text": "hello, ada", "q": {"loud": "1"}}
        refused = httpx.post(f"{server.url}/greet", content=b"ada", headers=AUTH)
        assert refused.status_code == 400 and refused.json() == {"error": "send JSON"}
        body = infer_body(np.array([[1.5]]), name="x")
        assert output(infer(server, body), "doubled")["data"] == [3.0]
    finally:
        server.stop()
