"""The gRPC endpoint's own parts, from the server's environment: the generated modules against their proto,
gRPC health and reflection, readiness, the endpoint turned off or its port taken, and tensor reading.
(Triton's and KServe's clients drive it in tests/clients/grpc.)"""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from conftest import STARTER_MODELS, Gateway, base_config, free_port
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from compat.errors import InvalidRequest
from compat.kserve import generate
from compat.kserve import inference_pb2 as pb
from compat.kserve.inference_pb2_grpc import GRPCInferenceServiceStub
from compat.kserve.requests import sampling_of
from compat.kserve.tensors import Inputs, raw_bytes

ROOT = Path(__file__).resolve().parents[1]
SERVICE = "inference.GRPCInferenceService"


def test_the_generated_modules_are_those_of_the_proto(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert generate.main(["--check"]) == 0
    copy = tmp_path / "compat" / "kserve"
    shutil.copytree(ROOT / "compat" / "kserve", copy)
    proto = copy / "inference.proto"
    proto.write_text(proto.read_text().replace("bool live = 1;", "bool live = 1;\n  string note = 2;"))
    monkeypatch.setattr(generate, "ROOT", tmp_path)
    assert generate.main(["--check"]) == 1  # a proto changed without its modules is caught


# -- health, reflection and readiness ------------------------------------------------------------------


def _health(address: str, service: str) -> int:
    with grpc.insecure_channel(address) as channel:
        return int(health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=service),
                                                              timeout=10).status)


def test_health_answers_for_the_process_and_the_service(gateway: Gateway) -> None:
    assert _health(gateway.grpc_address, "") == health_pb2.HealthCheckResponse.SERVING
    assert _health(gateway.grpc_address, SERVICE) == health_pb2.HealthCheckResponse.SERVING
    with pytest.raises(grpc.RpcError) as caught:
        _health(gateway.grpc_address, "no.such.Service")
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    with grpc.insecure_channel(gateway.grpc_address) as channel:
        watch = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(service=SERVICE), timeout=10)
        assert next(watch).status == health_pb2.HealthCheckResponse.SERVING
        watch.cancel()


def test_reflection_describes_the_services(gateway: Gateway) -> None:
    with grpc.insecure_channel(gateway.grpc_address) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        requests = [reflection_pb2.ServerReflectionRequest(list_services=""),
                    reflection_pb2.ServerReflectionRequest(file_containing_symbol=SERVICE)]
        listed, described = list(stub.ServerReflectionInfo(iter(requests), timeout=10))
    names = {s.name for s in listed.list_services_response.service}
    assert {SERVICE, "grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"} <= names
    assert described.file_descriptor_response.file_descriptor_proto  # what a client needs to call it


