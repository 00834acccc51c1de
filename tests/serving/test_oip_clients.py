"""Open Inference Protocol conformance with clients we did not write, used unmodified: Triton's
HTTP client (sync and asyncio; JSON and binary tensor data) and KServe's Python SDK (v2 and v1).

Every test runs twice: straight against replicas (``python -m modelyard.serving.server``, called
as the gateway calls them) and through a real platform's gateway (``modelyard up``) on the bare OIP
paths with the ``X-Modelyard-Namespace`` header, which is all such a client can be told. Two
models: iris (scikit-learn, FP64 ``[-1, 4]`` in, INT64 out) and ``echo`` (Python, no signature),
which answers every input as an output of the same name, so any datatype makes a round trip.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import joblib
import kserve
import numpy as np
import pytest
import tritonclient.http as triton
import tritonclient.http.aio as triton_aio
from kserve.protocol.infer_type import RequestedOutput
from tritonclient.utils import InferenceServerException

from modelyard.registry.records import VersionSpec
from modelyard.testing import Platform, wait_for
from tests.conftest import iris_model
from tests.serving.test_server import AUTH, ServerProcess

pytestmark = pytest.mark.slow

ECHO_MODEL = """
batchable = False


def predict(inputs):
    return dict(inputs)
"""
RUNTIMES = {"iris": "sklearn", "echo": "python"}
ROWS = np.array([[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3], [5.9, 3.0, 4.2, 1.5]])
# One tensor of each kind the protocol carries differently: floats of three widths (FP16 has no
# JSON type of its own), integers, BOOL (one byte in binary) and BYTES (length-prefixed), the
# last both as text and as bytes that are not text (binary only).
TENSORS: dict[str, np.ndarray] = {
    "fp16": np.array([[0.5, -2.0], [65504.0, 1e-3]], dtype=np.float16),
    "fp32": np.array([[0.1, -3.4e38], [1e-7, 2.0]], dtype=np.float32),
    "fp64": np.array([0.1, -1.7e308, 5e-324]),
    "int64": np.array([[-(2**63), 2**63 - 1, 0]], dtype=np.int64),
    "uint8": np.array([0, 255], dtype=np.uint8),
    "bool": np.array([[True, False, True]]),
    "bytes": np.array([["ünï", ""], ["a b", "{json}"]], dtype=object),
}
NOT_TEXT = np.array([b"\xff\xd8\xff", b"\x00"], dtype=object)


@dataclass
class Target:
    """Where an unmodified client is pointed: host:port (Triton's clients take no scheme) and the
    headers it is told to send with every call."""

    hostport: str
    headers: dict[str, str]

    @property
    def url(self) -> str:
        return f"http://{self.hostport}"

    def send(self) -> dict[str, str]:
        # A copy per call: KServe's client adds its own headers to the dict it is given.
        return dict(self.headers)


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("oip-models")
    echo = root / "echo"
    echo.mkdir()
    (echo / "model.py").write_text(ECHO_MODEL)
    return {"iris": iris_model(root / "iris"), "echo": echo}


@pytest.fixture(scope="module")
def classifier(model_dirs: dict[str, Path]) -> Any:
    return joblib.load(model_dirs["iris"] / "model.joblib")


@pytest.fixture(scope="module")
def expected(classifier: Any) -> list[int]:
    """The iris model's own predictions for ROWS."""
    return [int(x) for x in classifier.predict(ROWS)]


@pytest.fixture(scope="module")
def replicas(
    model_dirs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Target]]:
    """A replica per model, called with the header the gateway sends replicas."""
    logs = tmp_path_factory.mktemp("oip-logs")
    started: dict[str, ServerProcess] = {}
    try:
        for name, runtime in RUNTIMES.items():
            started[name] = ServerProcess(model_dirs[name], runtime, name, logs / f"{name}.log")
        for server in started.values():
            server.wait_ready()
        yield {
            name: Target(f"127.0.0.1:{server.port}", dict(AUTH)) for name, server in started.items()
        }
    finally:
        for server in started.values():
            server.stop()


@pytest.fixture(scope="module")
def gateway(
    model_dirs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Target]]:
    """Both models deployed in namespace ``team`` of a real platform, through its gateway."""
    root = tmp_path_factory.mktemp("oip-platform")
    platform = Platform(root / "home", f"sqlite:///{root / 'serving.db'}")
    try:
        client = platform.start()
        client.create_namespace("team")
        for name, runtime in RUNTIMES.items():
            client.push(f"team/{name}", model_dirs[name], VersionSpec(runtime=runtime))
            client.create_deployment("team", name, f"{name}@latest")
        for name in RUNTIMES:
            client.wait_deployment("team", name, timeout=60)
        headers = {
            "Authorization": f"Bearer {client.api_key}",
            "X-Modelyard-Namespace": "team",
        }
        for name in RUNTIMES:  # routed once the gateway has its next routing table
            ready = f"{platform.gateway}/v2/models/{name}/ready"
            routed = functools.partial(_ok, ready, headers)
            wait_for(routed, 30, f"the gateway to route {name}", 0.05)
        hostport = platform.gateway.removeprefix("http://")
        yield {name: Target(hostport, headers) for name in RUNTIMES}
        client.close()
    finally:
        platform.stop()


