"""The Open Inference Protocol's own clients against a real gateway: Triton's ``tritonclient.grpc`` (sync
and asyncio) and KServe's ``InferenceGRPCClient``, each given only the gateway's gRPC address on 127.0.0.1.

The gateway is the shared ``gateway`` fixture of tests/conftest.py, started from the project's environment
(``SYN4PSE_SERVER_PYTHON``) with a gRPC port of its own. tritonclient and kserve register the same proto
package (``inference``) under different file names, so one process cannot import both: the kserve calls
run in a process of their own (kserve_calls.py).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # tests/: the gateway fixture and helpers

from servers import Gateway, base_config, smollm_models
from spoken import SPOKEN, similarity  # noqa: F401

API_KEY = "sk-grpc-user"
ADMIN_KEY = "sk-grpc-admin"


@pytest.fixture(scope="session")
def grpc_url(gateway: Gateway) -> str:
    return gateway.grpc_address


@pytest.fixture(scope="session")
def strict(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """A gateway with API and admin keys, whose one LLM serves one request at a time with no queue."""
    server = f"  api_keys: [{API_KEY}]\n  admin_keys: [{ADMIN_KEY}]\n"
    models = smollm_models("{n_ctx: 1024}").replace("    aliases: [gpt-4o-mini]\n",
                                                     "    aliases: [gpt-4o-mini]\n    concurrency: 1\n    queue: 0\n")
    gw = Gateway(tmp_path_factory.mktemp("grpc-strict"), base_config(server, models)).start()
    yield gw
    gw.stop()
