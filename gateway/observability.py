"""Observability: Prometheus metrics, request ids and the JSON access log.

``instrument(app)`` wires it all into a built app: a :class:`Metrics` on ``app.state.metrics`` (its
own ``CollectorRegistry``, so two apps in one process never share or clash), ``GET /metrics``, and
:class:`ObservabilityMiddleware` around the whole ASGI handler. The middleware sits outside Litestar's
router rather than in ``Litestar(middleware=...)`` because route middleware never sees requests that
match no route: 404s and 405s would go uncounted and unlogged.

Routes label their request with a model through :func:`set_request_model`, and meter generations
with :func:`meter_generation`; the registry reports loads through :meth:`Metrics.observe_load`,
:meth:`Metrics.set_loaded` and :meth:`Metrics.set_queue_depth`. Backends that batch the work of
concurrent requests are read at scrape time (:class:`ReportsBatches`): their counts live in the
backend, so the metrics cost nothing per batch.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final, Protocol, cast, runtime_checkable

import msgspec
from litestar import Litestar, Request, Response, get
from litestar.connection import ASGIConnection
from litestar.enums import ScopeType
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.exposition import choose_encoder

from backends.base import ReportsDrafts, ReportsEndpoints
from compat.errors import GatewayError

if TYPE_CHECKING:
    from litestar.datastructures import State
    from litestar.types import ASGIApp, Message, Receive, ReceiveMessage, Scope, Send

    from gateway.registry import Registry

__all__ = [
    "MODEL_KEY",
    "REQUEST_ID_HEADER",
    "REQUEST_ID_KEY",
    "GenerationMeter",
    "Metrics",
    "ObservabilityMiddleware",
    "OneLineFormatter",
    "ReportsBatches",
    "instrument",
    "meter_generation",
    "metrics_endpoint",
    "metrics_of",
    "model_label",
    "one_line",
    "request_id_of",
    "set_request_model",
]

access_log = logging.getLogger("syn4pse.access")

REQUEST_ID_HEADER: Final = "x-request-id"
REQUEST_ID_KEY: Final = "request_id"
"""Scope-state key of the request id (``request.scope["state"][REQUEST_ID_KEY]``)."""
MODEL_KEY: Final = "model"
"""Scope-state key of the model label; set it with :func:`set_request_model`."""
STARTED_KEY: Final = "request_started"
"""Scope-state key of ``time.perf_counter()`` when the request reached the gateway."""
_FIRST_TOKEN_KEY: Final = "first_token_observed"

UNMATCHED_ROUTE: Final = "<unmatched>"
"""The route label of a request that matched no route: the raw path would be unbounded cardinality."""

_VALID_REQUEST_ID = re.compile(r"[\x21-\x7e]{1,128}")
"""A client's id is kept if it is short printable ASCII; anything else is replaced, not echoed."""

# Seconds. Chat requests and model loads run to minutes on a CPU, so the buckets reach far.
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
_TTFT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60)
_LOAD_BUCKETS = (0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)

_json = msgspec.json.Encoder()


class Metrics:
    """The gateway's Prometheus collectors and the few calls the rest of the code makes on them.

    Each instance has a registry of its own (never prometheus_client's global one), so tests may build
    many apps in one process. It is the model registry's ``RegistryObserver`` (``observe_load``,
    ``set_loaded``, ``set_queue_depth``).
    """

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        ProcessCollector(registry=r)  # memory and CPU of the process that holds the models
        self._requests = Counter("syn4pse_requests_total", "HTTP requests answered, by route template, model "
                                 "and status.", ["route", "model", "status"], registry=r)
        self._duration = Histogram("syn4pse_request_duration_seconds", "Time from a request's arrival until its "
                                   "response body was sent, by route template.", ["route"],
                                   buckets=_LATENCY_BUCKETS, registry=r)
        self._ttft = Histogram("syn4pse_time_to_first_token_seconds", "Time from a request's arrival until the "
                               "first generated token, by model.", ["model"], buckets=_TTFT_BUCKETS, registry=r)
        self._tokens = Counter("syn4pse_tokens_generated_total", "Completion tokens generated, by model.",
                               ["model"], registry=r)
        self._queue = Gauge("syn4pse_queue_depth", "Requests waiting for a model, by model.", ["model"],
                            registry=r)
        self._loaded = Gauge("syn4pse_models_loaded", "Models loaded in memory now.", registry=r)
        self._load = Histogram("syn4pse_model_load_seconds", "Time to load a model (download excluded), by "
                               "model.", ["model"], buckets=_LOAD_BUCKETS, registry=r)

    def observe_request(self, route: str, model: str, status: int, seconds: float) -> None:
        """One finished HTTP request (the middleware calls this)."""
        self._requests.labels(route=route, model=model, status=str(status)).inc()
        self._duration.labels(route=route).observe(seconds)

    def observe_ttft(self, model: str, seconds: float) -> None:
        self._ttft.labels(model=model).observe(seconds)

    def add_tokens(self, model: str, n: int) -> None:
        if n > 0:
            self._tokens.labels(model=model).inc(n)

    def set_queue_depth(self, model: str, depth: int) -> None:
        self._queue.labels(model=model).set(depth)

    def set_loaded(self, count: int) -> None:
        self._loaded.set(count)

    def observe_load(self, model: str, seconds: float) -> None:
        self._load.labels(model=model).observe(seconds)

    def watch_batches(self, state: State) -> None:
        """Report the batch sizes of the batching backends loaded in ``state.registry`` (once it is set)."""
        self.registry.register(_BatchSizes(state))
        self.registry.register(_Endpoints(state))
        self.registry.register(_Drafts(state))

    def exposition(self, accept: str | None = None) -> tuple[bytes, str]:
        """The registry rendered for a scrape, and its content type (OpenMetrics when the scraper asks)."""
        encoder, content_type = choose_encoder(accept or "")
        return encoder(self.registry), content_type


