"""LiteLLM's OpenAI provider with ``api_base``: a streamed chat, the tool loop of its docs, embeddings,
speech and transcription."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import litellm
from recording import RecordingProxy, tool_result_reached_next_request

litellm.telemetry = False


def test_streamed_completion(base_url: str) -> None:
    chunks = list(litellm.completion(model="openai/gpt-4o-mini", api_base=base_url, api_key="sk-test",
                                     messages=[{"role": "user", "content": "Tell me about the moon."}],
                                     stream=True, max_tokens=24, temperature=0))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert len(chunks) > 3 and text.strip()
    assert chunks[-1].choices[0].finish_reason in ("stop", "length")


WEATHER_TOOL = {"type": "function", "function": {
    "name": "get_current_weather", "description": "Get the current weather in a given location",
    "parameters": {"type": "object", "properties": {
        "location": {"type": "string", "description": "The city and state, e.g. San Francisco, CA"},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}}, "required": ["location"]}}}


def test_tool_loop_as_the_docs_show(proxy: RecordingProxy, base_url: str) -> None:
    calls: list[dict[str, Any]] = []

    def get_current_weather(location: str, unit: str = "fahrenheit") -> str:
        calls.append({"location": location, "unit": unit})
        return json.dumps({"location": location, "temperature": "72", "unit": unit, "reading": "gauge 6120"})

    common: dict[str, Any] = {"model": "openai/gpt-4o-mini", "api_base": base_url, "api_key": "sk-test",
                              "max_tokens": 60, "temperature": 0}
    messages: list[Any] = [{"role": "user", "content": "What's the weather like in Boston?"}]
    since = len(proxy.requests)
    response = litellm.completion(messages=messages, tools=[WEATHER_TOOL],
                                  tool_choice={"type": "function", "function": {"name": "get_current_weather"}},
                                  **common)
    response_message = response.choices[0].message
    tool_calls = response_message.tool_calls
    assert tool_calls
    messages.append(response_message)  # the LiteLLM Message object itself, as its docs append it
    for tool_call in tool_calls:
        args = json.loads(tool_call.function.arguments)
        messages.append({"tool_call_id": tool_call.id, "role": "tool", "name": tool_call.function.name,
                         "content": get_current_weather(**args)})
    assert calls and isinstance(calls[0]["location"], str) and calls[0]["unit"] in ("celsius", "fahrenheit")
    second = litellm.completion(messages=messages, **common)
    assert second.choices[0].message.content
    sent = tool_result_reached_next_request(proxy, since, "gauge 6120")
    assert sent["messages"][1]["tool_calls"][0]["id"] == tool_calls[0].id


def test_streamed_tool_call_rebuilt_and_appended(proxy: RecordingProxy, base_url: str) -> None:
    common: dict[str, Any] = {"model": "openai/gpt-4o-mini", "api_base": base_url, "api_key": "sk-test",
                              "max_tokens": 60, "temperature": 0}
    messages: list[Any] = [{"role": "user", "content": "What's the weather like in Denver?"}]
    since = len(proxy.requests)
    chunks = list(litellm.completion(messages=messages, tools=[WEATHER_TOOL], tool_choice="required", stream=True,
                                     **common))
    rebuilt = litellm.stream_chunk_builder(chunks, messages=messages)
    message = rebuilt.choices[0].message
    assert message.tool_calls and message.tool_calls[0].function.name == "get_current_weather"
    assert isinstance(json.loads(message.tool_calls[0].function.arguments)["location"], str)
    messages.append(message)
    messages.append({"tool_call_id": message.tool_calls[0].id, "role": "tool", "name": "get_current_weather",
                     "content": "Clear sky, 18 degrees (gauge 7405)."})
    second = litellm.completion(messages=messages, **common)
    assert second.choices[0].message.content
    tool_result_reached_next_request(proxy, since, "gauge 7405")


def _cosine(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True)) / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))


def test_embedding(base_url: str) -> None:
    r = litellm.embedding(model="openai/text-embedding-3-small", api_base=base_url, api_key="sk-test",
                          input=["A dog runs in the park.", "A puppy plays on the grass.", "Tax law changed."])
    vectors = [d["embedding"] for d in r.data]
    assert len(vectors) == 3
    assert _cosine(vectors[0], vectors[1]) > _cosine(vectors[0], vectors[2]) + 0.2
    assert r.usage is not None and r.usage.prompt_tokens > 0


def test_speech_then_transcription(tmp_path: Path, base_url: str) -> None:
    speech = litellm.speech(model="openai/tts-1", voice="alloy", input="The blue train leaves at seven.",
                            api_base=base_url, api_key="sk-test", response_format="wav")
    audio = tmp_path / "speech.wav"
    speech.stream_to_file(audio)
    assert audio.read_bytes()[:4] == b"RIFF"
    with audio.open("rb") as f:
        heard = litellm.transcription(model="openai/whisper-1", file=f, api_base=base_url, api_key="sk-test")
    words = heard.text.lower()
    assert "train" in words and ("seven" in words or "7" in words), heard.text
