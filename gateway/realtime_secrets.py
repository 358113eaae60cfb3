"""Ephemeral client secrets of the Realtime API (``POST /v1/realtime/client_secrets``).

A server holding the real key asks for a short-lived secret (10 s to 2 h, 10 minutes by default) and
hands it to a browser, which opens realtime sessions with it — over WebRTC or the WebSocket — and
nothing else: the secret opens ``/v1/realtime`` and ``/v1/realtime/calls`` only, and those sessions
start with the settings it was issued for. Secrets live in memory; a restart forgets them.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

__all__ = ["REALTIME_PATHS", "ClientSecrets", "Secret"]

REALTIME_PATHS = frozenset({"/v1/realtime", "/v1/realtime/calls"})
"""What a client secret opens."""
MAX_SECRETS = 10_000


@dataclass(frozen=True, slots=True)
class Secret:
    value: str
    expires_at: int
    session: dict[str, Any] | None
    owner: str | None
    """The key that asked for it (hashed), whose sessions these are."""


class ClientSecrets:
    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._secrets: dict[str, Secret] = {}

    def issue(self, session: dict[str, Any] | None, seconds: int, owner: str | None) -> Secret:
        self._purge()
        if len(self._secrets) >= MAX_SECRETS:
            del self._secrets[min(self._secrets, key=lambda v: self._secrets[v].expires_at)]
        secret = Secret("ek_" + secrets.token_urlsafe(24), int(self._clock()) + seconds, session, owner)
        self._secrets[secret.value] = secret
        return secret

    def find(self, presented: Iterable[str]) -> Secret | None:
        """The live secret among ``presented``, if any."""
        now = self._clock()
        for value in presented:
            secret = self._secrets.get(value)
            if secret is not None and secret.expires_at > now:
                return secret
        return None

    def _purge(self) -> None:
        now = self._clock()
        for value in [v for v, s in self._secrets.items() if s.expires_at <= now]:
            del self._secrets[value]
