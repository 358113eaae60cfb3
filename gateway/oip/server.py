"""The gRPC endpoint: grpcio's asyncio server on the app's event loop, beside HTTP, on one registry.

It serves ``inference.GRPCInferenceService``, ``grpc.health.v1.Health`` (the empty service name is the
process, ``inference.GRPCInferenceService`` is SERVING once the server is ready as ``/ready`` says) and
server reflection. A message may be as large as the largest body HTTP takes (an audio upload).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from importlib.metadata import PackageNotFoundError, version

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from compat.kserve import inference_pb2
from compat.kserve.inference_pb2_grpc import add_GRPCInferenceServiceServicer_to_server
from gateway.config import Config
from gateway.observability import Metrics
from gateway.oip.infer import Inference
from gateway.oip.service import SERVICE, Context, InferenceService
from gateway.registry import Registry
from gateway.serving import Serving

__all__ = ["GrpcServer"]

log = logging.getLogger("syn4pse.grpc")

_ENVELOPE = 64 * 1024
"""Room in a message for the request around its largest tensor."""
_WATCH_EVERY = 1.0
"""Seconds between looks at readiness for a health ``Watch``."""


def _version() -> str:
    try:
        return version("syn4pse")
    except PackageNotFoundError:
        return "0"


class Health(health_pb2_grpc.HealthServicer):  # type: ignore[misc]
    """gRPC's health protocol, answered from the registry (no key: probes carry none)."""

    def __init__(self, registry: Registry) -> None:
        self._registry = registry

    def _status(self, service: str) -> health_pb2.HealthCheckResponse.ServingStatus.ValueType | None:
        if service == "":
            return health_pb2.HealthCheckResponse.SERVING
        if service == SERVICE:
            return (health_pb2.HealthCheckResponse.NOT_SERVING if self._registry.unready()
                    else health_pb2.HealthCheckResponse.SERVING)
        return None

    async def Check(self, request: health_pb2.HealthCheckRequest,
                    context: Context) -> health_pb2.HealthCheckResponse:
        status = self._status(request.service)
        if status is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"Unknown service '{request.service}'.")
        return health_pb2.HealthCheckResponse(status=status)

    async def Watch(self, request: health_pb2.HealthCheckRequest,
                    context: Context) -> AsyncIterator[health_pb2.HealthCheckResponse]:
        last = None
        while True:
            status = self._status(request.service)
            if status is None:
                status = health_pb2.HealthCheckResponse.SERVICE_UNKNOWN
            if status != last:
                last = status
                yield health_pb2.HealthCheckResponse(status=status)
            await asyncio.sleep(_WATCH_EVERY)


class GrpcServer:
    """Started after the registry, stopped before it: no call reaches a registry that is not there."""

    def __init__(self, config: Config, registry: Registry, serving: Serving, metrics: Metrics) -> None:
        server = config.server
        assert server.grpc_port is not None
        host = f"[{server.host}]" if ":" in server.host else server.host
        self._address = f"{host}:{server.grpc_port}"
        self._grace = server.shutdown_timeout
        most = max(server.max_audio_upload_bytes, server.max_json_bytes) + _ENVELOPE
        self._server = grpc.aio.server(options=[("grpc.max_receive_message_length", most),
                                                ("grpc.max_send_message_length", most),
                                                ("grpc.so_reuseport", 0)])
        inference = Inference(registry, serving, config, metrics)
        add_GRPCInferenceServiceServicer_to_server(  # type: ignore[no-untyped-call]
            InferenceService(inference, registry, config, metrics, _version()), self._server)
        health_pb2_grpc.add_HealthServicer_to_server(Health(registry), self._server)
        reflection.enable_server_reflection(
            (inference_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"].full_name,
             health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME), self._server)

    async def start(self) -> None:
        try:
            bound = self._server.add_insecure_port(self._address)
        except RuntimeError:
            bound = 0
        if bound == 0:
            raise OSError(f"cannot listen for gRPC on {self._address} (server.grpc_port; null turns it off)")
        await self._server.start()
        log.info("gRPC (Open Inference Protocol) on %s", self._address)

    async def stop(self) -> None:
        await self._server.stop(self._grace)
