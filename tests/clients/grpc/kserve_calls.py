"""KServe's ``InferenceGRPCClient`` driving the gateway, in a process of its own (kserve and tritonclient
cannot share one: both register the ``inference`` proto package). Prints what it saw as one JSON object.

    python kserve_calls.py 127.0.0.1:50051
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

import grpc
from kserve import InferenceGRPCClient, InferInput, InferRequest


async def calls(url: str) -> dict[str, Any]:
    client = InferenceGRPCClient(url, timeout=120)
    seen: dict[str, Any] = {"server_ready": await client.is_server_ready(),
                            "model_ready": await client.is_model_ready("minilm")}
    texts = ["A cat sat on the mat.", "Stock markets fell sharply today."]
    embedded = await client.infer(InferRequest(model_name="minilm", request_id="k1",
                                               infer_inputs=[InferInput("text", [2], "BYTES", data=texts)]))
    vectors = embedded.outputs[0].as_numpy()
    seen["embedding"] = {"id": embedded.id, "name": embedded.outputs[0].name, "shape": list(vectors.shape),
                         "first": [float(v) for v in vectors[0][:4]]}
    prompt = [InferInput("text_input", [1], "BYTES", data=["The capital of France is"]),
              InferInput("exclude_input_in_output", [1], "BOOL", data=[True]),
              InferInput("sampling_parameters", [1], "BYTES", data=[json.dumps({"max_tokens": 8, "temperature": 0})])]
    answered = await client.infer(InferRequest(model_name="smollm2", infer_inputs=prompt))
    seen["text_output"] = answered.outputs[0].as_numpy()[0].decode()
    try:
        await client.infer(InferRequest(model_name="no-such-model", infer_inputs=prompt))
    except grpc.aio.AioRpcError as e:  # kserve lets gRPC's own error through
        seen["unknown_model"] = {"code": e.code().name, "details": e.details()}
    await client.close()
    return seen


if __name__ == "__main__":
    print(json.dumps(asyncio.run(calls(sys.argv[1]))))