def _ok(url: str, headers: dict[str, str]) -> bool:
    return httpx.get(url, headers=headers, timeout=30).is_success


@pytest.fixture(params=["replicas", "gateway"])
def at(request: pytest.FixtureRequest) -> dict[str, Target]:
    """Each model's target, straight at replicas or through the gateway."""
    targets: dict[str, Target] = request.getfixturevalue(request.param)
    return targets


def triton_inputs(arrays: dict[str, np.ndarray], binary_data: bool) -> list[triton.InferInput]:
    inputs = []
    for name, array in arrays.items():
        datatype = "BYTES" if array.dtype == object else triton.np_to_triton_dtype(array.dtype)
        tensor = triton.InferInput(name, list(array.shape), datatype)
        inputs.append(tensor.set_data_from_numpy(array, binary_data=binary_data))
    return inputs


def assert_same(got: np.ndarray, sent: np.ndarray) -> None:
    if sent.dtype == object:  # BYTES: Triton's client hands back bytes (binary) or str (JSON)
        got = np.frompyfunc(lambda v: v.decode() if isinstance(v, bytes) else v, 1, 1)(got)
    assert got.dtype == sent.dtype and got.shape == sent.shape
    np.testing.assert_array_equal(got, sent)


# -- Triton's client: health and metadata --------------------------------------------------------


def test_triton_health_and_metadata(at: dict[str, Target]) -> None:
    iris = at["iris"]
    headers = iris.send()
    with triton.InferenceServerClient(iris.hostport) as client:
        assert client.is_server_live(headers=headers)
        assert client.is_server_ready(headers=headers)
        server = client.get_server_metadata(headers=headers)
        assert server["name"] == "modelyard"
        assert "binary_tensor_data" in server["extensions"]
        assert client.is_model_ready("iris", headers=headers)
        assert client.is_model_ready("iris", "1", headers=headers)
        assert not client.is_model_ready("nope", headers=headers)
        assert not client.is_model_ready("iris", "2", headers=headers)
        for version in ("", "1"):
            metadata = client.get_model_metadata("iris", version, headers=headers)
            assert metadata["name"] == "iris"
            assert metadata["versions"] == ["1"]
            assert metadata["inputs"] == [{"name": "input-0", "datatype": "FP64", "shape": [-1, 4]}]
            assert metadata["outputs"] == [
                {"name": "predict", "datatype": "INT64", "shape": [-1]},
                {"name": "predict_proba", "datatype": "FP64", "shape": [-1, 3]},
            ]
        with pytest.raises(InferenceServerException) as caught:
            client.get_model_metadata("nope", headers=headers)
        assert caught.value.status() == "404"
        assert "nope" in (caught.value.message() or "")


# -- Triton's client: inference ------------------------------------------------------------------


@pytest.mark.parametrize("binary_data", [False, True], ids=["json", "binary"])
def test_triton_round_trips_every_datatype(at: dict[str, Target], binary_data: bool) -> None:
    echo = at["echo"]
    sent = dict(TENSORS)
    if binary_data:
        sent["not_text"] = NOT_TEXT
    with triton.InferenceServerClient(echo.hostport) as client:
        outputs = [triton.InferRequestedOutput(name, binary_data=binary_data) for name in sent]
        result = client.infer(
            "echo",
            triton_inputs(sent, binary_data),
            outputs=outputs,
            request_id="r-1",
            headers=echo.send(),
        )
        assert result.get_response()["id"] == "r-1"
        for name, array in sent.items():
            output = result.get_output(name)
            assert ("data" not in output) is binary_data, output
            if name == "not_text":
                assert result.as_numpy(name).tolist() == NOT_TEXT.tolist()
            else:
                assert_same(result.as_numpy(name), array)
        # No outputs named: the client asks for all of them as binary data (its default).
        result = client.infer("echo", triton_inputs(TENSORS, binary_data), headers=echo.send())
        for name, array in TENSORS.items():
            assert result.get_output(name)["parameters"]["binary_data_size"] > 0
            assert_same(result.as_numpy(name), array)


