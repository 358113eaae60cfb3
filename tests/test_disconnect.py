"""A client that goes away mid-stream stops its generation: the engine is free for the next request.

The gateway serves this model one sequence at a time (``parallel: 1``), so a request sent after an
abandoned stream can only start once the engine has dropped the abandoned one. If the abandoned
generation ran on, the next answer would wait for all of its remaining tokens.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest
from conftest import SMOLLM_SPECIAL_TOKENS, Gateway, base_config, smollm_models

ABANDONED_TOKENS = 900  # fits the test model's 1024-token context with the prompt
SERIAL_MODEL = smollm_models("{n_ctx: 1024, parallel: 1}")


@pytest.fixture(scope="module")
def serial(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    gw = Gateway(tmp_path_factory.mktemp("serial"), base_config(models=SERIAL_MODEL)).start()
    yield gw
    gw.stop()


def _stream_body(max_tokens: int) -> dict[str, object]:
    return {"model": "gpt-4o-mini", "stream": True, "max_tokens": max_tokens, "temperature": 0.8,
            "logit_bias": SMOLLM_SPECIAL_TOKENS,
            "messages": [{"role": "user", "content": "Tell me a very long story."}]}


def test_disconnect_frees_the_engine(serial: Gateway) -> None:
    url = f"{serial.url}/v1/chat/completions"
    with httpx.Client(timeout=120) as http:
        # Measure this machine's token rate on the same request shape.
        started = time.perf_counter()
        http.post(url, json={**_stream_body(60), "stream": False}).raise_for_status()
        per_token = (time.perf_counter() - started) / 60

        with http.stream("POST", url, json=_stream_body(ABANDONED_TOKENS)) as response:
            assert response.status_code == 200
            frames = 0
            for line in response.iter_lines():
                if line.startswith("data: "):
                    frames += 1
                if frames == 5:
                    break  # leave with most of the tokens still to generate
        assert frames == 5
        left_at = time.perf_counter()
        r = http.post(url, json={**_stream_body(3), "stream": False})
        waited = time.perf_counter() - left_at
    r.raise_for_status()
    assert r.json()["usage"]["completion_tokens"] == 3
    # Running on would have cost the abandoned request's remaining tokens first. Both sides are measured
    # on this machine a moment apart, so a loaded machine slows them alike.
    assert waited < 0.25 * per_token * (ABANDONED_TOKENS - 5), (waited, per_token)
    assert serial.alive()
