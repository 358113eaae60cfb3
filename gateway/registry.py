"""The model registry: names and aliases → loaded backends, handed out as leases.

A request *admits* itself to a model (at most ``concurrency`` at once, at most ``queue`` waiting,
for at most ``queue_timeout`` seconds — beyond that a 429 with ``Retry-After``), then the model is
*loaded* if it is not yet (its files fetched first if they come from Hugging Face; concurrent first
requests share one load). A failed fetch or load is reported (503 with the reason) and remembered for
the admin listing; the next request tries again. A model whose engine breaks while serving (its
thread died, a step poisoned or wedged it: :class:`~backends.base.ReportsHealth`) is unloaded at once
and marked failed with the reason; the next request loads it afresh, and the other models never notice.
No reason a client sees names a file's path (the log does). Idle models unload after their ``ttl``; when a limit
on loaded models or their memory is reached, the least recently used idle model makes room. An
unknown name is an error naming it, never a fallback to another model.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import time
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar

import compat.openai.upstream  # noqa: F401  (registers the OpenAI dialect upstream models speak)
from backends import catalog
from backends.base import (
    Backend,
    ChatBackend,
    EmbeddingBackend,
    ReportsDrafts,
    ReportsEndpoints,
    ReportsHealth,
    ReportsLoad,
    SpeechBackend,
    TranscriptionBackend,
    VadBackend,
    VisionBackend,
)
from backends.errors import DomainError, LoadFailed, without_paths
from backends.types import ModelType
from gateway.config import Config, ModelConfig
from gateway.errors import Busy, GatewayError, InvalidRequest, ModelNotFound, ModelUnavailable, from_domain
from gateway.sources import SourceState, download, has_files, local_files, source_state

__all__ = ["CHAT", "EMBEDDINGS", "OCR", "SPEECH", "TRANSCRIPTION", "VAD", "Admission", "Kind", "Lease", "ModelState",
           "Registry", "RegistryObserver"]

log = logging.getLogger("syn4pse.registry")

SWEEP_EVERY = 0.5
"""Seconds between two checks for idle models to unload."""

B = TypeVar("B", bound=Backend, covariant=True)
K = TypeVar("K", bound=Backend)


@dataclass(frozen=True, slots=True)
class Kind(Generic[B]):
    """A kind of model a request asks for: its configured type, and the Protocol its backend serves.

    Leases come typed by it (``Lease[ChatBackend]``), so no caller casts the backend it holds.
    """

    type: ModelType
    protocol: Any
    """The backend Protocol (a runtime-checkable class; typed Any since Protocols are not concrete)."""


CHAT: Kind[ChatBackend] = Kind(ModelType.LLM, ChatBackend)
EMBEDDINGS: Kind[EmbeddingBackend] = Kind(ModelType.EMBEDDINGS, EmbeddingBackend)
TRANSCRIPTION: Kind[TranscriptionBackend] = Kind(ModelType.STT, TranscriptionBackend)
SPEECH: Kind[SpeechBackend] = Kind(ModelType.TTS, SpeechBackend)
VAD: Kind[VadBackend] = Kind(ModelType.VAD, VadBackend)
OCR: Kind[VisionBackend] = Kind(ModelType.VISION, VisionBackend)


class ModelState(enum.StrEnum):
    NOT_DOWNLOADED = "not downloaded"
    DOWNLOADING = "downloading"
    AVAILABLE = "available"
    LOADING = "loading"
    LOADED = "loaded"
    FAILED = "failed"


class RegistryObserver(Protocol):
    """What the registry reports as it works (the metrics)."""

    def observe_load(self, model: str, seconds: float) -> None: ...

    def set_loaded(self, count: int) -> None: ...

    def set_queue_depth(self, model: str, depth: int) -> None: ...


@dataclass(eq=False)
class _Slot:
    name: str
    config: ModelConfig
    ttl: int
    concurrency: int
    queue_limit: int
    backend: Backend | None = None
    memory_mb: float = 0.0
    active: int = 0
    """Requests admitted (serving, or loading the model for themselves)."""
    waiters: deque[asyncio.Future[None]] = field(default_factory=deque)
    last_used: float = field(default_factory=time.monotonic)
    loading: asyncio.Task[Backend] | None = None
    pulling: asyncio.Task[None] | None = None
    progress: tuple[int, int] | None = None
    """Files fetched and files to fetch, while downloading."""
    error: str | None = None
    mean_service: float = 1.0
    """Moving average of how long a request holds the model (seconds), for Retry-After."""


class Lease(Generic[B]):
    """A hold on a loaded model; the model is not unloaded while a lease is out.

    Release it exactly once when the work is done (a second release does nothing). Whoever is handed a
    lease owns it: see :mod:`gateway.serving.owned` for streams, ``Registry.lease`` for a block.
    """

    def __init__(self, registry: Registry, slot: _Slot, requested: str, kind: Kind[B]) -> None:
        self._registry = registry
        self._slot = slot
        assert isinstance(slot.backend, kind.protocol)  # the registry checked the model's type
        self._backend: B = slot.backend
        self.requested = requested
        """The name the client used (an alias, perhaps), echoed back in responses."""
        self._since = time.monotonic()
        self._released = False

    @property
    def name(self) -> str:
        return self._slot.name

    @property
    def backend(self) -> B:
        return self._backend

    @property
    def released(self) -> bool:
        return self._released

    def release(self) -> None:
        if not self._released:
            self._released = True
            held = time.monotonic() - self._since
            self._slot.mean_service = 0.8 * self._slot.mean_service + 0.2 * held
            self._registry._leave(self._slot)


class Admission(Generic[B]):
    """A request's turn at a model, before the model is known to be loaded."""

    def __init__(self, registry: Registry, slot: _Slot, requested: str, kind: Kind[B]) -> None:
        self._registry = registry
        self._slot = slot
        self._requested = requested
        self._kind = kind

    async def load(self) -> Lease[B]:
        """The lease, once the model is loaded. On failure the turn is given back."""
        try:
            await self._registry._ensure_loaded(self._slot)
        except BaseException:
            self._registry._leave(self._slot)
            raise
        return Lease(self._registry, self._slot, self._requested, self._kind)

    def cancel(self) -> None:
        self._registry._leave(self._slot)