@runtime_checkable
class ReportsBatches(Protocol):
    """A backend that runs the work of concurrent requests together (the embeddings backends)."""

    def batch_sizes(self) -> dict[int, int]:
        """Batches run since the model was loaded, by size (inputs per batch). Cheap: called on the loop."""
        ...


class _BatchSizes:
    """``syn4pse_batch_size``: a histogram of inputs per engine batch, per model, read at scrape time.

    A count below the requests served, or batches in buckets above 1, shows that requests were batched
    together. The series starts again from zero when its model is reloaded, as a restarted counter does.
    """

    def __init__(self, state: State) -> None:
        self._state = state

    def describe(self) -> list[Metric]:
        return [self._family()]

    @staticmethod
    def _family() -> HistogramMetricFamily:
        return HistogramMetricFamily("syn4pse_batch_size", "Inputs per engine batch, by model, for backends that "
                                     "batch concurrent requests together.", labels=["model"])

    def collect(self) -> Iterator[Metric]:
        family = self._family()
        registry: Registry | None = getattr(self._state, "registry", None)
        backends = registry.backends() if registry is not None else {}
        for name, backend in sorted(backends.items()):
            if not isinstance(backend, ReportsBatches):
                continue
            sizes = backend.batch_sizes()
            buckets: list[tuple[str, float]] = [
                (str(float(bound)), float(sum(n for size, n in sizes.items() if size <= bound)))
                for bound in _BATCH_BUCKETS]
            buckets.append(("+Inf", float(sum(sizes.values()))))
            family.add_metric([name], buckets, sum_value=float(sum(size * n for size, n in sizes.items())))
        yield family


class _Endpoints:
    """The replicas of the loaded upstream models, read at scrape time: ``syn4pse_upstream_up`` (1 while
    a replica may take requests), ``syn4pse_upstream_outstanding``, and the counters
    ``syn4pse_upstream_requests_total`` and ``syn4pse_upstream_failures_total``, by model and endpoint."""

    def __init__(self, state: State) -> None:
        self._state = state

    def describe(self) -> list[Metric]:
        return list(self._families())

    @staticmethod
    def _families() -> tuple[GaugeMetricFamily, GaugeMetricFamily, CounterMetricFamily, CounterMetricFamily]:
        labels = ["model", "endpoint"]
        return (GaugeMetricFamily("syn4pse_upstream_up", "Whether the upstream replica takes requests (1) or is "
                                  "down or has its circuit open (0).", labels=labels),
                GaugeMetricFamily("syn4pse_upstream_outstanding", "Requests in flight to the upstream replica.",
                                  labels=labels),
                CounterMetricFamily("syn4pse_upstream_requests", "Requests sent to the upstream replica (each "
                                    "try counts).", labels=labels),
                CounterMetricFamily("syn4pse_upstream_failures", "Tries the upstream replica failed (5xx, "
                                    "broken or refused connections, timeouts).", labels=labels))

    def collect(self) -> Iterator[Metric]:
        up, outstanding, requests, failures = families = self._families()
        registry: Registry | None = getattr(self._state, "registry", None)
        backends = registry.backends() if registry is not None else {}
        for name, backend in sorted(backends.items()):
            if not isinstance(backend, ReportsEndpoints):
                continue
            for endpoint in backend.endpoints():
                labels = [name, str(endpoint["url"])]
                up.add_metric(labels, 1.0 if endpoint["state"] in ("up", "trial") else 0.0)
                outstanding.add_metric(labels, float(cast(int, endpoint["outstanding"])))
                requests.add_metric(labels, float(cast(int, endpoint["requests"])))
                failures.add_metric(labels, float(cast(int, endpoint["failures"])))
        yield from families


