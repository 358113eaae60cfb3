"""pipecat's OpenAI Realtime services given only the gateway's address (``/v1/realtime``), in a small pipeline
(no transport, no room) fed a spoken question at the pace a microphone gives it: what pipecat makes of the
server's events, as frames.

``OpenAIRealtimeLLMService`` parses every server event strictly (pydantic) and takes any ``error`` event as
fatal, so a wrong field or order on the server shows as an ``ErrorFrame`` or a missing frame here."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from conftest import QUESTION, SPOKEN, SocketRecorder, check_answer_speech, similarity
from pipecat.adapters.llm.schemas.function_schema import FunctionSchema
from pipecat.adapters.llm.schemas.tools_schema import ToolsSchema
from pipecat.audio.vad.silero import SileroVADAnalyzer
from pipecat.frames.frames import (
    Frame,
    FunctionCallResultFrame,
    InputAudioRawFrame,
    LLMFullResponseEndFrame,
    LLMFullResponseStartFrame,
    LLMRunFrame,
    LLMTextFrame,
    ProposedUserStartedSpeakingFrame,
    ProposedUserStoppedSpeakingFrame,
    TranscriptionFrame,
    TTSAudioRawFrame,
    TTSStartedFrame,
    TTSStoppedFrame,
    TTSTextFrame,
    VADUserStoppedSpeakingFrame,
)
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.processors.aggregators.llm_response_universal import LLMContextAggregatorPair
from pipecat.processors.audio.vad_processor import VADProcessor
from pipecat.services.llm_service import FunctionCallParams
from pipecat.services.openai.realtime import events
from pipecat.services.openai.realtime.llm import OpenAIRealtimeLLMService
from pipecat.services.openai.stt import OpenAIRealtimeSTTService
from test_pipecat import _microphone, _run, _Tap

pytestmark = pytest.mark.timeout(180)

RATE = 24000


def _real_time(pcm: bytes, rate: int) -> list[Frame | float]:
    """20 ms audio frames at the pace a microphone gives them (server VAD weighs pauses as they come)."""
    return [item if isinstance(item, Frame) else 0.02 for item in _microphone(pcm, rate)]


def _ws(gateway: Any) -> str:
    return gateway.url.replace("http://", "ws://") + "/v1/realtime"


def _realtime_llm(gateway: Any) -> OpenAIRealtimeLLMService:
    """The service as pipecat's example sets it up: server VAD, input transcription (gpt-realtime-whisper,
    pipecat's default), the default model (gpt-realtime-2.1), and a short answer."""
    properties = events.SessionProperties(
        instructions="Answer in one short sentence.", max_output_tokens=24,
        audio=events.AudioConfiguration(input=events.AudioInput(
            transcription=events.InputAudioTranscription(), turn_detection=events.TurnDetection())))
    return OpenAIRealtimeLLMService(api_key="sk-test", base_url=_ws(gateway),
                                    settings=OpenAIRealtimeLLMService.Settings(session_properties=properties))


def test_a_spoken_question_is_heard_and_answered_in_speech(gateway: Any, question_24k: bytes) -> None:
    """The user's words come back as a TranscriptionFrame (upstream, as pipecat pushes it), and the answer as
    TTS audio frames between TTSStarted and TTSStopped, with its transcript as text frames."""
    llm = _realtime_llm(gateway)
    upstream = _Tap(lambda _: False)  # before the service: what it pushes upstream
    downstream = _Tap(lambda fs: any(isinstance(f, LLMFullResponseEndFrame) for f in fs))
    asyncio.run(_run([upstream, llm, downstream], _real_time(question_24k, RATE), downstream, sample_rate=RATE,
                     within=60))
    heard = [f for f in upstream.frames if isinstance(f, TranscriptionFrame)]
    assert len(heard) == 1, [type(f).__name__ for f in upstream.frames]
    assert similarity(QUESTION, heard[0].text) > 0.8, heard[0].text

    out = downstream.frames
    kinds = [type(f).__name__ for f in out]
    audio = [f for f in out if isinstance(f, TTSAudioRawFrame)]
    assert audio, kinds
    assert {(f.sample_rate, f.num_channels) for f in audio} == {(RATE, 1)}
    first, last = out.index(audio[0]), out.index(audio[-1])
    started = [i for i, f in enumerate(out) if isinstance(f, TTSStartedFrame)]
    stopped = [i for i, f in enumerate(out) if isinstance(f, TTSStoppedFrame)]
    assert len(started) == 1 and started[0] < first and len(stopped) == 1 and stopped[0] > last, kinds
    assert any(isinstance(f, LLMFullResponseStartFrame) for f in out[:first]), kinds
    turn = [type(f) for f in out[:first] if isinstance(f, (ProposedUserStartedSpeakingFrame,
                                                           ProposedUserStoppedSpeakingFrame))]
    assert turn == [ProposedUserStartedSpeakingFrame, ProposedUserStoppedSpeakingFrame], kinds  # the server's VAD

    said = "".join(f.text for f in out if isinstance(f, TTSTextFrame))
    assert said.strip(), kinds
    assert "".join(f.text for f in out if isinstance(f, LLMTextFrame)) == said  # the same transcript, twice
    check_answer_speech(gateway, b"".join(f.audio for f in audio), RATE, said)


