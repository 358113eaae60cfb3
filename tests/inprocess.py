"""A gateway app served in this test process, on 127.0.0.1, for tests that inject faults into it.

The app runs under uvicorn on a thread of its own (its own event loop), so a test can monkeypatch the
gateway's modules and read its registry while real clients talk to it over a socket.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import uvicorn
from conftest import free_port

from gateway.app import create_app
from gateway.config import parse_config
from gateway.registry import Registry

__all__ = ["InProcess", "serve"]


class InProcess:
    def __init__(self, app: Any, port: int) -> None:
        self.app = app
        self.url = f"http://127.0.0.1:{port}"

    @property
    def registry(self) -> Registry:
        registry: Registry = self.app.state.registry
        return registry

    def active(self, model: str) -> int:
        """Requests holding or loading ``model`` now."""
        return int(next(m["active"] for m in self.registry.describe() if m["id"] == model))

    def settle(self, model: str, timeout: float = 30.0) -> int:
        """``active`` once nothing is left running for the model (or the timeout passes)."""
        deadline = time.monotonic() + timeout
        while self.active(model) and time.monotonic() < deadline:
            time.sleep(0.05)
        return self.active(model)


@contextmanager
def serve(config_text: str, models_dir: Path) -> Iterator[InProcess]:
    config = parse_config(config_text, environ={"SYN4PSE_MODELS_PATH": str(models_dir),
             "SYN4PSE_SERVER_GRPC_PORT": "off"})
    app = create_app(config)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", http="h11",
                                           lifespan="on"))
    thread = threading.Thread(target=server.run, name="in-process gateway", daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the in-process gateway did not start")
        time.sleep(0.02)
    try:
        yield InProcess(app, port)
    finally:
        server.should_exit = True
        thread.join(timeout=30)
