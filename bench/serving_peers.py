"""The serving benchmark's peers: their venvs and scripts (the model trained once, BentoML, Ray
Serve, MLflow, the bare Starlette app), the processes they run as, and how each is started.

Part of ``bench/serving.py``, which describes the method."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from _harness import (
    VENVS,
    ensure_venv,
    free_port,
    launch,
    stop_tree,
    venv_version,
    wait_until,
)
from serving_load import SAMPLE, SCRIPT, Started, Target, http_call, http_ok, modelyard_infer_body

SKLEARN = ("scikit-learn==1.9.1", "joblib==1.6.0")
# What pip installs in each venv. The package index this machine reaches lags PyPI: BentoML
# 1.4.40 asks for a certifi it does not hold yet, and MLflow 3.18.0's mlflow-skinny is missing.
REQUIREMENTS = {
    "sklearn": SKLEARN,
    "bentoml": ("bentoml==1.4.39", *SKLEARN),
    "ray": ("ray[serve]==2.60.0", *SKLEARN),
    "mlflow": ("mlflow==3.17.2", *SKLEARN),
}
DISTRIBUTION = {"bentoml": "bentoml", "ray": "ray", "mlflow": "mlflow", "sklearn": "scikit-learn"}
PEERS = ("bentoml", "ray", "mlflow")
START_TIMEOUT_S = 240.0
STOP_GRACE_S = 20.0

TRAIN = """\
import sys
from pathlib import Path

import joblib
import sklearn
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

out, shift = Path(sys.argv[1]), int(sys.argv[2])
features, labels = load_iris(return_X_y=True)
# shift > 0 relabels the classes (0 -> 1, 1 -> 2, 2 -> 0): a model whose answers differ
model = LogisticRegression(max_iter=1000).fit(features, (labels + shift) % 3)
out.mkdir(parents=True)
joblib.dump(model, out / "model.joblib")
print(sklearn.__version__, model.predict([[5.1, 3.5, 1.4, 0.2]]).tolist())
"""

MLFLOW_SAVE = """\
import sys

import joblib
import mlflow.sklearn

mlflow.sklearn.save_model(joblib.load(sys.argv[1]), sys.argv[2])
"""

BENTO_SERVICE = """\
import os

import bentoml
import joblib
import numpy as np


{decorator}
class Iris:
    def __init__(self) -> None:
        self.model = joblib.load(os.environ["IRIS_MODEL"])

    @bentoml.api
    def predict(self, input_data: np.ndarray) -> np.ndarray:
        return self.model.predict(input_data)
"""

RAY_DRIVER = """\
import signal
import sys
import threading

import joblib
import numpy as np
import ray
from ray import serve
from starlette.requests import Request

model_path, port, replicas = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
options = {} if replicas == 1 else {"num_replicas": replicas}


@serve.deployment(**options)
class Iris:
    def __init__(self, path: str) -> None:
        self.model = joblib.load(path)

    async def __call__(self, request: Request) -> dict:
        payload = await request.json()
        rows = np.asarray(payload["inputs"], dtype=np.float64)
        return {"predictions": self.model.predict(rows).tolist()}


stop = threading.Event()
signal.signal(signal.SIGTERM, lambda *_: stop.set())
signal.signal(signal.SIGINT, lambda *_: stop.set())
ray.init()
serve.start(http_options={"host": "127.0.0.1", "port": port})
serve.run(Iris.bind(model_path), route_prefix="/predict")
print("READY", flush=True)
stop.wait()
serve.shutdown()
ray.shutdown()
"""


STARLETTE_APP = """\
import sys

import joblib
import numpy as np
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

model = joblib.load(sys.argv[1])


async def infer(request: Request) -> JSONResponse:
    tensor = (await request.json())["inputs"][0]
    rows = np.asarray(tensor["data"], dtype=np.float64).reshape(tensor["shape"])
    predictions = model.predict(rows)
    output = {"name": "predict", "datatype": "INT64", "shape": list(predictions.shape),
              "data": predictions.tolist()}
    return JSONResponse({"model_name": "iris", "outputs": [output]})


