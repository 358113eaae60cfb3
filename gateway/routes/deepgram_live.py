"""Deepgram's live transcription WebSocket: ``/v1/listen``.

Auth may come as a ``token``/``bearer`` subprotocol; the one the client offered is echoed in the
handshake, or browsers abort. Client messages: audio (binary), ``KeepAlive``, ``Finalize``,
``CloseStream`` (flush, final results, one ``Metadata``, close 1000). With neither audio nor
``KeepAlive`` for 10 s the socket is closed as Deepgram does (1011, NET-0001).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections.abc import Callable
from typing import Any

import msgspec
import numpy as np
import numpy.typing as npt
from litestar import WebSocket, websocket
from litestar.exceptions import WebSocketDisconnect

from backends.audio_stream import ContainerStreamDecoder, RawStreamDecoder, StreamDecoder
from backends.base import TranscriptionBackend, VadBackend
from backends.errors import BadAudio, DomainError
from backends.types import ModelType
from compat.deepgram.common import iso_now, model_uuid, new_request_id
from compat.deepgram.listen import model_info
from compat.deepgram.live import (
    error_message,
    metadata_message,
    parse_client_message,
    parse_live_query,
    results_message,
    speech_started_message,
    utterance_end_message,
)
from compat.errors import GatewayError, InvalidRequest
from compat.wire import ParamPolicy
from gateway.config import Config
from gateway.errors import DEEPGRAM_FIELDS, from_domain
from gateway.live import Event, LiveOptions, LiveTranscriber, SpeechStarted, Transcript, UtteranceEnd
from gateway.registry import Lease, Registry
from gateway.routes.common import backend_as

__all__ = ["HANDLERS"]

log = logging.getLogger("syn4pse.deepgram.live")
IDLE_TIMEOUT = 10.0
_encoder = msgspec.json.Encoder()


def _subprotocol(socket: WebSocket[Any, Any, Any]) -> str | None:
    offered = [p.strip().lower() for p in socket.scope.get("subprotocols", [])]
    for name in ("token", "bearer"):
        if name in offered:
            return name
    return None


def _vad_name(config: Config, registry: Registry, stt: str) -> str:
    own = registry.model_config(stt).vad
    if own is not None:
        return own
    for name, model in config.models.items():
        if model.type == ModelType.VAD:
            return name
    raise InvalidRequest("Live transcription needs a vad model in syn4pse.yaml.", param="model")


class _Session:
    """One live socket: its leases, decoder, transcriber and the messages it sends."""

    def __init__(self, socket: WebSocket[Any, Any, Any], request_id: str) -> None:
        self.socket = socket
        self.request_id = request_id
        self.send_lock = asyncio.Lock()
        self.leases: list[Lease] = []
        self.sha = hashlib.sha256()
        self.closed = False
        self.metadata: Callable[[], Any] = lambda: None
        """The closing ``Metadata`` message, built when the stream ends."""
        self.pump: asyncio.Queue[Any] | None = None
        """Samples from a containerised stream's demuxer thread (None for raw audio)."""

    async def send(self, payload: Any) -> None:
        async with self.send_lock:
            if not self.closed:
                await self.socket.send_data(_encoder.encode(payload).decode(), mode="text")

    async def close(self, code: int, reason: str = "") -> None:
        async with self.send_lock:
            if not self.closed:
                self.closed = True
                with contextlib.suppress(Exception):
                    await self.socket.close(code=code, reason=reason[:120])


@websocket("/listen")
async def listen_live(socket: WebSocket[Any, Any, Any]) -> None:
    await socket.accept(subprotocols=_subprotocol(socket))
    session = _Session(socket, new_request_id())
    transcriber: LiveTranscriber | None = None
    decoder: StreamDecoder | None = None
    try:
        transcriber, decoder = await _start(session)
        await _serve(session, transcriber, decoder)
    except (GatewayError, DomainError) as caught:
        e = caught if isinstance(caught, GatewayError) else from_domain(caught, DEEPGRAM_FIELDS)
        await session.close(1008 if e.status < 500 else 1011, f"{e.message}")
    except WebSocketDisconnect:
        pass
    finally:
        if transcriber is not None:
            await transcriber.aclose()
        if isinstance(decoder, ContainerStreamDecoder):
            await asyncio.to_thread(decoder.close)
        for lease in session.leases:
            lease.release()
        await session.close(1000)


