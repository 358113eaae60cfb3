"""Deepgram's live transcription WebSocket: ``/v1/listen``.

Auth may come as a ``token``/``bearer`` subprotocol; the one the client offered is echoed in the
handshake, or browsers abort. Client messages: audio (binary), ``KeepAlive``, ``Finalize``,
``CloseStream`` (flush, final results, one ``Metadata``, close 1000). With neither audio nor
``KeepAlive`` for ``server.audio.listen_idle_seconds`` (10 s) the socket is closed as Deepgram does
(1011, NET-0001). A bad query string or model is accepted, then closed with 1008 and the reason; audio
that cannot be read closes it with 1008 and ``DATA-0000``. What a client may cost (``server.audio``):
a message over ``max_frame_bytes`` closes it with 1009, audio far ahead of real time is slowed down
(one message too long to pace is 1008), ``max_socket_seconds`` ends any socket (1008), and past
``max_live_sessions`` open sockets a new one is closed with 1008.
"""

from __future__ import annotations

from typing import Any

from litestar import WebSocket, websocket

from backends.audio_answers import LiveEvent
from compat.deepgram.common import iso_now, model_uuid
from compat.deepgram.listen import model_info
from compat.deepgram.live import (
    LiveParams,
    error_message,
    live_message,
    metadata_message,
    parse_client_message,
    parse_live_query,
)
from compat.errors import InvalidRequest
from compat.wire import ParamPolicy
from gateway.ownership import own
from gateway.routes.deepgram_request import query_of
from gateway.routes.live_socket import LiveSocket, serve_live
from gateway.serving import Serving, serving_of
from gateway.serving.live import LiveOptions, LiveSession

__all__ = ["HANDLERS"]


@websocket("/listen")
async def listen_live(socket: WebSocket[Any, Any, Any]) -> None:
    async def start(serving: Serving) -> LiveSocket:
        params = parse_live_query(query_of(socket), ParamPolicy(serving.config.server.unsupported_params))
        requested = params.model or serving.config.services.deepgram.listen_model
        session = own(socket, await serving.live.open(requested, _options(params)))
        return _ListenSocket(socket, session, params, requested)

    await serve_live(socket, start)


def _options(params: LiveParams) -> LiveOptions:
    return LiveOptions(interim_results=params.interim_results, endpointing_ms=params.endpointing_ms,
                       utterance_end_ms=params.utterance_end_ms, vad_events=params.vad_events,
                       language=params.language, prompt=params.prompt, encoding=params.encoding,
                       sample_rate=params.sample_rate, channels=params.channels)


class _ListenSocket(LiveSocket):
    """``/v1/listen``'s messages: ``Results``, ``SpeechStarted``, ``UtteranceEnd``, and ``Metadata`` last."""

    def __init__(self, socket: WebSocket[Any, Any, Any], session: LiveSession, params: LiveParams,
                 requested: str) -> None:
        super().__init__(socket, session, idle=serving_of(socket).config.server.audio.listen_idle_seconds)
        self._params = params
        self._uuid = model_uuid(session.model)
        self._info = model_info(requested, session.model, session.engine)

    def messages(self, event: LiveEvent) -> list[Any]:
        message = live_message(event, self._params, request_id=self.request_id, model_uuid=self._uuid,
                               model_info=self._info)
        return [] if message is None else [message]

    async def command(self, text: str) -> bool:
        try:
            command = parse_client_message(text)
        except InvalidRequest as e:
            await self.send(error_message(e.message, text))
            return False
        if command.type == "Finalize":
            await self.session.finalize()
        elif command.type == "CloseStream":
            await self.close_stream()
            return True
        elif command.type == "Configure":
            await self.send(error_message("Configure is not supported by this server.", text))
        return False

    async def last_words(self) -> None:
        await self.send(metadata_message(
            request_id=self.request_id, sha256=self.sha.hexdigest(), created=iso_now(),
            duration=self.session.duration, model_uuid=self._uuid, model_info=self._info))


HANDLERS: list[Any] = [listen_live]
