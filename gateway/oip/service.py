"""``inference.GRPCInferenceService``: the Open Inference Protocol's calls on the app's registry.

Every call but ``ServerLive`` and ``ServerReady`` (probes, which carry no key) takes the API keys from
the ``authorization`` metadata; the repository's load and unload take an admin key when admin keys are
set, as ``/admin/*`` does. An error is the status its HTTP twin maps to (:mod:`gateway.oip.status`);
on ``ModelStreamInfer`` a request's error is that request's ``error_message`` and the stream goes on.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any, TypeVar

import grpc

from backends.errors import DomainError
from compat.errors import GatewayError, InvalidRequest
from compat.kserve import inference_pb2 as pb
from compat.kserve.inference_pb2_grpc import GRPCInferenceServiceServicer
from compat.kserve.models import index_entry, model_metadata
from gateway.auth import KeyCheck
from gateway.config import Config
from gateway.errors import from_domain
from gateway.observability import Metrics, model_label
from gateway.oip.infer import Inference, model_named
from gateway.oip.status import code_of, details_of, trailers_of
from gateway.registry import Registry
from gateway.routes.admin import InUse

__all__ = ["SERVICE", "Context", "InferenceService"]

log = logging.getLogger("syn4pse.grpc")

SERVICE = "inference.GRPCInferenceService"
_SERVER_NAME = "syn4pse"
_EXTENSIONS = ["model_repository"]
_INTERNAL = "The server had an error while processing your request."
_QUEUED = 64
"""Responses of one stream waiting for the client to read them before its requests wait in turn."""
_IN_FLIGHT = 64
"""Requests of one stream answered at once; past them the stream's next request waits (each still goes
through its model's admission and queue)."""

T = TypeVar("T")
Context = grpc.aio.ServicerContext[Any, Any]