class _Drafts:
    """``syn4pse_draft_tokens_total`` and ``syn4pse_draft_tokens_accepted_total``: what speculative decoding
    drafted and what of it the model kept, by model, read at scrape time (from zero after a reload)."""

    def __init__(self, state: State) -> None:
        self._state = state

    def describe(self) -> list[Metric]:
        return list(self._families())

    @staticmethod
    def _families() -> tuple[CounterMetricFamily, CounterMetricFamily]:
        return (CounterMetricFamily("syn4pse_draft_tokens", "Tokens drafted by speculative decoding, by model.",
                                    labels=["model"]),
                CounterMetricFamily("syn4pse_draft_tokens_accepted", "Drafted tokens the model kept, by model.",
                                    labels=["model"]))

    def collect(self) -> Iterator[Metric]:
        drafted, accepted = families = self._families()
        registry: Registry | None = getattr(self._state, "registry", None)
        for name, backend in sorted((registry.backends() if registry is not None else {}).items()):
            if isinstance(backend, ReportsDrafts):
                made, kept = backend.draft_tokens()
                drafted.add_metric([name], float(made))
                accepted.add_metric([name], float(kept))
        yield from families


# --------------------------------------------------------------------------------------------------
# What routes call


def metrics_of(connection: ASGIConnection[Any, Any, Any, Any]) -> Metrics:
    metrics: Metrics = connection.app.state.metrics
    return metrics


def request_id_of(connection: ASGIConnection[Any, Any, Any, Any]) -> str:
    """This request's id (``x-request-id``), for error bodies and log lines; "" outside the middleware."""
    return str(connection.scope["state"].get(REQUEST_ID_KEY, ""))


def set_request_model(connection: ASGIConnection[Any, Any, Any, Any], name: str) -> None:
    """Label this request's metrics and access-log line with the model it asked for.

    Stored as the configured model the name reaches, so aliases fold into one series; a name no model
    answers to is stored as "", so clients cannot mint label values (and series) at will.
    """
    registry: Registry | None = getattr(connection.app.state, "registry", None)
    connection.scope["state"][MODEL_KEY] = name if registry is None else model_label(registry, name)


def model_label(registry: Registry, name: str) -> str:
    """The ``model`` label of a request for ``name``: the configured model it reaches, "" for a name no
    model answers to (so clients cannot mint label values, and series, at will)."""
    try:
        return registry.resolve(name)
    except GatewayError:
        return ""


class GenerationMeter:
    """One generation's share of the metrics: time to first token at its first chunk, tokens at its end.

    Time to first token is taken once per request (the first token of any of its generations) and
    counted from the request's arrival, so it includes the body upload, queueing and a model load:
    the wait a client sees.
    """

    def __init__(self, metrics: Metrics, model: str, state: dict[str, Any]) -> None:
        self._metrics = metrics
        self._model = model
        self._state = state
        self._tokens = 0

    def chunk(self, completion_tokens: int) -> None:
        """A chunk arrived; ``completion_tokens`` is the generation's running count, as backends report it."""
        if not self._state.get(_FIRST_TOKEN_KEY):
            self._state[_FIRST_TOKEN_KEY] = True
            started = self._state.get(STARTED_KEY)
            if started is not None:
                self._metrics.observe_ttft(self._model, time.perf_counter() - started)
        self._tokens = completion_tokens

    def end(self) -> None:
        """The generation finished or was cut short: count its tokens. Safe to call more than once."""
        self._metrics.add_tokens(self._model, self._tokens)
        self._tokens = 0


def meter_generation(connection: ASGIConnection[Any, Any, Any, Any]) -> GenerationMeter:
    """A meter for one generation of this request, under the model set by :func:`set_request_model`."""
    state: dict[str, Any] = connection.scope["state"]
    return GenerationMeter(metrics_of(connection), str(state.get(MODEL_KEY, "")), state)


@get("/metrics", include_in_schema=False)
async def metrics_endpoint(request: Request[Any, Any, Any]) -> Response[bytes]:
    """Prometheus' scrape target."""
    body, content_type = metrics_of(request).exposition(request.headers.get("accept"))
    return Response(body, media_type=content_type)


# --------------------------------------------------------------------------------------------------
# The middleware


def _request_id(headers: list[tuple[bytes, bytes]]) -> str:
    for name, value in headers:
        if name.lower() == b"x-request-id":
            candidate = value.decode("latin-1")
            if _VALID_REQUEST_ID.fullmatch(candidate):
                return candidate
            break
    return uuid.uuid4().hex


def _with_request_id(headers: list[tuple[bytes, bytes]], request_id: bytes) -> list[tuple[bytes, bytes]]:
    if any(name.lower() == b"x-request-id" for name, _ in headers):
        return headers  # the route set its own
    return [*headers, (b"x-request-id", request_id)]