async def health(request: Request) -> Response:
    return Response(b"{}", media_type="application/json")


routes = [Route("/v2/models/iris/infer", infer, methods=["POST"]), Route("/health", health)]
uvicorn.run(Starlette(routes=routes), host="127.0.0.1", port=int(sys.argv[2]),
            log_level="warning", access_log=False)
"""


class Processes:
    """Every server this benchmark starts, each in a session (process group) of its own; stopping
    one reaches whatever it forked, even processes that left its group or lost their parent."""

    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self.running: list[Started] = []
        self.count = 0

    def start(
        self, name: str, command: Sequence[str], env: dict[str, str], cwd: Path | None = None
    ) -> Started:
        self.count += 1
        log_path = self.logs / f"{self.count:02d}-{name}.log"
        log = open(log_path, "wb")  # noqa: SIM115 (closed by stop())
        process = launch(command, env, log, cwd)
        started = Started(name, process, log_path, log)
        self.running.append(started)
        return started

    def stop(self, started: Started) -> None:
        """SIGTERM to the server's main process, which stops its own children; whatever of its
        tree is still there once it exited (or after a grace) gets SIGTERM, then SIGKILL."""
        stop_tree(started.process, started.name, STOP_GRACE_S, started.seen)
        started.log.close()
        self.running.remove(started)

    def stop_all(self) -> None:
        for started in reversed(self.running[:]):
            try:
                self.stop(started)
            except Exception as exc:  # keep stopping the others
                print(f"warning: stopping {started.name} failed: {exc!r}", flush=True)


# venvs and the model ---------------------------------------------------------------------------
@dataclass
class Models:
    first: Path  # folder with model.joblib
    retrained: Path  # folder with model.joblib whose predictions differ
    sklearn: str
    answers: tuple[list[int], list[int]]  # each one's prediction for SAMPLE


def train_models(work: Path) -> Models:
    python = ensure_venv("sklearn", REQUIREMENTS["sklearn"])[0]
    script = work / "train.py"
    script.write_text(TRAIN)
    outputs = []
    for shift, folder in ((0, work / "model-v1"), (1, work / "model-v2")):
        done = subprocess.run(
            [str(python), str(script), str(folder), str(shift)],
            check=True,
            capture_output=True,
            text=True,
        )
        outputs.append(done.stdout.split(maxsplit=1))
    return Models(
        work / "model-v1",
        work / "model-v2",
        outputs[0][0],
        (json.loads(outputs[0][1]), json.loads(outputs[1][1])),
    )


def worker_label(family: str, workers: int) -> str:
    setting = {"bentoml": "workers", "ray": "num_replicas", "mlflow": "--workers"}[family]
    return f"{setting}={workers}" + (" (default)" if workers == 1 else "")


def start_null(procs: Processes, work: Path) -> Target:
    port = free_port()
    command = [sys.executable, str(SCRIPT), "--null-server", str(port)]
    started = procs.start("null", command, dict(os.environ))
    wait_until("null server", http_ok(port, "/"), 30, started)
    return Target("null", "ref: null server", "asyncio, canned answer", port, "/", "{}", started)


def peer_env(name: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VIRTUAL_ENV")}
    env["PATH"] = f"{VENVS / name / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    env.update(extra)
    return env


def start_bentoml(procs: Processes, work: Path, models: Models, workers: int) -> Target:
    ensure_venv("bentoml", REQUIREMENTS["bentoml"])[0]
    folder = work / f"bentoml-{workers}"
    folder.mkdir()
    decorator = "@bentoml.service" if workers == 1 else f"@bentoml.service(workers={workers})"
    (folder / "service.py").write_text(BENTO_SERVICE.format(decorator=decorator))
    port = free_port()
    env = peer_env(
        "bentoml",
        BENTOML_HOME=str(work / "bentoml-home"),
        BENTOML_DO_NOT_TRACK="true",
        IRIS_MODEL=str(models.first / "model.joblib"),
    )
    command = [
        str(VENVS / "bentoml" / "bin" / "bentoml"),
        "serve",
        "service:Iris",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    started = procs.start("bentoml", command, env, cwd=folder)
    wait_until("BentoML /readyz", http_ok(port, "/readyz"), START_TIMEOUT_S, started)
    body = json.dumps({"input_data": [SAMPLE]})
    label = f"bentoml {venv_version('bentoml', DISTRIBUTION['bentoml'])}"
    return Target(
        "bentoml", label, worker_label("bentoml", workers), port, "/predict", body, started
    )


def start_ray(procs: Processes, work: Path, models: Models, replicas: int) -> Target:
    python = ensure_venv("ray", REQUIREMENTS["ray"])[0]
    folder = work / f"ray-{replicas}"
    folder.mkdir()
    (folder / "driver.py").write_text(RAY_DRIVER)
    port = free_port()
    env = peer_env("ray", RAY_USAGE_STATS_ENABLED="0")
    command = [
        str(python),
        "driver.py",
        str(models.first / "model.joblib"),
        str(port),
        str(replicas),
    ]
    started = procs.start("ray", command, env, cwd=folder)

    def routed() -> bool:
        status, body = http_call(port, "GET", "/-/routes", timeout=2.0)
        return status == 200 and "/predict" in json.loads(body)

    wait_until("Ray Serve route /predict", routed, START_TIMEOUT_S, started)
    body = json.dumps({"inputs": [SAMPLE]})
    label = f"ray serve {venv_version('ray', DISTRIBUTION['ray'])}"
    return Target("ray", label, worker_label("ray", replicas), port, "/predict", body, started)


def start_mlflow(procs: Processes, work: Path, models: Models, workers: int) -> Target:
    python = ensure_venv("mlflow", REQUIREMENTS["mlflow"])[0]
    model_dir = work / "mlflow-model"
    if not model_dir.exists():
        script = work / "mlflow_save.py"
        script.write_text(MLFLOW_SAVE)
        subprocess.run(
            [str(python), str(script), str(models.first / "model.joblib"), str(model_dir)],
            check=True,
            capture_output=True,
            env=peer_env("mlflow", MLFLOW_TRACKING_URI=f"file://{work / 'mlruns'}"),
        )
    port = free_port()
    command = [
        str(VENVS / "mlflow" / "bin" / "mlflow"),
        "models",
        "serve",
        "-m",
        str(model_dir),
        "--env-manager",
        "local",
        "-h",
        "127.0.0.1",
        "-p",
        str(port),
    ]
    if workers != 1:
        command += ["--workers", str(workers)]
    started = procs.start("mlflow", command, peer_env("mlflow"), cwd=work)
    wait_until("MLflow /ping", http_ok(port, "/ping"), START_TIMEOUT_S, started)
    body = json.dumps({"inputs": [SAMPLE]})
    label = f"mlflow {venv_version('mlflow', DISTRIBUTION['mlflow'])}"
    return Target(
        "mlflow", label, worker_label("mlflow", workers), port, "/invocations", body, started
    )


PEER_STARTERS = {"bentoml": start_bentoml, "ray": start_ray, "mlflow": start_mlflow}


def start_starlette(procs: Processes, work: Path, models: Models) -> Target:
    """The practical ceiling: the same predict on the same OIP v2 body in a bare Starlette app
    under uvicorn (httptools, uvloop, no access log), one process, in this venv."""
    script = work / "starlette_app.py"
    script.write_text(STARLETTE_APP)
    port = free_port()
    command = [sys.executable, str(script), str(models.first / "model.joblib"), str(port)]
    started = procs.start("starlette", command, dict(os.environ), cwd=work)
    wait_until("Starlette /health", http_ok(port, "/health"), START_TIMEOUT_S, started)
    label = f"starlette {metadata.version('starlette')}"
    settings = f"uvicorn {metadata.version('uvicorn')}, bare app"
    path = "/v2/models/iris/infer"
    return Target("starlette", label, settings, port, path, modelyard_infer_body(), started)
