"""The model registry: names and aliases → loaded backends, handed out as leases.

A model loads on its first request (its files fetched first if they come from Hugging Face);
concurrent first requests share one load. A failed fetch or load is reported to that request and
remembered for ``/v1/models``-style listings, and the next request tries again. An unknown name is
an error naming it, never a fallback to another model.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from backends import catalog
from backends.base import Backend
from backends.errors import GatewayError, InvalidRequest, ModelNotFound, ModelUnavailable
from backends.types import ModelType
from gateway.config import Config, ModelConfig
from gateway.sources import SourceState, local_files, source_state

__all__ = ["Lease", "ModelState", "Registry"]

log = logging.getLogger("syn4pse.registry")


class ModelState(enum.StrEnum):
    NOT_DOWNLOADED = "not downloaded"
    DOWNLOADING = "downloading"
    AVAILABLE = "available"
    LOADING = "loading"
    LOADED = "loaded"
    FAILED = "failed"


@dataclass(eq=False)
class _Slot:
    name: str
    config: ModelConfig
    backend: Backend | None = None
    leases: int = 0
    last_used: float = field(default_factory=time.monotonic)
    loading: asyncio.Task[Backend] | None = None
    downloading: bool = False
    error: str | None = None


class Lease:
    """A hold on a loaded model; the model is not unloaded while a lease is out."""

    def __init__(self, slot: _Slot, requested: str) -> None:
        self._slot = slot
        self.requested = requested
        """The name the client used (an alias, perhaps), echoed back in responses."""
        self._released = False

    @property
    def name(self) -> str:
        return self._slot.name

    @property
    def backend(self) -> Backend:
        assert self._slot.backend is not None
        return self._slot.backend

    def release(self) -> None:
        if not self._released:
            self._released = True
            self._slot.leases -= 1
            self._slot.last_used = time.monotonic()


class Registry:
    def __init__(self, config: Config) -> None:
        self._config = config
        self._slots = {name: _Slot(name, model) for name, model in config.models.items()}
        self._names: dict[str, str] = {}
        for name, model in config.models.items():
            self._names[name] = name
            for alias in model.aliases:
                self._names[alias] = name

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
            return ModelState.LOADED, None
        if slot.downloading:
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

    # -- loading ------------------------------------------------------------------------------------

    def _load_blocking(self, slot: _Slot) -> Backend:
        models_dir = self._config.models_dir
        if slot.config.source.huggingface is not None:
            slot.downloading = True
        try:
            files = local_files(slot.name, slot.config, models_dir)
        finally:
            slot.downloading = False
        entry = catalog.find(slot.config.backend)
        assert entry is not None  # checked when the config was read
        started = time.perf_counter()
        try:
            backend = entry.load(files, self._config.backend_options[slot.name])
        except GatewayError:
            raise
        except Exception as e:
            log.exception("model %s: the %s backend failed to load", slot.name, entry.name)
            raise ModelUnavailable(f"Model '{slot.name}' failed to load ({type(e).__name__}).") from None
        log.info("model %s: loaded with %s in %.2fs", slot.name, entry.name, time.perf_counter() - started)
        return backend

    async def _ensure_loaded(self, slot: _Slot) -> Backend:
        if slot.backend is not None:
            return slot.backend
        if slot.loading is None:
            slot.loading = asyncio.ensure_future(asyncio.to_thread(self._load_blocking, slot))
        task = slot.loading
        try:
            backend = await asyncio.shield(task)
        except GatewayError as e:
            slot.error = e.message
            raise
        finally:
            if slot.loading is task and task.done():
                slot.loading = None
        slot.backend = backend
        slot.error = None
        return backend

    async def acquire(self, name: str, model_type: ModelType, *, param: str = "model") -> Lease:
        """Lease the model, loading it first if need be. Release with :meth:`Lease.release`."""
        try:
            canonical = self.resolve(name)
        except ModelNotFound:
            raise ModelNotFound(name, param=param) from None
        slot = self._slots[canonical]
        if slot.config.type != model_type:
            raise InvalidRequest(
                f"The model '{name}' is a {slot.config.type.value} model; this endpoint needs a"
                f" {model_type.value} model.", param=param, code="model_not_supported")
        slot.leases += 1
        try:
            await self._ensure_loaded(slot)
        except BaseException:
            slot.leases -= 1
            raise
        return Lease(slot, name)

    @contextlib.asynccontextmanager
    async def lease(self, name: str, model_type: ModelType) -> AsyncIterator[Lease]:
        """``async with registry.lease(name, type) as lease``: acquire, and release on exit."""
        held = await self.acquire(name, model_type)
        try:
            yield held
        finally:
            held.release()

    async def pull(self, name: str) -> None:
        """Fetch the model's files ahead of its first request."""
        slot = self._slots[self.resolve(name)]
        if slot.config.source.huggingface is None:
            return
        from gateway.sources import download

        await asyncio.to_thread(download, slot.name, slot.config, self._config.models_dir)

    async def close(self) -> None:
        """Unload every model (on shutdown)."""
        for slot in self._slots.values():
            if slot.loading is not None:
                with contextlib.suppress(BaseException):
                    await slot.loading
            if slot.backend is not None:
                backend, slot.backend = slot.backend, None
                await asyncio.to_thread(backend.close)
