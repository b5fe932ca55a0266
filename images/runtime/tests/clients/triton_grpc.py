"""Drives `kiln-runtime serve`'s gRPC service with Triton's Python gRPC client
(tritonclient), a client Kiln did not write, over the Open Inference
Protocol (v2): health, server and model metadata, readiness, inference with
typed and with raw tensor contents, and the errors of bad requests.

    python triton_grpc.py HOST:PORT MODEL
"""

import sys

import numpy as np
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

url, model = sys.argv[1], sys.argv[2]
client = grpcclient.InferenceServerClient(url=url)

assert client.is_server_live()
assert client.is_server_ready()
assert client.get_server_metadata().name == "kiln"
assert client.is_model_ready(model)
assert not client.is_model_ready("no-such-model")
meta = client.get_model_metadata(model)
assert list(meta.inputs[0].shape) == [-1, 4], meta
assert [o.name for o in meta.outputs] == ["predicted_label", "score"], meta

rows = np.array([[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3], [5.9, 2.8, 4.4, 1.4]], dtype=np.float32)
inp = grpcclient.InferInput("input-0", list(rows.shape), "FP32")
inp.set_data_from_numpy(rows)
outputs = [grpcclient.InferRequestedOutput("predicted_label"), grpcclient.InferRequestedOutput("score")]
result = client.infer(model, inputs=[inp], outputs=outputs, request_id="r1")
labels = result.as_numpy("predicted_label")
probs = result.as_numpy("score")
assert labels.tolist() == [0, 2, 1], labels
assert probs.shape == (3, 3), probs.shape
assert np.allclose(probs.sum(axis=1), 1.0, atol=1e-4), probs
assert result.get_response().id == "r1"

# FP64 input, only one output requested.
inp = grpcclient.InferInput("input-0", [1, 4], "FP64")
inp.set_data_from_numpy(rows[:1].astype(np.float64))
result = client.infer(model, inputs=[inp], outputs=[grpcclient.InferRequestedOutput("predicted_label")])
assert result.as_numpy("predicted_label").tolist() == [0]
assert result.as_numpy("score") is None

# Bad requests get the gRPC status and the server's message.
bad = grpcclient.InferInput("input-0", [1, 3], "FP32")
bad.set_data_from_numpy(np.zeros((1, 3), dtype=np.float32))
try:
    client.infer(model, inputs=[bad])
    raise AssertionError("a 3-feature row was accepted")
except InferenceServerException as e:
    assert e.status() == "StatusCode.INVALID_ARGUMENT", e.status()
    assert "4 features" in e.message(), e
try:
    client.infer("no-such-model", inputs=[bad])
    raise AssertionError("an unknown model answered")
except InferenceServerException as e:
    assert e.status() == "StatusCode.NOT_FOUND", e.status()
    assert "no model named" in e.message(), e
print("tritonclient grpc: all checks passed")