class ObservabilityMiddleware:
    """Request ids, timing, metrics and one JSON access-log line for every HTTP request and WebSocket.

    A plain ASGI app wrapped around the app's whole handler (see the module docstring for why).
    """

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == ScopeType.HTTP:
            await self._http(scope, receive, send)
        elif scope["type"] == ScopeType.WEBSOCKET:
            await self._websocket(scope, receive, send)
        else:
            await self.app(scope, receive, send)

    @staticmethod
    def _begin(scope: Scope) -> tuple[str, float, str, dict[str, Any]]:
        """Give the request its id and start time in scope state; the raw path before routing rewrites it."""
        headers = list(scope["headers"])
        scope["headers"] = headers
        state: dict[str, Any] = scope.setdefault("state", {})
        request_id = state[REQUEST_ID_KEY] = _request_id(headers)
        started = state[STARTED_KEY] = time.perf_counter()
        return request_id, started, scope["path"], state

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        request_id, started, path, state = self._begin(scope)
        encoded_id = request_id.encode("latin-1")
        status = 500  # what the server answers if the app fails before it responds
        finished: float | None = None

        async def send_with_id(message: Message) -> None:
            nonlocal status, finished
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = _with_request_id(list(message.get("headers", ())), encoded_id)
            elif message["type"] == "http.response.body" and not message.get("more_body", False):
                finished = time.perf_counter()  # a stream's end, not the background work after it
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            seconds = (finished or time.perf_counter()) - started
            route = scope.get("path_template") or UNMATCHED_ROUTE
            model = str(state.get(MODEL_KEY, ""))
            self.metrics.observe_request(route, model, status, seconds)
            _log_access(scope, request_id, str(scope.get("method", "")), path, route, status, seconds, model)

    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The id in state and on the handshake; one line at close, with the close code as its status."""
        request_id, started, path, state = self._begin(scope)
        encoded_id = request_id.encode("latin-1")
        accepted = False
        status: int | None = None

        async def send_with_id(message: Message) -> None:
            nonlocal accepted, status
            if message["type"] == "websocket.accept":
                accepted = True
                message["headers"] = _with_request_id(list(message.get("headers", ())), encoded_id)
            elif message["type"] == "websocket.close" and status is None:
                status = message.get("code", 1000) if accepted else 403  # a refused handshake is a 403
            elif message["type"] == "websocket.http.response.start":
                status = message["status"]
            await send(message)

        async def receive_close(*args: Any) -> ReceiveMessage:
            nonlocal status
            message = await receive(*args)
            if message["type"] == "websocket.disconnect" and status is None:
                status = message.get("code", 1005)
            return message

        try:
            await self.app(scope, receive_close, send_with_id)
        finally:
            seconds = time.perf_counter() - started
            route = scope.get("path_template") or UNMATCHED_ROUTE
            _log_access(scope, request_id, "WS", path, route, status, seconds, str(state.get(MODEL_KEY, "")))


def _log_access(scope: Scope, request_id: str, method: str, path: str, route: str, status: int | None,
                seconds: float, model: str) -> None:
    if not access_log.isEnabledFor(logging.INFO):
        return
    client = scope.get("client")
    line = {
        "ts": datetime.fromtimestamp(time.time() - seconds, UTC).isoformat(timespec="milliseconds"),
        "request_id": request_id,
        "method": method,
        "path": path,
        "route": route,
        "status": status,
        "duration_ms": round(seconds * 1000, 2),
        "model": model,
        "client": client[0] if client else None,
    }
    access_log.info(_json.encode(line).decode())


# --------------------------------------------------------------------------------------------------
# Plain-text logs

_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f\u0085\u2028\u2029]")


def one_line(text: str) -> str:
    """``text`` with line breaks and other control characters escaped (``\\n``, ``\\x1b``): a path,
    model name or header a client chose cannot start a forged log line or move the terminal's cursor."""
    return _UNPRINTABLE.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), text)


class OneLineFormatter(logging.Formatter):
    """Every record's message on one line, whatever client text it carries; a traceback that follows
    it is the server's own and keeps its lines."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        record.message = one_line(record.message)
        return super().formatMessage(record)


# --------------------------------------------------------------------------------------------------
# Wiring


def instrument(app: Litestar, metrics: Metrics | None = None) -> Metrics:
    """Add metrics, ``GET /metrics``, request ids and the access log to a built app; returns its Metrics.

    Pass ``metrics`` to share one instance with code built before the app (the registry's load hooks).
    """
    metrics = metrics or Metrics()
    app.state.metrics = metrics
    metrics.watch_batches(app.state)
    app.register(metrics_endpoint)
    app.asgi_handler = ObservabilityMiddleware(app.asgi_handler, metrics)
    return metrics
