"""API keys: every route but ``/health`` needs one when ``server.api_keys`` (or ``SYN4PSE_API_KEYS``) is set.

Accepted the ways clients send them: ``Authorization: Bearer <key>`` (OpenAI, Groq, Deepgram access
tokens), ``Authorization: Token <key>`` (Deepgram), and for WebSockets from browsers the subprotocol
pairs ``token, <key>`` / ``bearer, <key>`` (Deepgram) or ``openai-insecure-api-key.<key>`` (OpenAI).
A refusal is a 401 in the dialect of the route: Deepgram's shape on ``/v1/listen`` and ``/v1/speak``,
OpenAI's everywhere else; a refused WebSocket handshake gets the same 401 as an HTTP answer.
With ``server.admin_keys`` set, ``/admin/*`` takes only an admin key (an API key gets a 403), and admin
keys open the other routes too; without, ``/admin/*`` takes the API keys like every route.
A request let in by a key acts for it (:func:`owner_of`, a digest of the key): what it stores, a stored
response, is that key's alone.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Awaitable, Callable, Iterable, Mapping, MutableMapping, Sequence
from typing import Any

import msgspec

from compat.deepgram.common import error_body as deepgram_error_body
from compat.deepgram.common import new_request_id
from compat.errors import AuthenticationFailed, GatewayError
from compat.openai.errors import encode_error
from gateway.realtime_secrets import REALTIME_PATHS, ClientSecrets

__all__ = ["OPEN_PATHS", "AuthMiddleware", "KeyCheck", "authorization_keys", "header", "is_admin_path", "owner_of",
           "presented_keys", "refuse"]

OPEN_PATHS = frozenset({"/health", "/ready"})
"""Probes (a kubelet has no key): ``/ready`` tells a caller without one only whether it is ready."""
PLAYGROUND_PATHS = frozenset({"/"})
PLAYGROUND_PREFIXES = ("/static/",)
"""The playground's page and files: served without a key (the page holds none until the user types one),
but behind the Host and Origin checks like any route."""
DEEPGRAM_PATHS = ("/v1/listen", "/v1/speak")
_OPENAI_SUBPROTOCOL = "openai-insecure-api-key."
_OWNER = "syn4pse.owner"
_encoder = msgspec.json.Encoder()

# Plain ASGI types: this middleware sits outside the framework and touches raw messages.
Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def header(scope: Scope, name: bytes) -> str | None:
    """The first value of the header ``name`` (lowercase bytes) in an ASGI scope, or None."""
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return str(value.decode("latin-1"))
    return None


def authorization_keys(authorization: str | None) -> list[str]:
    """The key an ``Authorization`` value carries (``Bearer <key>`` or ``Token <key>``), if any."""
    if authorization:
        scheme, _, value = authorization.strip().partition(" ")
        if scheme.lower() in ("bearer", "token") and value.strip():
            return [value.strip()]
    return []


def presented_keys(scope: Scope) -> list[str]:
    """Every credential the request carries, in the forms the supported clients use."""
    keys = authorization_keys(header(scope, b"authorization"))
    if scope["type"] == "websocket":
        protocols = [p.strip() for p in scope.get("subprotocols", [])]
        for i, protocol in enumerate(protocols):
            if protocol.lower() in ("token", "bearer") and i + 1 < len(protocols):
                keys.append(protocols[i + 1])
            elif protocol.startswith(_OPENAI_SUBPROTOCOL):
                keys.append(protocol[len(_OPENAI_SUBPROTOCOL):])
    return keys


def _matching(presented: Iterable[str], keys: tuple[bytes, ...]) -> bytes | None:
    """The configured key one of ``presented`` is, if any."""
    found = None
    for candidate in presented:
        encoded = candidate.encode()
        for key in keys:  # compare against every key, whatever matches: no timing hint
            if hmac.compare_digest(encoded, key):
                found = key
    return found


def _valid(presented: Iterable[str], keys: tuple[bytes, ...]) -> bool:
    return _matching(presented, keys) is not None


def owner_of(scope: Mapping[str, object]) -> str:
    """Who a request acts for: a digest of the API key it was let in with ("" on a server without keys).
    What it stores (a stored response) is that key's alone."""
    state = scope.get("state")
    return str(state.get(_OWNER, "")) if isinstance(state, dict) else ""


class AdminOnly(GatewayError):
    status = 403
    kind = "invalid_request_error"
    default_code = "admin_key_required"


def is_admin_path(path: str) -> bool:
    return path == "/admin" or path.startswith("/admin/")


