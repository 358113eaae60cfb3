"""The Groq SDK against the gateway: only its base URL changed."""

from __future__ import annotations

import httpx
import pytest
from conftest import Gateway
from groq import BadRequestError, Groq, NotFoundError

SENTENCE = "The quick brown fox jumps over the lazy dog near the river bank."


@pytest.fixture(scope="module")
def groq(gateway: Gateway) -> Groq:
    return Groq(api_key="gsk_test", base_url=gateway.url, max_retries=0)


def test_chat_has_groq_extras(groq: Groq) -> None:
    r = groq.chat.completions.create(model="llama-3.1-8b-instant", max_tokens=8, temperature=0,
                                     messages=[{"role": "user", "content": "Say hello."}])
    assert r.choices[0].message.content
    assert r.model == "llama-3.1-8b-instant"
    assert r.x_groq is not None and r.x_groq.id.startswith("req_")
    usage = r.usage
    assert usage is not None and usage.completion_tokens > 0
    for timing in (usage.queue_time, usage.prompt_time, usage.completion_time, usage.total_time):
        assert timing is not None and timing >= 0
    assert usage.total_time == pytest.approx(usage.queue_time + usage.prompt_time + usage.completion_time,
                                             abs=1e-5)


def test_streamed_chat_puts_usage_in_the_last_chunk(groq: Groq) -> None:
    chunks = list(groq.chat.completions.create(model="llama-3.1-8b-instant", max_tokens=8, temperature=0,
                                               stream=True, messages=[{"role": "user", "content": "Say hello."}]))
    assert chunks[0].x_groq is not None and chunks[0].x_groq.id.startswith("req_")
    finishing = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert len(finishing) == 1
    last = finishing[0]
    assert last.x_groq is not None and last.x_groq.id == chunks[0].x_groq.id
    assert last.x_groq.usage is not None and last.x_groq.usage.completion_tokens > 0
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    plain = groq.chat.completions.create(model="llama-3.1-8b-instant", max_tokens=8, temperature=0,
                                         messages=[{"role": "user", "content": "Say hello."}])
    assert text == plain.choices[0].message.content


def test_groq_only_fields(groq: Groq) -> None:
    r = groq.chat.completions.create(model="llama-3.1-8b-instant", max_tokens=2, reasoning_format="hidden",
                                     service_tier="on_demand", messages=[{"role": "user", "content": "Hi"}])
    assert r.choices[0].message.content is not None
    with pytest.raises(BadRequestError) as caught:
        groq.chat.completions.create(model="llama-3.1-8b-instant", max_tokens=2,
                                     messages=[{"role": "user", "content": "Hi"}],
                                     search_settings={"include_domains": ["example.com"]})
    assert isinstance(caught.value.body, dict) and caught.value.body["error"]["param"] == "search_settings"


def test_transcription_and_models(groq: Groq, gateway: Gateway) -> None:
    wav = gateway.openai().audio.speech.create(model="tts-1", voice="alloy", input=SENTENCE,
                                               response_format="wav").content
    r = groq.audio.transcriptions.create(model="whisper-large-v3", file=("s.wav", wav))
    assert "fox" in r.text.lower()
    raw = httpx.post(f"{gateway.url}/openai/v1/audio/transcriptions", data={"model": "whisper-large-v3"},
                     files={"file": ("s.wav", wav)}, timeout=60).json()
    assert raw["x_groq"]["id"].startswith("req_")
    ids = {m.id for m in groq.models.list().data}
    assert "llama-3.1-8b-instant" in ids
    with pytest.raises(NotFoundError):
        groq.chat.completions.create(model="mixtral-unknown", messages=[{"role": "user", "content": "x"}])


def test_plain_openai_routes_have_no_groq_extras(gateway: Gateway) -> None:
    body = httpx.post(f"{gateway.url}/v1/chat/completions", timeout=60, json={
        "model": "gpt-4o-mini", "max_tokens": 2, "messages": [{"role": "user", "content": "Hi"}]}).json()
    assert "x_groq" not in body and "queue_time" not in body["usage"]