def _default_concurrency(config: Config, name: str) -> int:
    """Requests a model serves at once when it sets no ``concurrency``.

    An LLM: its ``parallel`` slots (admitting more would only make them wait inside the engine, out of the
    queue's reach). A batching embeddings model: enough to fill two of its batches, since batching needs
    requests in flight together. Anything else: ``server.default_concurrency``.
    """
    options = config.backend_options.get(name)
    slots = getattr(options, "parallel", None)
    if isinstance(slots, int):
        return slots
    batch = getattr(options, "max_batch_size", None)
    default = config.server.default_concurrency
    return max(default, 2 * batch) if isinstance(batch, int) else default


class Registry:
    def __init__(self, config: Config, observer: RegistryObserver | None = None) -> None:
        self._config = config
        self._observer = observer
        server = config.server
        self._slots = {
            name: _Slot(name, model,
                        ttl=server.model_ttl if model.ttl is None else model.ttl,
                        concurrency=model.concurrency or _default_concurrency(config, name),
                        queue_limit=server.queue_size if model.queue is None else model.queue)
            for name, model in config.models.items()
        }
        self._names: dict[str, str] = {}
        for name, model in config.models.items():
            self._names[name] = name
            for alias in model.aliases:
                self._names[alias] = name
        self._sweeper: asyncio.Task[None] | None = None
        self._unloading: set[asyncio.Task[None]] = set()

    # -- lookup -------------------------------------------------------------------------------------

    def resolve(self, name: str) -> str:
        """The canonical model name for ``name`` (a name or an alias)."""
        try:
            return self._names[name]
        except KeyError:
            raise ModelNotFound(name) from None

    def names(self) -> dict[str, str]:
        """Every name a client may use → the model it reaches."""
        return dict(self._names)

    def model_config(self, name: str) -> ModelConfig:
        return self._slots[self.resolve(name)].config

    def state(self, name: str) -> tuple[ModelState, str | None]:
        """The model's state and, when it failed, why."""
        slot = self._slots[self.resolve(name)]
        if slot.backend is not None:
            failure = _failure(slot.backend)
            if failure is not None:
                return ModelState.FAILED, _engine_failed(failure)
            return ModelState.LOADED, None
        if slot.progress is not None:
            return ModelState.DOWNLOADING, None
        if slot.loading is not None:
            return ModelState.LOADING, None
        if slot.error is not None:
            return ModelState.FAILED, slot.error
        present = source_state(slot.name, slot.config, self._config.models_dir)
        if present is SourceState.NOT_DOWNLOADED:
            return ModelState.NOT_DOWNLOADED, None
        if present is SourceState.MISSING:
            return ModelState.FAILED, "the model's files are missing"
        return ModelState.AVAILABLE, None

    def backends(self) -> dict[str, Backend]:
        """The loaded models' backends by model name, for metrics read from the engines at scrape time."""
        return {name: slot.backend for name, slot in self._slots.items() if slot.backend is not None}

    def describe(self) -> list[dict[str, Any]]:
        """Every configured model with its state, for the admin route and ``syn4pse models``."""
        now = time.monotonic()
        out = []
        for name, slot in self._slots.items():
            state, reason = self.state(name)
            entry: dict[str, Any] = {
                "id": name, "type": slot.config.type.value, "backend": slot.config.backend,
                "aliases": list(slot.config.aliases), "state": state.value, "ttl": slot.ttl,
                "active": slot.active, "waiting": len(slot.waiters),
                "idle_seconds": round(now - slot.last_used, 1) if slot.backend is not None else None,
                "memory_mb": round(slot.memory_mb, 1) if slot.backend is not None else None,
            }
            if isinstance(slot.backend, ReportsLoad):
                load = slot.backend.engine_load()
                entry["engine"] = {"slots": load.slots, "busy": load.busy, "peak_busy": load.peak}
            if isinstance(slot.backend, ReportsDrafts):
                drafted, kept = slot.backend.draft_tokens()
                entry["drafts"] = {"drafted": drafted, "accepted": kept}
            if isinstance(slot.backend, ReportsEndpoints):
                entry["endpoints"] = slot.backend.endpoints()
            if reason is not None:
                entry["reason"] = reason
            if slot.progress is not None:
                entry["progress"] = {"files_done": slot.progress[0], "files_total": slot.progress[1]}
            out.append(entry)
        return out

    def unready(self) -> dict[str, str]:
        """The models that keep the server from being ready, and why: a ``preload`` model not loaded, a
        model whose files are missing, a loaded upstream model with no replica taking requests."""
        problems = {}
        for model in self.describe():
            preload = self._config.models[model["id"]].preload
            if (preload and model["state"] != "loaded") or model["state"] == "failed":
                problems[model["id"]] = model.get("reason") or model["state"]
            elif "endpoints" in model and not any(e["state"] in ("up", "trial") for e in model["endpoints"]):
                problems[model["id"]] = "no upstream endpoint is up"
        return problems

    # -- admission ----------------------------------------------------------------------------------

    def _slot_for(self, name: str, model_type: ModelType, param: str) -> _Slot:
        try:
            slot = self._slots[self.resolve(name)]
        except ModelNotFound:
            raise ModelNotFound(name, param=param) from None
        if slot.config.type != model_type:
            raise InvalidRequest(
                f"The model '{name}' is a {slot.config.type.value} model; this endpoint needs a"
                f" {model_type.value} model.", param=param, code="model_not_supported")
        return slot

    def _busy(self, slot: _Slot, why: str) -> Busy:
        wait = slot.mean_service * (len(slot.waiters) + 1) / slot.concurrency
        return Busy(f"The model '{slot.name}' is busy: {why}. Retry after a moment.", retry_after=max(1.0, wait))

    async def admit(self, name: str, kind: Kind[K], *, param: str = "model") -> Admission[K]:
        """Take a turn at the model, waiting in its bounded queue if need be (429 past it)."""
        slot = self._slot_for(name, kind.type, param)
        if slot.active < slot.concurrency and not slot.waiters:
            slot.active += 1
            return Admission(self, slot, name, kind)
        if len(slot.waiters) >= slot.queue_limit:
            raise self._busy(slot, f"{slot.active} requests running and {len(slot.waiters)} waiting")
        turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        slot.waiters.append(turn)
        self._report_queue(slot)
        try:
            await asyncio.wait_for(asyncio.shield(turn), timeout=self._config.server.queue_timeout)
        except (TimeoutError, asyncio.CancelledError) as e:
            if turn.done() and not turn.cancelled():
                self._leave(slot)  # the turn came just as the wait ended: pass it on
            else:
                turn.cancel()
                with contextlib.suppress(ValueError):
                    slot.waiters.remove(turn)
            self._report_queue(slot)
            if isinstance(e, TimeoutError):
                raise self._busy(slot, f"no turn within {self._config.server.queue_timeout:g}s") from None
            raise
        self._report_queue(slot)
        return Admission(self, slot, name, kind)

    def _leave(self, slot: _Slot) -> None:
        """A turn ends: hand it to the first waiter, or free it."""
        slot.last_used = time.monotonic()
        while slot.waiters:
            turn = slot.waiters.popleft()
            if not turn.done():
                turn.set_result(None)
                self._report_queue(slot)
                return
        slot.active -= 1
        if slot.backend is not None and self._discard_if_failed(slot):
            return
        if slot.active == 0 and slot.ttl == 0 and slot.backend is not None:
            self._spawn_unload(slot)

    def _report_queue(self, slot: _Slot) -> None:
        if self._observer is not None:
            self._observer.set_queue_depth(slot.name, len(slot.waiters))

    async def acquire(self, name: str, kind: Kind[K], *, param: str = "model") -> Lease[K]:
        """Admit, then load: the model, ready to serve. Release with :meth:`Lease.release`."""
        admission = await self.admit(name, kind, param=param)
        return await admission.load()

    @contextlib.asynccontextmanager
    async def lease(self, name: str, kind: Kind[K], *, param: str = "model") -> AsyncIterator[Lease[K]]:
        """``async with registry.lease(name, CHAT) as lease``: acquire, and release on exit."""
        held = await self.acquire(name, kind, param=param)
        try:
            yield held
        finally:
            held.release()

    # -- loading and unloading ----------------------------------------------------------------------

    def _files_blocking(self, slot: _Slot) -> Path | None:
        if not has_files(slot.config):
            return None
        if slot.config.source.huggingface is None:
            return local_files(slot.name, slot.config, self._config.models_dir)

        def progress(done: int, total: int) -> None:
            slot.progress = (done, total)

        try:
            download(slot.name, slot.config, self._config.models_dir, progress=progress)
        finally:
            slot.progress = None
        return local_files(slot.name, slot.config, self._config.models_dir)

    def _load_blocking(self, slot: _Slot, files: Path | None) -> Backend:
        entry = catalog.find(slot.config.backend, slot.config.type)
        assert entry is not None  # checked when the config was read
        try:
            return entry.load(files, self._config.backend_options[slot.name])
        except GatewayError:
            raise
        except LoadFailed as e:
            log.error("model %s: the %s backend could not load %s: %s", slot.name, entry.name, files, e.message)
            raise ModelUnavailable(f"Model '{slot.name}' failed to load: {e.message}") from None
        except DomainError as e:
            raise from_domain(e) from None
        except Exception as e:
            log.exception("model %s: the %s backend failed to load", slot.name, entry.name)
            raise ModelUnavailable(f"Model '{slot.name}' failed to load ({type(e).__name__}).") from None

    async def _load(self, slot: _Slot) -> Backend:
        files = await asyncio.to_thread(self._files_blocking, slot)
        slot.memory_mb = float(slot.config.memory_mb or (0 if files is None else _size_mb(files)))
        await self._make_room(slot)
        started = time.perf_counter()
        backend = await asyncio.to_thread(self._load_blocking, slot, files)
        seconds = time.perf_counter() - started
        log.info("model %s: loaded with %s in %.2fs", slot.name, slot.config.backend, seconds)
        if self._observer is not None:
            self._observer.observe_load(slot.name, seconds)
        return backend

    async def _ensure_loaded(self, slot: _Slot) -> Backend:
        if slot.backend is not None and not self._discard_if_failed(slot):
            return slot.backend
        if slot.loading is None:
            slot.loading = asyncio.ensure_future(self._load(slot))
        task = slot.loading
        try:
            backend = await asyncio.shield(task)
        except GatewayError as e:
            e.message = without_paths(e.message)  # a library's words may name the files: the log keeps them
            slot.error = e.message
            raise
        finally:
            if slot.loading is task and task.done():
                slot.loading = None
        if slot.backend is None:
            slot.backend = backend
            slot.error = None
            self._report_loaded()
        return slot.backend

    def _loaded(self) -> list[_Slot]:
        return [s for s in self._slots.values() if s.backend is not None]

    async def _make_room(self, incoming: _Slot) -> None:
        """Unload least recently used idle models until ``incoming`` fits the limits."""
        server = self._config.server

        def over() -> bool:
            loaded = self._loaded()
            if server.max_loaded_models is not None and len(loaded) + 1 > server.max_loaded_models:
                return True
            used = sum(s.memory_mb for s in loaded)
            return server.max_models_memory_mb is not None and used + incoming.memory_mb > server.max_models_memory_mb

        while over():
            idle = [s for s in self._loaded() if s.active == 0 and s is not incoming]
            if not idle:
                raise Busy(f"Model '{incoming.name}' cannot be loaded now: the limit on loaded models is reached"
                           " and every loaded model is in use.", retry_after=5)
            victim = min(idle, key=lambda s: s.last_used)
            log.info("model %s: unloading (least recently used) to make room for %s", victim.name, incoming.name)
            await self._unload(victim)

    async def _unload(self, slot: _Slot) -> None:
        backend, slot.backend = slot.backend, None
        if backend is None:
            return
        self._report_loaded()
        await asyncio.to_thread(backend.close)
        log.info("model %s: unloaded", slot.name)

    def _discard_if_failed(self, slot: _Slot) -> bool:
        """Unload the model if its engine broke (True): it is marked failed, the next request loads it again.

        Requests still holding it have their own reference and fail on their own; its memory is freed in
        the background, so the next load need not wait for a wedged engine to let go.
        """
        backend = slot.backend
        failure = _failure(backend) if backend is not None else None
        if backend is None or failure is None:
            return False
        log.error("model %s: its engine failed (%s); unloading it, the next request loads it again", slot.name,
                  failure)
        slot.backend = None
        slot.error = _engine_failed(failure)
        self._report_loaded()
        task = asyncio.ensure_future(asyncio.to_thread(backend.close))
        self._unloading.add(task)
        task.add_done_callback(self._unloading.discard)
        return True

    def _spawn_unload(self, slot: _Slot) -> None:
        task = asyncio.ensure_future(self._unload(slot))
        self._unloading.add(task)
        task.add_done_callback(self._unloading.discard)

    def _report_loaded(self) -> None:
        if self._observer is not None:
            self._observer.set_loaded(len(self._loaded()))

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(SWEEP_EVERY)
            now = time.monotonic()
            for slot in self._loaded():
                if self._discard_if_failed(slot):
                    continue
                if slot.active == 0 and slot.ttl >= 0 and now - slot.last_used >= slot.ttl:
                    log.info("model %s: idle for %ds, unloading", slot.name, int(now - slot.last_used))
                    await self._unload(slot)

    # -- operator actions ---------------------------------------------------------------------------

    async def load(self, name: str) -> None:
        """Load a model now (admin route, ``preload``)."""
        slot = self._slots[self.resolve(name)]
        slot.last_used = time.monotonic()
        try:
            await self._ensure_loaded(slot)
        finally:
            slot.last_used = time.monotonic()

    async def unload(self, name: str) -> bool:
        """Unload a model now; False if requests are using it."""
        slot = self._slots[self.resolve(name)]
        if slot.active:
            return False
        await self._unload(slot)
        return True

    def pull(self, name: str) -> asyncio.Task[None] | None:
        """Start fetching the model's files (None: nothing to fetch); the listing shows the progress."""
        slot = self._slots[self.resolve(name)]
        if slot.config.source.huggingface is None:
            return None
        if slot.pulling is None or slot.pulling.done():
            slot.pulling = asyncio.ensure_future(self._pull(slot))
            # A failure is kept in the model's state for the listing; nobody awaits the task itself.
            slot.pulling.add_done_callback(lambda t: t.cancelled() or t.exception())
        return slot.pulling

    async def _pull(self, slot: _Slot) -> None:
        try:
            await asyncio.to_thread(self._files_blocking, slot)
            slot.error = None
        except GatewayError as e:
            slot.error = e.message
            raise

    async def start(self) -> None:
        """Begin unloading idle models, and load the ``preload`` ones (a failure is logged, not fatal)."""
        self._sweeper = asyncio.create_task(self._sweep())
        for name, slot in self._slots.items():
            if slot.config.preload:
                try:
                    await self.load(name)
                except GatewayError as e:
                    log.error("model %s: preload failed: %s", name, e.message)

    async def close(self) -> None:
        """Unload every model (on shutdown)."""
        if self._sweeper is not None:
            self._sweeper.cancel()
        for slot in self._slots.values():
            for task in (slot.loading, slot.pulling):
                if task is not None:
                    with contextlib.suppress(BaseException):
                        await task
            await self._unload(slot)


def _failure(backend: Backend) -> str | None:
    """Why a loaded model's engine can serve no more, if it says so."""
    return backend.failure if isinstance(backend, ReportsHealth) else None


def _engine_failed(failure: str) -> str:
    return f"The model's engine failed ({failure}); the next request loads it again."


def _size_mb(files: Path) -> float:
    """The model's size on disk, the first estimate of what it takes in memory."""
    if files.is_file():
        return files.stat().st_size / 2**20
    return sum(p.stat().st_size for p in files.rglob("*") if p.is_file()) / 2**20
