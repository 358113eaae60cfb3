"""Deepgram Flux's conversational WebSocket: ``/v2/listen`` (messages: :mod:`compat.deepgram.flux`).

The same auth, limits and unsupported-parameter policy as ``/v1/listen`` (:mod:`gateway.routes.live_socket`);
``Connected`` goes out first. Flux has no ``KeepAlive``: a socket with no message for
``server.audio.flux_idle_seconds`` is closed (1011, NET-0001). A text message Flux does not know is a
fatal ``Error`` (``UNPARSABLE_CLIENT_MESSAGE``) and a close with 1008; a ``Configure`` that cannot be
applied is answered ``ConfigureFailure`` and changes nothing. ``CloseStream`` sends the last
``Update`` for the audio received, then closes the socket.
"""

from __future__ import annotations

from typing import Any

from litestar import WebSocket, websocket

from backends.audio_answers import LiveEvent
from compat.deepgram.flux import (
    UPDATE_EVERY_MS,
    CloseStream,
    ConfigureMessage,
    ConfigureSuccess,
    FluxParams,
    FluxTurns,
    Thresholds,
    parse_flux_message,
    parse_flux_query,
)
from compat.errors import InvalidRequest
from compat.wire import ParamPolicy
from gateway.ownership import own
from gateway.routes.deepgram_request import query_of
from gateway.routes.live_socket import LiveSocket, serve_live
from gateway.serving import Serving, serving_of
from gateway.serving.live import EndOfTurn, LiveOptions, LiveSession

__all__ = ["HANDLERS"]


@websocket("/listen")
async def flux_listen(socket: WebSocket[Any, Any, Any]) -> None:
    async def start(serving: Serving) -> LiveSocket:
        params = parse_flux_query(query_of(socket), ParamPolicy(serving.config.server.unsupported_params))
        session = own(socket, await serving.live.open(params.model, _options(params)))
        return _FluxSocket(socket, session, params)

    await serve_live(socket, start)


def _end_of_turn(thresholds: Thresholds) -> EndOfTurn:
    return EndOfTurn(threshold=thresholds.eot_threshold, eager_threshold=thresholds.eager_eot_threshold,
                     timeout_ms=thresholds.eot_timeout_ms)


def _prompt(keyterms: list[str]) -> str:
    return ", ".join(keyterms)


def _options(params: FluxParams) -> LiveOptions:
    return LiveOptions(interim_results=True, endpointing_ms=None, language="en",
                       prompt=_prompt(params.keyterms) or None, encoding=params.encoding,
                       sample_rate=params.sample_rate,
                       end_of_turn=_end_of_turn(params.thresholds), progress_ms=UPDATE_EVERY_MS)


class _FluxSocket(LiveSocket):
    def __init__(self, socket: WebSocket[Any, Any, Any], session: LiveSession, params: FluxParams) -> None:
        super().__init__(socket, session, idle=serving_of(socket).config.server.audio.flux_idle_seconds,
                         idle_reason="no message received")
        self._turns = FluxTurns(self.request_id, params.formatting, params.thresholds, params.keyterms)

    async def serve(self) -> None:
        await self.send(self._turns.connected)
        await super().serve()

    def messages(self, event: LiveEvent) -> list[Any]:
        return self._turns.messages(event)

    async def command(self, text: str) -> bool:
        try:
            message = parse_flux_message(text)
        except InvalidRequest as e:
            description = e.message
            await self.send(lambda: self._turns.fatal("UNPARSABLE_CLIENT_MESSAGE", description))
            await self.close(1008, "UNPARSABLE_CLIENT_MESSAGE")
            return True
        if isinstance(message, ConfigureMessage):
            await self._configure(message)
        elif isinstance(message, CloseStream):
            await self.close_stream()
            return True
        elif self._turns.in_turn:  # ForceEndTurn
            await self.session.end_turn()
        else:
            await self.send(lambda: self._turns.warning("FORCE_END_TURN_NO_ACTIVE_TURN",
                                                        "ForceEndTurn was sent with no turn under way."))
        return False

    async def _configure(self, message: ConfigureMessage) -> None:
        """Answer a ``Configure``; what it changed holds from the next audio on."""
        if isinstance(await self.send(lambda: self._turns.configure(message)), ConfigureSuccess):
            self.session.configure(end_of_turn=_end_of_turn(self._turns.thresholds),
                                   prompt=_prompt(self._turns.keyterms))


HANDLERS: list[Any] = [flux_listen]
