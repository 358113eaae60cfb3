"""The guard every framework test runs under refuses other hosts, so a clean run means no traffic left."""

from __future__ import annotations

import socket

import httpx
import pytest
from recording import new_network_attempts


def test_other_hosts_are_refused_and_noted() -> None:
    with pytest.raises(OSError):
        socket.create_connection(("192.0.2.1", 443), timeout=1)
    with pytest.raises(httpx.ConnectError):
        httpx.get("https://api.openai.com/v1/models", timeout=1)
    attempts = new_network_attempts()  # taken here, so the fixture that checks every test sees none
    assert any("192.0.2.1" in a for a in attempts) and any("api.openai.com" in a for a in attempts)
