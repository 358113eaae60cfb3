"""The LLM application frameworks against a real gateway, through a recording proxy, with no network.

Each framework gets only a base URL: that of :class:`RecordingProxy`, a plain pass-through to the
gateway that keeps every request body, so a test can show that a tool's result reached the request after
the call. Everything else the frameworks would fetch or report is switched off here, before any of them
is imported, and :func:`no_network` fails a test that tries to reach any host but 127.0.0.1.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # tests/: the shared fixtures and helpers

from recording import RecordingProxy, install_network_guard, no_network, proxy  # noqa: F401 (fixtures)
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

install_network_guard()


@pytest.fixture(scope="session")
def base_url(proxy: RecordingProxy) -> str:  # noqa: F811 (the imported fixture, requested)
    """What each framework is given instead of OpenAI's address."""
    return proxy.url + "/v1"
