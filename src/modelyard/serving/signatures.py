"""A version's signature, inferred from a sample input run through its runtime on this machine.

``models push --sample request.json`` loads the folder with the runtime it is pushed with, sends
the sample through the same decoding a replica applies to a request (so a sample the model would
refuse is refused here, with the same message), asks for every output the runtime lists, and
describes what went in and what came out as OIP model metadata::

    {"inputs": [{"name": "input-0", "datatype": "FP64", "shape": [-1, 4]}],
     "outputs": [{"name": "predict", "datatype": "INT64", "shape": [-1]},
                 {"name": "predict_proba", "datatype": "FP64", "shape": [-1, 3]}],
     "default_outputs": ["predict"]}

The version then says what it takes before anyone deploys it, and every replica checks requests
against it. A batchable runtime's first dimension is the batch, so it is written ``-1``.
``default_outputs`` is there when the runtime answers some outputs only on request.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from modelyard.errors import InvalidInput
from modelyard.serving import protocol
from modelyard.serving.runtimes import Runtime, load_runtime

SAMPLE_SUFFIXES = (".json", ".npy", ".npz")


def infer_signature(source: Path, runtime: str, sample: Path) -> dict[str, Any]:
    """The signature of the model in ``source`` (what ``models push`` pushes: a folder, or one
    file) served by ``runtime``, from the input in ``sample``: an OIP v2 request body
    (``{"inputs": [...]}``), a v1 one (``{"instances": [...]}``) or a JSON list of rows, a
    ``.npy`` array (the model's one input) or a ``.npz`` of arrays by input name."""
    if source.is_file():
        # A version of one file is a folder holding it once pulled: load it the same way.
        with tempfile.TemporaryDirectory(prefix="modelyard-signature-") as temporary:
            shutil.copyfile(source, Path(temporary) / source.name)
            return infer_signature(Path(temporary), runtime, sample)
    if not source.is_dir():
        raise InvalidInput(f"{source} does not exist: give the model's folder or file")
    model = load_runtime(runtime)
    model.load(source, {})
    inputs = read_sample(sample, model)
    names = [spec.name for spec in model.outputs]
    try:
        if model.default_outputs is not None:
            outputs = model.predict_outputs(inputs, names)
        else:
            outputs = model.predict(inputs)
    except InvalidInput as exc:
        raise InvalidInput(
            f"{runtime} model in {source} refused the sample {sample}: {exc}"
        ) from exc
    signature: dict[str, Any] = {
        "inputs": [
            describe(name, array, model.batchable).to_dict() for name, array in inputs.items()
        ],
        "outputs": [
            describe(name, np.asarray(array), model.batchable).to_dict()
            for name, array in outputs.items()
        ],
    }
    if model.default_outputs is not None:
        signature["default_outputs"] = list(model.default_outputs)
    return signature


def read_sample(path: Path, model: Runtime) -> dict[str, np.ndarray]:
    """The sample's inputs, decoded and checked as a replica of ``model`` decodes a request."""
    suffix = path.suffix.lower()
    if suffix not in SAMPLE_SUFFIXES:
        raise InvalidInput(
            f"sample {path}: write it as .json (an inference request body or rows), "
            ".npy (one array) or .npz (arrays by input name)"
        )
    if not path.is_file():
        raise InvalidInput(f"sample {path} does not exist")
    if suffix == ".json":
        body = path.read_bytes()
        try:
            document = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise InvalidInput(f"sample {path} is not valid JSON: {exc}") from None
        if isinstance(document, list):
            return protocol.decode_v1_request(orjson.dumps({"instances": document}), model.inputs)
        if isinstance(document, dict) and "inputs" not in document:
            return protocol.decode_v1_request(body, model.inputs)
        return protocol.decode_infer_request(body, model.inputs).inputs
    try:
        loaded = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise InvalidInput(f"sample {path} is not a numpy file numpy can read: {exc}") from None
    if isinstance(loaded, np.ndarray):
        name = model.inputs[0].name if model.inputs else "input-0"
        arrays = {name: loaded}
    else:
        with loaded:
            arrays = {name: loaded[name] for name in loaded.files}
    # Through the request decoder too, so an array is taken exactly as a request would be.
    request = {"inputs": [_tensor(name, array) for name, array in arrays.items()]}
    return protocol.decode_infer_request(orjson.dumps(request), model.inputs).inputs


def describe(name: str, array: np.ndarray, batchable: bool) -> protocol.TensorSpec:
    """The spec of a tensor like ``array``: any number of rows when the runtime is batchable."""
    shape = tuple(int(n) for n in array.shape)
    if batchable and shape:
        shape = (-1, *shape[1:])
    return protocol.TensorSpec(name, protocol.oip_datatype(array.dtype), shape)


def _tensor(name: str, array: np.ndarray) -> dict[str, Any]:
    datatype = protocol.oip_datatype(array.dtype)
    data = array.reshape(-1).tolist()
    if datatype == "BYTES":
        data = [item.decode() if isinstance(item, bytes) else str(item) for item in data]
    return {"name": name, "datatype": datatype, "shape": list(array.shape), "data": data}