async def refuse(scope: Scope, send: Send, error: GatewayError,
                 headers: Sequence[tuple[bytes, bytes]] = ()) -> None:
    """Answer ``error`` before the app runs, in the route's dialect: Deepgram's body on its routes,
    OpenAI's elsewhere; a WebSocket handshake gets it as an HTTP answer where the server can send one,
    else a 1008 close."""
    head = [(b"content-type", b"application/json"), *headers]
    if scope["path"].startswith(DEEPGRAM_PATHS):
        request_id = new_request_id()
        body = _encoder.encode(deepgram_error_body(error, request_id))
        head += [(b"dg-request-id", request_id.encode()), (b"dg-error", error.message.encode("latin-1", "replace"))]
    else:
        body = encode_error(error)
    head.append((b"content-length", str(len(body)).encode()))
    if scope["type"] == "websocket":
        if "websocket.http.response" in scope.get("extensions", {}):
            await send({"type": "websocket.http.response.start", "status": error.status, "headers": head})
            await send({"type": "websocket.http.response.body", "body": body})
        else:
            await send({"type": "websocket.close", "code": 1008, "reason": error.message[:120]})
        return
    await send({"type": "http.response.start", "status": error.status, "headers": head})
    await send({"type": "http.response.body", "body": body})


class KeyCheck:
    """The configured keys and the rules every caller meets, over HTTP (:class:`AuthMiddleware`) and gRPC:
    without API keys every call is let in; admin keys also open the API; with admin keys, admin calls
    take only those."""

    def __init__(self, keys: Iterable[str], admin_keys: Iterable[str] = ()) -> None:
        self._admin = tuple(k.encode() for k in admin_keys)
        self._keys = tuple(k.encode() for k in keys)
        self._any = self._keys + self._admin if self._keys else ()

    @property
    def open(self) -> bool:
        """No API keys: every call but an admin one (with admin keys set) is let in."""
        return not self._any

    @property
    def guards_admin(self) -> bool:
        return bool(self._admin)

    def admin(self, presented: Iterable[str]) -> bool | None:
        """For an admin call: True with an admin key, False with an API key alone (a 403), None with
        neither (a 401)."""
        presented = list(presented)
        if _valid(presented, self._admin):
            return True
        return False if _valid(presented, self._keys) else None

    def match(self, presented: Iterable[str]) -> bytes | None:
        """The API or admin key one of ``presented`` is, if any."""
        return _matching(presented, self._any)

    def refusal(self, authorization: str | None, *, admin: bool) -> GatewayError | None:
        """Why a caller presenting ``authorization`` (the header's value) is refused, or None."""
        presented = authorization_keys(authorization)
        if admin and self.guards_admin:
            verdict = self.admin(presented)
            if verdict:
                return None
            if verdict is False:
                return AdminOnly("This call needs an admin key (server.admin_keys).")
        elif self.open or self.match(presented) is not None:
            return None
        return AuthenticationFailed("Missing or invalid API key: send it as 'authorization: Bearer <key>'"
                                    " metadata.")


class AuthMiddleware:
    """API keys on every route; with admin keys, ``/admin/*`` takes only those (an API key gets a 403)."""

    def __init__(self, app: ASGIApp, keys: Iterable[str], admin_keys: Iterable[str] = (),
                 client_secrets: ClientSecrets | None = None) -> None:
        self._app = app
        self._client_secrets = client_secrets
        self._check = KeyCheck(keys, admin_keys)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (scope["type"] not in ("http", "websocket") or scope["path"] in OPEN_PATHS
                or (scope["type"] == "http" and (scope["path"] in PLAYGROUND_PATHS
                                                 or scope["path"].startswith(PLAYGROUND_PREFIXES)))
                or (scope["type"] == "http" and scope.get("method") == "OPTIONS")):  # CORS preflight
            await self._app(scope, receive, send)
            return
        presented = presented_keys(scope)
        if self._check.guards_admin and is_admin_path(scope["path"]):
            verdict = self._check.admin(presented)
            if verdict:
                await self._app(scope, receive, send)
            elif verdict is False:
                await refuse(scope, send, AdminOnly("This route needs an admin key (server.admin_keys)."))
            else:
                await self._unauthenticated(scope, send)
            return
        if self._check.open:
            await self._app(scope, receive, send)
            return
        key = self._check.match(presented)
        if key is not None:
            scope.setdefault("state", {})[_OWNER] = hashlib.sha256(key).hexdigest()
            await self._app(scope, receive, send)
            return
        secret = (self._client_secrets.find(presented) if self._client_secrets is not None
                  and scope["path"] in REALTIME_PATHS else None)
        if secret is not None:  # a browser's ephemeral key: realtime sessions only
            if secret.owner is not None:
                scope.setdefault("state", {})[_OWNER] = secret.owner
            await self._app(scope, receive, send)
            return
        await self._unauthenticated(scope, send)

    @staticmethod
    async def _unauthenticated(scope: Scope, send: Send) -> None:
        message = "Missing or invalid API key: send it as 'Authorization: Bearer <key>'."
        await refuse(scope, send, AuthenticationFailed(message), [(b"www-authenticate", b"Bearer")])
