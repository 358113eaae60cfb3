"""The LLM application frameworks against a real gateway, through a recording proxy, with no network.

Each framework gets only a base URL: that of :class:`RecordingProxy`, a plain pass-through to the
gateway that keeps every request body, so a test can show that a tool's result reached the request after
the call. Everything else the frameworks would fetch or report is switched off here, before any of them
is imported, and :func:`no_network` fails a test that tries to reach any host but 127.0.0.1.
"""

from __future__ import annotations

import os
import socket
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # tests/: the shared fixtures and helpers

from recording import RecordingProxy
from tiktoken_cache import prime_tiktoken_cache

_TIKTOKEN = Path(tempfile.mkdtemp(prefix="syn4pse-tiktoken-"))
prime_tiktoken_cache(_TIKTOKEN)
os.environ.update({
    "OPENAI_API_KEY": "sk-test",  # the frameworks want a key; the gateway's default config takes any
    "TIKTOKEN_CACHE_DIR": str(_TIKTOKEN),  # LangChain and LiteLLM count tokens with tiktoken
    "LITELLM_LOCAL_MODEL_COST_MAP": "True",  # LiteLLM fetches its price list at import otherwise
    "LITELLM_TELEMETRY": "False",
    "LANGCHAIN_TRACING_V2": "false",
    "LANGSMITH_TRACING": "false",
    "OTEL_SDK_DISABLED": "true",
    "DO_NOT_TRACK": "1",
    "ANONYMIZED_TELEMETRY": "False",
})
for _name in ("OPENAI_BASE_URL", "OPENAI_API_BASE", "OPENAI_ORG_ID", "OPENAI_PROJECT_ID", "LANGCHAIN_API_KEY",
              "LANGSMITH_API_KEY"):
    os.environ.pop(_name, None)

_LOCAL = ("127.0.0.1", "::1", "localhost")
_attempts: list[str] = []
_connect = socket.socket.connect
_getaddrinfo = socket.getaddrinfo


def _guarded_connect(self: socket.socket, address: Any) -> None:
    host = address[0] if isinstance(address, tuple) else address
    if self.family in (socket.AF_INET, socket.AF_INET6) and host not in _LOCAL:
        _attempts.append(f"connect {address}")
        raise OSError(f"the framework tests reach no host but 127.0.0.1 (tried {address})")
    _connect(self, address)


def _guarded_getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
    name = host.decode() if isinstance(host, bytes) else host
    if name is not None and name not in _LOCAL:
        _attempts.append(f"resolve {name}")
        raise socket.gaierror(socket.EAI_NONAME, f"the framework tests resolve no host but 127.0.0.1 ({name})")
    return _getaddrinfo(host, *args, **kwargs)


socket.socket.connect = _guarded_connect  # type: ignore[method-assign]
socket.getaddrinfo = _guarded_getaddrinfo


@pytest.fixture(autouse=True)
def no_network() -> Iterator[None]:
    """Fail the test if anything in it tried to reach a host other than 127.0.0.1."""
    before = len(_attempts)
    yield
    assert _attempts[before:] == [], "a framework tried to reach the network"


@pytest.fixture(scope="session")
def proxy(gateway: Any) -> Iterator[RecordingProxy]:
    p = RecordingProxy(gateway.url)
    yield p
    p.close()


@pytest.fixture(scope="session")
def base_url(proxy: RecordingProxy) -> str:
    """What each framework is given instead of OpenAI's address."""
    return proxy.url + "/v1"