@pytest.mark.parametrize("binary_data", [False, True], ids=["json", "binary"])
def test_triton_asyncio_client(
    at: dict[str, Target], binary_data: bool, expected: list[int]
) -> None:
    async def run() -> None:
        echo = at["echo"]
        async with triton_aio.InferenceServerClient(echo.hostport) as client:
            assert await client.is_server_live(headers=echo.send())
            assert await client.is_server_ready(headers=echo.send())
            assert await client.is_model_ready("echo", headers=echo.send())
            outputs = [triton_aio.InferRequestedOutput(n, binary_data=binary_data) for n in TENSORS]
            results = await asyncio.gather(
                *(
                    client.infer(
                        "echo",
                        triton_inputs(TENSORS, binary_data),
                        outputs=outputs,
                        headers=echo.send(),
                    )
                    for _ in range(4)
                )
            )
            for result in results:
                for name, array in TENSORS.items():
                    assert_same(result.as_numpy(name), array)
        iris = at["iris"]
        async with triton_aio.InferenceServerClient(iris.hostport) as client:
            inputs = triton_inputs({"input-0": ROWS}, binary_data)
            result = await client.infer("iris", inputs, headers=iris.send())
            assert result.as_numpy("predict").tolist() == expected

    asyncio.run(run())


@pytest.mark.parametrize("binary_data", [False, True], ids=["json", "binary"])
def test_triton_iris_with_upcasts_and_one_flat_row(
    at: dict[str, Target], binary_data: bool, expected: list[int], classifier: Any
) -> None:
    iris = at["iris"]
    with triton.InferenceServerClient(iris.hostport) as client:

        def predict(x: np.ndarray, version: str = "") -> list[int]:
            inputs = triton_inputs({"input-0": x}, binary_data)
            result = client.infer("iris", inputs, model_version=version, headers=iris.send())
            assert result.get_response()["model_version"] == "1"
            return [int(v) for v in result.as_numpy("predict")]

        assert predict(ROWS) == expected
        assert predict(ROWS, "1") == expected
        # FP32 for the model's FP64: KServe's servers take a lossless upcast, and so do we
        rows32 = ROWS.astype(np.float32)
        assert predict(rows32) == [int(v) for v in classifier.predict(rows32.astype(np.float64))]
        # one row as a flat [4], the natural request for a model that takes [-1, 4]
        assert predict(ROWS[1]) == expected[1:2]


@pytest.mark.parametrize("binary_data", [False, True], ids=["json", "binary"])
def test_triton_asks_the_iris_classifier_for_predict_proba(
    at: dict[str, Target], binary_data: bool, classifier: Any
) -> None:
    iris = at["iris"]
    with triton.InferenceServerClient(iris.hostport) as client:
        inputs = triton_inputs({"input-0": ROWS.astype(np.float32)}, binary_data)
        proba = triton.InferRequestedOutput("predict_proba", binary_data=binary_data)
        result = client.infer("iris", inputs, outputs=[proba], headers=iris.send())
        assert [o["name"] for o in result.get_response()["outputs"]] == ["predict_proba"]
        want = classifier.predict_proba(ROWS.astype(np.float32).astype(np.float64))
        np.testing.assert_allclose(result.as_numpy("predict_proba"), want)


def test_triton_errors_carry_our_messages(at: dict[str, Target]) -> None:
    iris = at["iris"]
    with triton.InferenceServerClient(iris.hostport) as client:
        with pytest.raises(InferenceServerException) as caught:
            client.infer("nope", triton_inputs({"input-0": ROWS}, True), headers=iris.send())
        assert caught.value.status() == "404"
        assert "nope" in (caught.value.message() or "")
        wrong_type = triton_inputs({"input-0": ROWS.astype(np.int64)}, True)
        with pytest.raises(InferenceServerException) as caught:
            client.infer("iris", wrong_type, headers=iris.send())
        assert caught.value.status() == "400"
        assert caught.value.message() == "input 'input-0' is INT64 but the model takes FP64"
        wrong_shape = triton_inputs({"input-0": ROWS[:, :3].copy()}, False)
        with pytest.raises(InferenceServerException) as caught:
            client.infer("iris", wrong_shape, headers=iris.send())
        assert caught.value.status() == "400"
        assert "has shape [3, 3] but the model takes [any, 4]" in (caught.value.message() or "")
        with pytest.raises(InferenceServerException) as caught:
            client.infer("iris", triton_inputs({"x": ROWS}, True), headers=iris.send())
        assert "the model has no input 'x'" in (caught.value.message() or "")


# -- KServe's SDK --------------------------------------------------------------------------------


