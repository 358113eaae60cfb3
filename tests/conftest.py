"""Fixtures: real gateway processes on 127.0.0.1 serving the real starter models.

Each server is the installed ``syn4pse serve`` command in a subprocess (tests/servers.py), configured by a
YAML file the fixture writes, so the tests go through the same start-up path as a user.
"""

from __future__ import annotations

import contextlib
import http.server
import os
import threading
from collections.abc import Iterator, Mapping

import pytest
from openai import OpenAI
from servers import SERVER_PYTHON, STARTER_MODELS, Gateway, base_config, free_port, smollm_models

__all__ = ["SERVER_PYTHON", "SMOLLM_SPECIAL_TOKENS", "STARTER_MODELS", "Gateway", "base_config", "file_server",
           "free_port", "http_server", "smollm_models"]

# tests/clients/ needs the packages of a client environment; the project's own run leaves it out and
# .ci/test runs it in that environment (SYN4PSE_CLIENT_TESTS=1).
collect_ignore = [] if os.environ.get("SYN4PSE_CLIENT_TESTS") else ["clients"]
if not os.environ.get("SYN4PSE_DOCKER_IMAGE"):  # the built image (bash .ci/docker)
    collect_ignore.append("test_docker_image.py")

# Special tokens of SmolLM2 (<|endoftext|>, <|im_start|>, <|im_end|>): banning them keeps a
# generation going until max_tokens, whatever the model would say.
SMOLLM_SPECIAL_TOKENS = {"0": -100, "1": -100, "2": -100}


@contextlib.contextmanager
def file_server(files: Mapping[str, bytes], redirects: Mapping[str, str] | None = None) -> Iterator[str]:
    """A plain HTTP server on 127.0.0.1 serving ``files`` by path (404 otherwise) and ``redirects`` as 302s
    to another path; yields its base URL. The stand-in for a remote host in the fetch tests."""
    moves = dict(redirects or {})

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path in moves:
                self.send_response(302)
                self.send_header("Location", moves[self.path])
                self.end_headers()
                return
            body = files.get(self.path)
            self.send_response(200 if body is not None else 404)
            body = body or b""
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_: object) -> None:
            pass

    with http_server(Handler) as url:
        yield url


@contextlib.contextmanager
def http_server(handler: type[http.server.BaseHTTPRequestHandler]) -> Iterator[str]:
    """``handler`` serving on a free port of 127.0.0.1 in a thread; yields its base URL."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()

@pytest.fixture(scope="session")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """The gateway with the starter models and the default (reject) parameter policy."""
    gw = Gateway(tmp_path_factory.mktemp("gateway"), base_config()).start()
    yield gw
    gw.stop()


@pytest.fixture(scope="session")
def client(gateway: Gateway) -> OpenAI:
    return gateway.openai()


@pytest.fixture(scope="session")
def gateway_http(gateway: Gateway) -> str:
    """The base URL of the shared gateway, for raw HTTP tests."""
    return gateway.url