@pytest.fixture(scope="module")
def unready(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """A gateway one of whose models has lost its file: not ready, over HTTP and gRPC alike."""
    models = STARTER_MODELS.replace("file: SmolLM2-135M-Instruct.Q4_1.gguf", "file: gone.gguf")
    gw = Gateway(tmp_path_factory.mktemp("grpc-unready"), base_config(models=models)).start()
    yield gw
    gw.stop()


def test_an_unready_server_says_so_on_every_probe(unready: Gateway) -> None:
    import httpx

    assert httpx.get(f"{unready.url}/ready", timeout=10).status_code == 503
    assert _health(unready.grpc_address, "") == health_pb2.HealthCheckResponse.SERVING  # alive all the same
    assert _health(unready.grpc_address, SERVICE) == health_pb2.HealthCheckResponse.NOT_SERVING
    with grpc.insecure_channel(unready.grpc_address) as channel:
        stub = GRPCInferenceServiceStub(channel)
        assert stub.ServerLive(pb.ServerLiveRequest(), timeout=10).live
        assert not stub.ServerReady(pb.ServerReadyRequest(), timeout=10).ready
        assert not stub.ModelReady(pb.ModelReadyRequest(name="smollm2"), timeout=10).ready
        assert stub.ModelReady(pb.ModelReadyRequest(name="minilm"), timeout=10).ready
        index = {m.name: m for m in stub.RepositoryIndex(pb.RepositoryIndexRequest(), timeout=10).models}
    assert index["smollm2"].state == "UNAVAILABLE" and "missing" in index["smollm2"].reason


# -- the endpoint off, its port taken ------------------------------------------------------------------


def test_the_endpoint_can_be_turned_off(tmp_path: Path) -> None:
    gw = Gateway(tmp_path, base_config(models="models: {}\n"))
    port, gw.grpc_port = free_port(), None
    config = gw.config_path.read_text().replace("server:\n", f"server:\n  grpc_port: {port}\n")
    gw.config_path.write_text(config)  # configured, and turned off on the command line
    gw.start()
    try:
        with socket.socket() as probe:
            assert probe.connect_ex(("127.0.0.1", port)) != 0, "nothing listens on the gRPC port"
    finally:
        gw.stop()
    assert "gRPC" not in gw.log()


def test_a_taken_grpc_port_is_one_clear_line(tmp_path: Path) -> None:
    config = tmp_path / "syn4pse.yaml"
    config.write_text(base_config(models="models: {}\n"))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run([sys.executable, "-m", "gateway", "serve", "--config", str(config), "--port",
                               str(free_port()), "--grpc-port", str(port)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert f"cannot listen for gRPC on 127.0.0.1:{port} (Address already in use)" in done.stderr
    assert "Traceback" not in done.stderr
    bad = subprocess.run([sys.executable, "-m", "gateway", "serve", "--config", str(config), "--grpc-port", "http"],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "expected a port number or 'off'" in bad.stderr


# -- tensors and parameters ------------------------------------------------------------------------------


def _request(*tensors: tuple[str, str, list[int]], raw: list[bytes] | None = None) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name="m", raw_input_contents=raw or [])
    for name, datatype, shape in tensors:
        request.inputs.add(name=name, datatype=datatype, shape=shape)
    return request


KNOWN = {"text": "BYTES", "stream": "BOOL"}


def test_raw_tensors_are_read_and_checked() -> None:
    inputs = Inputs(_request(("text", "BYTES", [2]), ("stream", "BOOL", [1]),
                             raw=[raw_bytes([b"one", "twö".encode()]), b"\x01"]), KNOWN)
    assert inputs.texts("text") == ["one", "twö"] and inputs.flag("stream") is True
    with pytest.raises(InvalidRequest, match="'text'") as caught:
        Inputs(_request(("text", "BYTES", [1]), raw=[b"\x09\x00\x00\x00abc"]), KNOWN)
    assert caught.value.param == "text"
    with pytest.raises(InvalidRequest, match=r"shape \[3\] \(3 elements\) but 1 elements"):
        Inputs(_request(("text", "BYTES", [3]), raw=[raw_bytes([b"x"])]), KNOWN)
    with pytest.raises(InvalidRequest, match="one raw buffer per input"):
        Inputs(_request(("text", "BYTES", [1]), ("stream", "BOOL", [1]), raw=[raw_bytes([b"x"])]), KNOWN)
    with pytest.raises(InvalidRequest, match="UTF-8"):
        Inputs(_request(("text", "BYTES", [1]), raw=[raw_bytes([b"\xff"])]), KNOWN).texts("text")


def test_sampling_parameters_take_numbers_as_strings_and_nothing_unknown() -> None:
    assert sampling_of('{"temperature": "0.5", "max_tokens": "8", "stop": ["\\n"]}') == {
        "temperature": 0.5, "max_tokens": 8, "stop": ["\n"]}
    with pytest.raises(InvalidRequest) as caught:
        sampling_of('{"best_of": 2}')
    assert caught.value.param == "sampling_parameters.best_of"
    with pytest.raises(InvalidRequest, match="expected a number"):
        sampling_of('{"seed": "seven"}')


def test_a_message_past_the_limit_is_refused_and_the_server_serves_on(gateway: Gateway) -> None:
    """The shared gateway takes 1 MiB of audio: a larger message is refused before it is read whole."""
    request = pb.ModelInferRequest(model_name="whisper", raw_input_contents=[raw_bytes([bytes(3 * 1024 * 1024)])])
    request.inputs.add(name="audio", datatype="BYTES", shape=[1])

    async def send() -> grpc.StatusCode:
        async with grpc.aio.insecure_channel(gateway.grpc_address,
                                             options=[("grpc.max_send_message_length", 8 << 20)]) as channel:
            stub = GRPCInferenceServiceStub(channel)
            try:
                await stub.ModelInfer(request, timeout=30)
            except grpc.aio.AioRpcError as e:
                code = e.code()
            else:
                raise AssertionError("a 3 MiB message was taken")
            assert (await stub.ServerLive(pb.ServerLiveRequest(), timeout=10)).live
            return code

    assert asyncio.run(send()) == grpc.StatusCode.RESOURCE_EXHAUSTED