@pytest.mark.parametrize("binary_data", [False, True], ids=["json", "binary"])
def test_kserve_v2_rest_client(
    at: dict[str, Target], binary_data: bool, expected: list[int]
) -> None:
    async def run() -> None:
        iris, echo = at["iris"], at["echo"]
        config = kserve.RESTConfig(protocol="v2", retries=0, timeout=30)
        async with kserve.InferenceRESTClient(config) as client:
            assert await client.is_server_live(iris.url, headers=iris.send())
            assert await client.is_server_ready(iris.url, headers=iris.send())
            assert await client.is_model_ready(iris.url, "iris", headers=iris.send())
            assert not await client.is_model_ready(iris.url, "nope", headers=iris.send())

            rows = kserve.InferInput("input-0", list(ROWS.shape), "FP64")
            rows.set_data_from_numpy(ROWS, binary_data=binary_data)
            parameters = {"binary_data_output": True} if binary_data else None
            request = kserve.InferRequest("iris", [rows], parameters=parameters)
            response = await client.infer(iris.url, request, "iris", headers=iris.send())
            assert response.model_name == "iris"
            assert response.outputs[0].as_numpy().tolist() == expected

            inputs = []
            for name in ("fp32", "int64", "bool", "bytes"):
                array = TENSORS[name]
                datatype = "BYTES" if array.dtype == object else kserve_datatype(array)
                tensor = kserve.InferInput(name, list(array.shape), datatype)
                tensor.set_data_from_numpy(array, binary_data=binary_data)
                inputs.append(tensor)
            outputs = [RequestedOutput(t.name, {"binary_data": binary_data}) for t in inputs]
            request = kserve.InferRequest("echo", inputs, request_outputs=outputs)
            response = await client.infer(echo.url, request, "echo", headers=echo.send())
            for output in response.outputs:
                assert_same(output.as_numpy(), TENSORS[output.name])

            with pytest.raises(httpx.HTTPStatusError) as caught:
                await client.infer(iris.url, {"inputs": []}, "iris", headers=iris.send())
            assert caught.value.response.status_code == 400
            assert "needs 'inputs'" in str(caught.value)

    asyncio.run(run())


def kserve_datatype(array: np.ndarray) -> str:
    from kserve.utils.utils import from_np_dtype

    return str(from_np_dtype(array.dtype))


def test_kserve_v1_rest_client(at: dict[str, Target], expected: list[int]) -> None:
    async def run() -> None:
        iris = at["iris"]
        config = kserve.RESTConfig(protocol="v1", retries=0, timeout=30)
        async with kserve.InferenceRESTClient(config) as client:
            assert await client.is_server_live(iris.url, headers=iris.send())
            assert await client.is_model_ready(iris.url, "iris", headers=iris.send())
            for key in ("instances", "inputs"):
                answer = await client.infer(
                    iris.url, {key: ROWS.tolist()}, "iris", headers=iris.send()
                )
                assert answer == {"predictions": expected}
            with pytest.raises(httpx.HTTPStatusError) as caught:
                await client.infer(iris.url, {"rows": []}, "iris", headers=iris.send())
            assert caught.value.response.status_code == 400
            assert caught.value.response.json()["error"].startswith("a v1 request needs")

    asyncio.run(run())


# -- the gateway's own OIP routes ----------------------------------------------------------------


def test_the_gateway_answers_server_routes_with_or_without_a_namespace(
    gateway: dict[str, Target],
) -> None:
    target = gateway["iris"]
    for headers in ({}, {"X-Modelyard-Namespace": "team"}, target.send()):
        live = httpx.get(f"{target.url}/v2/health/live", headers=headers)
        assert live.status_code == 200 and live.json() == {"live": True}
        ready = httpx.get(f"{target.url}/v2/health/ready", headers=headers)
        assert ready.status_code == 200 and ready.json()["ready"] is True
        metadata = httpx.get(f"{target.url}/v2", headers=headers).json()
        assert metadata["name"] == "modelyard"
        assert metadata["extensions"] == ["binary_tensor_data"]
        for path in ("/v2/health/live", "/v2/health/ready", "/v2"):
            head = httpx.head(f"{target.url}{path}", headers=headers)
            assert head.status_code == 200 and head.content == b""
        refused = httpx.post(f"{target.url}/v2/health/live", headers=headers)
        assert refused.status_code == 405 and "not allowed" in refused.json()["error"]
    # model-level routes need the namespace (and the key), as inference does
    bare = httpx.get(f"{target.url}/v2/models/iris/ready")
    assert bare.status_code == 400 and "X-Modelyard-Namespace" in bare.json()["error"]
    head = httpx.head(f"{target.url}/v2/models/iris/ready", headers=target.send(), timeout=10)
    assert head.status_code == 200 and head.content == b""