class InferenceService(GRPCInferenceServiceServicer):
    def __init__(self, inference: Inference, registry: Registry, config: Config, metrics: Metrics,
                 version: str) -> None:
        self._inference = inference
        self._registry = registry
        self._metrics = metrics
        self._version = version
        self._keys = KeyCheck(config.server.api_keys, config.server.admin_keys)

    # -- the shape of every call --------------------------------------------------------------------

    def _authorize(self, context: Context, *, admin: bool = False) -> None:
        authorization = dict(context.invocation_metadata() or ()).get("authorization")
        refusal = self._keys.refusal(authorization if isinstance(authorization, str) else None, admin=admin)
        if refusal is not None:
            raise refusal

    def _count(self, method: str, model: str, status: int, started: float) -> None:
        """One call (or one request of a stream) in the request metrics, under its model's label."""
        self._metrics.observe_request(f"/{SERVICE}/{method}", model_label(self._registry, model), status,
                                      time.perf_counter() - started)

    async def _call(self, method: str, context: Context, model: str,
                    answer: Callable[[], Awaitable[T]], *, admin: bool = False) -> T:
        """Run ``answer`` behind the keys, with the call counted; an error aborts with its status."""
        started, status = time.perf_counter(), 500
        try:
            self._authorize(context, admin=admin)
            try:
                result = await answer()
            except DomainError as e:  # a model that fails to load, on the repository's calls
                raise from_domain(e) from None
            status = 200
            return result
        except GatewayError as e:
            status = e.status
            await context.abort(code_of(e), details_of(e), trailing_metadata=trailers_of(e))
            raise  # abort raises; this line keeps the type checker informed
        except (asyncio.CancelledError, grpc.aio.AbortError):
            status = 499
            raise
        except Exception:
            log.exception("unexpected error in %s", method)
            await context.abort(grpc.StatusCode.INTERNAL, _INTERNAL)
            raise
        finally:
            self._count(method, model, status, started)

    # -- health and metadata ------------------------------------------------------------------------

    async def ServerLive(self, request: pb.ServerLiveRequest,
                         context: Context) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=True)

    async def ServerReady(self, request: pb.ServerReadyRequest,
                          context: Context) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=not self._registry.unready())

    async def ModelReady(self, request: pb.ModelReadyRequest,
                         context: Context) -> pb.ModelReadyResponse:
        async def ready() -> pb.ModelReadyResponse:
            model, _, _ = self._inference.model_type(request.name, request.version)
            state, _ = self._registry.state(model)
            return pb.ModelReadyResponse(ready=state.value != "failed")  # an unloaded model loads on its first request
        return await self._call("ModelReady", context, request.name, ready)

    async def ServerMetadata(self, request: pb.ServerMetadataRequest,
                             context: Context) -> pb.ServerMetadataResponse:
        async def metadata() -> pb.ServerMetadataResponse:
            return pb.ServerMetadataResponse(name=_SERVER_NAME, version=self._version, extensions=_EXTENSIONS)
        return await self._call("ServerMetadata", context, "", metadata)

    async def ModelMetadata(self, request: pb.ModelMetadataRequest,
                            context: Context) -> pb.ModelMetadataResponse:
        async def metadata() -> pb.ModelMetadataResponse:
            model, model_type, _ = self._inference.model_type(request.name, request.version)
            backend = self._registry.model_config(model).backend
            return model_metadata(request.name, model_type, backend)
        return await self._call("ModelMetadata", context, request.name, metadata)

    # -- inference ----------------------------------------------------------------------------------

    async def ModelInfer(self, request: pb.ModelInferRequest,
                         context: Context) -> pb.ModelInferResponse:
        started = time.perf_counter()

        async def infer() -> pb.ModelInferResponse:
            responses = self._inference.answers(request, streaming=False, started=started)
            try:
                return await anext(responses)
            finally:
                await responses.aclose()
        return await self._call("ModelInfer", context, request.model_name, infer)

    async def ModelStreamInfer(self, request_iterator: AsyncIterator[pb.ModelInferRequest],
                               context: Context) -> AsyncIterator[pb.ModelStreamInferResponse]:
        """Each request answered by a task of its own, as Triton's decoupled models answer: a long answer
        does not hold back the next request's; every response goes out on the one stream as it comes."""
        started = time.perf_counter()
        try:
            self._authorize(context)
        except GatewayError as e:
            self._count("ModelStreamInfer", "", e.status, started)
            await context.abort(code_of(e), details_of(e))
        queue: asyncio.Queue[pb.ModelStreamInferResponse | None] = asyncio.Queue(_QUEUED)
        tasks: set[asyncio.Task[None]] = set()
        reader = asyncio.create_task(self._read(request_iterator, queue, tasks))
        try:
            while (response := await queue.get()) is not None:
                yield response
        finally:
            reader.cancel()
            for task in tasks:
                task.cancel()
            await asyncio.gather(reader, *tasks, return_exceptions=True)

    async def _read(self, requests: AsyncIterator[pb.ModelInferRequest],
                    queue: asyncio.Queue[pb.ModelStreamInferResponse | None], tasks: set[asyncio.Task[None]]) -> None:
        """Start a task per request as it arrives; when the client has sent its last and every answer
        is out, end the stream."""
        turns = asyncio.Semaphore(_IN_FLIGHT)
        try:
            async for request in requests:
                await turns.acquire()
                task = asyncio.create_task(self._stream_one(request, queue))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
                task.add_done_callback(lambda _: turns.release())
        except Exception:  # the client's side of the stream broke: what was asked is still answered
            log.debug("ModelStreamInfer: the request stream ended with an error", exc_info=True)
        while tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        await queue.put(None)

    async def _stream_one(self, request: pb.ModelInferRequest,
                          queue: asyncio.Queue[pb.ModelStreamInferResponse | None]) -> None:
        started, status = time.perf_counter(), 200
        try:
            async for response in self._inference.answers(request, streaming=True, started=started):
                await queue.put(pb.ModelStreamInferResponse(infer_response=response))
        except GatewayError as e:
            status = e.status
            await queue.put(_stream_error(request, details_of(e)))
        except asyncio.CancelledError:
            status = 499
            raise
        except Exception:
            status = 500
            log.exception("unexpected error in ModelStreamInfer")
            await queue.put(_stream_error(request, _INTERNAL))
        finally:
            self._count("ModelStreamInfer", request.model_name, status, started)

    # -- the model repository -----------------------------------------------------------------------

    async def RepositoryIndex(self, request: pb.RepositoryIndexRequest,
                              context: Context) -> pb.RepositoryIndexResponse:
        async def index() -> pb.RepositoryIndexResponse:
            entries = [index_entry(m["id"], m["state"], m.get("reason")) for m in self._registry.describe()]
            if request.ready:
                entries = [e for e in entries if e.state == "READY"]
            return pb.RepositoryIndexResponse(models=entries)
        return await self._call("RepositoryIndex", context, "", index)

    async def RepositoryModelLoad(self, request: pb.RepositoryModelLoadRequest,
                                  context: Context) -> pb.RepositoryModelLoadResponse:
        async def load() -> pb.RepositoryModelLoadResponse:
            _refuse_parameters(request.parameters)
            await self._registry.load(model_named(self._registry, request.model_name))
            return pb.RepositoryModelLoadResponse()
        return await self._call("RepositoryModelLoad", context, request.model_name, load, admin=True)

    async def RepositoryModelUnload(self, request: pb.RepositoryModelUnloadRequest,
                                    context: Context) -> pb.RepositoryModelUnloadResponse:
        async def unload() -> pb.RepositoryModelUnloadResponse:
            _refuse_parameters(request.parameters)
            name = model_named(self._registry, request.model_name)
            if not await self._registry.unload(name):
                raise InUse(f"The model '{request.model_name}' is serving requests; it unloads when they are"
                            " done.", param="model_name")
            return pb.RepositoryModelUnloadResponse()
        return await self._call("RepositoryModelUnload", context, request.model_name, unload, admin=True)


def _refuse_parameters(parameters: Mapping[str, pb.ModelRepositoryParameter]) -> None:
    """Refuse what would change a model's configuration (``config``, ``file:…``): it comes from syn4pse.yaml.
    ``unload_dependents`` is Triton's flag for the models an ensemble is made of; there are no ensembles
    here, so either value unloads the one model."""
    for key, value in parameters.items():
        if key == "unload_dependents" and value.WhichOneof("parameter_choice") == "bool_param":
            continue
        raise InvalidRequest(f"Parameter '{key}' is not supported: a model's configuration comes from"
                             " syn4pse.yaml.", param=key)


def _stream_error(request: pb.ModelInferRequest, message: str) -> pb.ModelStreamInferResponse:
    """A request's error on the stream, with its id so the client knows which request failed."""
    return pb.ModelStreamInferResponse(error_message=message,
                                       infer_response=pb.ModelInferResponse(model_name=request.model_name,
                                                                            id=request.id))