def _realtime_socket(recorder: SocketRecorder, since: int) -> SocketRecorder.Connection:
    """The one realtime connection the service opened after ``since``."""
    (conn,) = [c for c in recorder.connections[since:] if c.path.startswith("/v1/realtime")]
    return conn


def test_a_function_call_round_trip(gateway: Any, socket_recorder: SocketRecorder) -> None:
    """The model is made to call a registered function (``tool_choice: required``); pipecat runs it, sends its
    result as a ``function_call_output`` for that call, and asks for a second response, which answers in
    text from it (the handler turns tool use off first, as an app would to stop a forced call looping)."""
    llm = OpenAIRealtimeLLMService(
        api_key="sk-test", base_url=socket_recorder.url + "/v1/realtime",
        settings=OpenAIRealtimeLLMService.Settings(session_properties=events.SessionProperties(
            # Room for the whole call: sampled, the city can come out long ("Paris, France"), and a call cut
            # short by the budget has arguments that are not JSON.
            output_modalities=["text"], max_output_tokens=64, tool_choice="required")))
    calls: list[dict[str, Any]] = []

    async def get_weather(params: FunctionCallParams) -> None:
        calls.append(dict(params.arguments))
        await llm.send_client_event(events.SessionUpdateEvent(session=events.SessionProperties(tool_choice="none")))
        await params.result_callback({"city": params.arguments.get("city"), "forecast": "sunny-and-19C"})

    llm.register_function("get_weather", get_weather)
    weather = FunctionSchema(name="get_weather", description="The weather in a city.",
                             properties={"city": {"type": "string"}}, required=["city"])
    context = LLMContext(messages=[{"role": "user", "content": "What is the weather in Paris?"}],
                         tools=ToolsSchema(standard_tools=[weather]))
    pair = LLMContextAggregatorPair(context)
    tap = _Tap(lambda fs: sum(isinstance(f, LLMFullResponseEndFrame) for f in fs) >= 2)
    since = len(socket_recorder.connections)
    asyncio.run(_run([pair.user(), llm, tap, pair.assistant()], [LLMRunFrame()], tap, sample_rate=RATE, within=60))

    assert len(calls) == 1 and isinstance(calls[0].get("city"), str), calls
    conn = _realtime_socket(socket_recorder, since)
    kinds = [e["type"] for e in conn.sent]
    (output,) = [i for i, e in enumerate(conn.sent) if e["type"] == "conversation.item.create"
                 and e["item"]["type"] == "function_call_output"]
    (call,) = [e["item"] for e in conn.received if e["type"] == "response.output_item.done"
               and e["item"]["type"] == "function_call"]
    item = conn.sent[output]["item"]
    assert item["call_id"] == call["call_id"] and "sunny-and-19C" in item["output"], item
    assert call["name"] == "get_weather" and json.loads(call["arguments"]) == calls[0]
    creates = [i for i, kind in enumerate(kinds) if kind == "response.create"]
    assert len(creates) == 2 and creates[0] < output < creates[1], kinds  # the second asked for after the output
    done = [e["response"] for e in conn.received if e["type"] == "response.done"]
    assert len(done) == 2 and done[0]["status"] == "completed", done
    assert done[1]["status"] in ("completed", "incomplete"), done[1]  # incomplete: at max_output_tokens
    (taken,) = [e["item"] for e in conn.received if e["type"] == "conversation.item.added"
                and e["item"]["type"] == "function_call_output"]
    assert taken["call_id"] == call["call_id"] and taken["output"] == item["output"]  # in the conversation
    answer = "".join(f.text for f in tap.frames[[type(f) for f in tap.frames].index(FunctionCallResultFrame):]
                     if isinstance(f, LLMTextFrame))
    assert answer.strip() and answer == done[1]["output"][0]["content"][0]["text"]
    assert not [e for e in conn.received if e["type"] == "error"]


def test_realtime_stt_with_local_vad(gateway: Any, speech_16k: bytes) -> None:
    """``OpenAIRealtimeSTTService`` on ``?intent=transcription`` with its defaults (gpt-realtime-whisper, no
    server VAD): pipecat's Silero VAD ends the speech, the service commits the buffer, and what was said
    comes back as one TranscriptionFrame for that commit."""
    stt = OpenAIRealtimeSTTService(api_key="sk-test", base_url=_ws(gateway))

    def heard_all(frames: list[Frame]) -> bool:
        return similarity(SPOKEN, " ".join(f.text for f in frames if isinstance(f, TranscriptionFrame))) > 0.8

    frames = asyncio.run(_run([VADProcessor(vad_analyzer=SileroVADAnalyzer()), stt], _real_time(speech_16k, 16000),
                              heard_all, within=30))
    finals = [f for f in frames if isinstance(f, TranscriptionFrame)]
    transcript = " ".join(f.text for f in finals)
    assert similarity(SPOKEN, transcript) > 0.8, transcript
    stops = [i for i, f in enumerate(frames) if isinstance(f, VADUserStoppedSpeakingFrame)]
    assert len(stops) == len(finals), [type(f).__name__ for f in frames if not isinstance(f, InputAudioRawFrame)]
    assert all(frames.index(final) > stop for final, stop in zip(finals, stops, strict=True))  # each after its commit
    assert all(f.result["item_id"] and f.result["usage"]["seconds"] > 1 for f in finals), finals[0].result
