"""The voice-agent frameworks against a real gateway, with no network and no room.

pipecat's services and LiveKit Agents' plugins get only the gateway's address on 127.0.0.1 (through
:class:`RecordingProxy` for chat, so a test can show what the framework sent after a tool ran). Their
telemetry is switched off before they are imported, and :func:`no_network` fails a test that tries to
reach any host but 127.0.0.1: nothing may fetch a model or report usage.
"""

from __future__ import annotations

import http.server
import io
import json
import os
import re
import socket
import sys
import threading
import wave
from collections.abc import Iterator
from difflib import SequenceMatcher
from pathlib import Path
from typing import Any

import httpx
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # tests/: the gateway fixture

os.environ.update({
    "OPENAI_API_KEY": "sk-test",
    "DEEPGRAM_API_KEY": "test",
    "OTEL_SDK_DISABLED": "true",
    "PIPECAT_DISABLE_TELEMETRY": "1",
    "DO_NOT_TRACK": "1",
    "HF_HUB_OFFLINE": "1",
})
for _name in ("OPENAI_BASE_URL", "OPENAI_API_BASE", "LIVEKIT_URL", "LIVEKIT_API_KEY", "LIVEKIT_API_SECRET"):
    os.environ.pop(_name, None)

_LOCAL = ("127.0.0.1", "::1", "localhost")
_attempts: list[str] = []
_connect = socket.socket.connect
_getaddrinfo = socket.getaddrinfo


def _local_connect(self: socket.socket, address: Any) -> None:
    host = address[0] if isinstance(address, tuple) else address
    if self.family in (socket.AF_INET, socket.AF_INET6) and host not in _LOCAL:
        _attempts.append(f"connect {address}")
        raise OSError(f"the voice tests reach no host but 127.0.0.1 (tried {address})")
    _connect(self, address)


def _local_getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
    name = host.decode() if isinstance(host, bytes) else host
    if name is not None and name not in _LOCAL:
        _attempts.append(f"resolve {name}")
        raise socket.gaierror(socket.EAI_NONAME, f"the voice tests resolve no host but 127.0.0.1 ({name})")
    return _getaddrinfo(host, *args, **kwargs)


socket.socket.connect = _local_connect  # type: ignore[method-assign]
socket.getaddrinfo = _local_getaddrinfo


@pytest.fixture(autouse=True)
def no_network() -> Iterator[None]:
    before = len(_attempts)
    yield
    assert _attempts[before:] == [], "a framework tried to reach the network"


_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "host", "accept-encoding"}


class RecordingProxy:
    """An HTTP pass-through to the gateway that keeps the JSON body of every chat request, in order."""

    def __init__(self, upstream: str) -> None:
        self.chats: list[dict[str, Any]] = []
        proxy = self
        client = httpx.Client(base_url=upstream, timeout=300)

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.path.endswith("/chat/completions"):
                    proxy.chats.append(json.loads(body))
                headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP}
                with client.stream("POST", self.path, headers=headers, content=body) as response:
                    self.send_response(response.status_code)
                    for key, value in response.headers.items():
                        if key.lower() not in _HOP and key.lower() != "content-encoding":
                            self.send_header(key, value)
                    self.send_header("Transfer-Encoding", "chunked")
                    self.send_header("Connection", "close")
                    self.end_headers()
                    for chunk in response.iter_raw():
                        if chunk:
                            self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                            self.wfile.flush()
                    self.wfile.write(b"0\r\n\r\n")
                self.close_connection = True

            def log_message(self, *_: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="session")
def proxy(gateway: Any) -> Iterator[RecordingProxy]:
    p = RecordingProxy(gateway.url)
    yield p
    p.close()


def tool_message_after(chats: list[dict[str, Any]], result: str) -> dict[str, Any]:
    """The first chat request whose messages carry ``result`` in a tool message."""
    for body in chats:
        for message in body.get("messages", []):
            if message.get("role") == "tool" and result in json.dumps(message.get("content")):
                return body
    raise AssertionError(f"no chat request carried the tool's result {result!r}: {chats}")


SPOKEN = "The morning was cold and bright. A small boat moved across the calm water."


def similarity(reference: str, heard: str) -> float:
    """How close two texts are, word by word (1.0: the same words), case and punctuation aside."""
    def words(text: str) -> list[str]:
        return re.sub(r"[^a-z0-9' ]+", " ", text.lower()).split()

    return SequenceMatcher(None, words(reference), words(heard)).ratio()


@pytest.fixture(scope="session")
def speech_16k(gateway: Any) -> bytes:
    """:data:`SPOKEN` in the gateway's own voice: 16 kHz s16le, with silence around it as a microphone
    would hear it (Deepgram's /v1/speak, headerless)."""
    response = httpx.post(f"{gateway.url}/v1/speak", params={"model": "aura-2-thalia-en", "encoding": "linear16",
                                                             "sample_rate": "16000", "container": "none"},
                          json={"text": SPOKEN}, headers={"Authorization": "Token test"}, timeout=120)
    assert response.status_code == 200, response.text
    return bytes(16000) + response.content + bytes(2 * 16000 * 2)


def transcribe_pcm(gateway: Any, pcm: bytes, rate: int) -> str:
    """What the gateway's speech-to-text hears in 16-bit mono PCM."""
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm)
    result = gateway.openai().audio.transcriptions.create(model="whisper-1", file=("speech.wav", buffer.getvalue()))
    return str(result.text)