async def _start(session: _Session) -> tuple[LiveTranscriber, StreamDecoder]:
    socket = session.socket
    config: Config = socket.app.state.config
    registry: Registry = socket.app.state.registry
    query: dict[str, list[str]] = {}
    for key, value in socket.query_params.multi_items():
        query.setdefault(key, []).append(value)
    params = parse_live_query(query, ParamPolicy(config.server.unsupported_params))
    requested = params.model or config.services.deepgram.listen_model
    stt_lease = await registry.acquire(requested, ModelType.STT)
    session.leases.append(stt_lease)
    vad_lease = await registry.acquire(_vad_name(config, registry, stt_lease.name), ModelType.VAD)
    session.leases.append(vad_lease)
    uuid = model_uuid(stt_lease.name)
    info = model_info(requested, stt_lease.name, config.models[stt_lease.name].backend)

    async def emit(event: Event) -> None:
        if isinstance(event, SpeechStarted):
            await session.send(speech_started_message(event.timestamp))
        elif isinstance(event, UtteranceEnd):
            await session.send(utterance_end_message(event.last_word_end))
        elif isinstance(event, Transcript):
            await session.send(results_message(
                words=event.words, start=event.start, end=event.end, is_final=event.is_final,
                speech_final=event.speech_final, from_finalize=event.from_finalize, punctuate=params.punctuate,
                request_id=session.request_id, model_uuid=uuid, model_info=info, formatting=params.formatting))

    options = LiveOptions(interim_results=params.interim_results, endpointing_ms=params.endpointing_ms,
                          utterance_end_ms=params.utterance_end_ms, vad_events=params.vad_events,
                          language=params.language, prompt=params.prompt)
    transcriber = LiveTranscriber(backend_as(stt_lease, TranscriptionBackend), backend_as(vad_lease, VadBackend),
                                  options, emit)
    session.metadata = lambda: metadata_message(
        request_id=session.request_id, sha256=session.sha.hexdigest(), created=iso_now(),
        duration=transcriber.duration, model_uuid=uuid, model_info=info)
    if params.encoding is not None:
        return transcriber, RawStreamDecoder(params.encoding, params.sample_rate, params.channels)

    loop = asyncio.get_running_loop()
    pump: asyncio.Queue[npt.NDArray[np.float32] | BadAudio] = asyncio.Queue()
    def handoff(item: npt.NDArray[np.float32] | BadAudio) -> None:
        loop.call_soon_threadsafe(pump.put_nowait, item)

    decoder = ContainerStreamDecoder(handoff, handoff)
    session.pump = pump
    return transcriber, decoder


async def _serve(session: _Session, transcriber: LiveTranscriber, decoder: StreamDecoder) -> None:
    socket = session.socket
    pump = session.pump
    forwarder = asyncio.create_task(_forward(pump, transcriber, session)) if pump is not None else None
    try:
        while True:
            try:
                message = await asyncio.wait_for(socket.receive(), timeout=IDLE_TIMEOUT)
            except TimeoutError:
                await session.close(1011, "NET-0001: no audio or KeepAlive received for 10 seconds")
                return
            if message["type"] == "websocket.disconnect":
                raise WebSocketDisconnect(detail="client went away", code=message.get("code", 1000))
            data: bytes | None = message.get("bytes")  # type: ignore[assignment]
            text: str | None = message.get("text")  # type: ignore[assignment]
            if data is not None:
                if not data:  # the legacy end-of-stream signal
                    await _close_stream(session, transcriber, decoder, forwarder)
                    return
                session.sha.update(data)
                await transcriber.add_audio(decoder.feed(data))
                if transcriber.failure is not None:
                    raise transcriber.failure
            elif text is not None:
                try:
                    command = parse_client_message(text)
                except InvalidRequest as e:
                    await session.send(error_message(e.message, text))
                    continue
                if command.type == "Finalize":
                    await transcriber.finalize()
                elif command.type == "CloseStream":
                    await _close_stream(session, transcriber, decoder, forwarder)
                    return
                elif command.type == "Configure":
                    await session.send(error_message("Configure is not supported by this server.", text))
    finally:
        if forwarder is not None:
            forwarder.cancel()


async def _forward(pump: asyncio.Queue[Any], transcriber: LiveTranscriber, session: _Session) -> None:
    """Samples decoded on the demuxer thread → the transcriber; a decode failure closes the socket."""
    while True:
        item = await pump.get()
        if item is None:
            return
        if isinstance(item, BadAudio):
            await session.close(1008, f"DATA-0000: {item.message}")
            return
        await transcriber.add_audio(item)


async def _close_stream(session: _Session, transcriber: LiveTranscriber, decoder: StreamDecoder,
                        forwarder: asyncio.Task[None] | None) -> None:
    tail = await asyncio.to_thread(decoder.close)
    if forwarder is not None and session.pump is not None:
        session.pump.put_nowait(None)
        await forwarder
    await transcriber.add_audio(tail)
    await transcriber.close()
    await session.send(session.metadata())
    await session.close(1000)


HANDLERS: list[Any] = [listen_live]
