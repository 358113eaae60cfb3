"""KServe's gRPC client against the gateway (kserve_calls.py, in a process of its own)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
from conftest import Gateway
from openai import OpenAI


def test_kserve_client_reads_health_embeddings_and_text(gateway: Gateway, grpc_url: str) -> None:
    done = subprocess.run([sys.executable, str(Path(__file__).with_name("kserve_calls.py")), grpc_url],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    seen = json.loads(done.stdout)
    assert seen["server_ready"] is True and seen["model_ready"] is True
    assert seen["embedding"]["id"] == "k1" and seen["embedding"]["name"] == "embedding"
    assert seen["embedding"]["shape"] == [2, 384]
    http: OpenAI = gateway.openai()
    reference = http.embeddings.create(model="minilm", input="A cat sat on the mat.").data[0].embedding
    assert np.allclose(seen["embedding"]["first"], reference[:4], atol=1e-5)
    completion = http.completions.create(model="smollm2", prompt="The capital of France is", max_tokens=8,
                                         temperature=0)
    assert seen["text_output"] == completion.choices[0].text
    assert seen["unknown_model"]["code"] == "NOT_FOUND"
    assert seen["unknown_model"]["details"] == "The model 'no-such-model' does not exist or is not served here."
