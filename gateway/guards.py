"""What a browser page on another site must not make the server do, checked before any route runs.

* ``Host`` allow-list (:class:`HostGuard`): a page that rebinds its own DNS name to 127.0.0.1 reaches
  the server with its own name in ``Host``; only the configured names (loopback ones on a loopback
  bind) are answered, anything else gets a 421.
* WebSocket ``Origin`` allow-list (also :class:`HostGuard`): a page cannot read a cross-origin
  WebSocket's refusal, but it can open one; a foreign origin's handshake gets a 403. No ``Origin``
  (an SDK) and the server's own origin are let in.
* JSON bodies (:class:`JsonBodyMiddleware`): a page may POST ``text/plain``, a form or a typeless
  body to any site without a CORS preflight; JSON routes take ``application/json`` only (415
  otherwise), which a page can send cross-site only after the server's CORS preflight allowed it.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from compat.errors import HostNotAllowed, NotJson, OriginNotAllowed
from gateway.auth import OPEN_PATHS, ASGIApp, Receive, Scope, Send, header, refuse
from gateway.config import ServerConfig

__all__ = ["HostGuard", "JsonBodyMiddleware", "allowed_hosts", "allowed_origins", "host_name",
           "is_loopback_bind"]

LOOPBACK_NAMES = ("localhost", "127.0.0.1", "[::1]")
NON_JSON_ROUTES = ("/audio/transcriptions", "/audio/translations", "/v1/listen", "/v1/realtime/calls")
"""Path endings of the POST routes whose body is not JSON (multipart forms, raw audio)."""


def is_loopback_bind(host: str) -> bool:
    """Whether the server listens on loopback only (``localhost``, ``127.0.0.0/8``, ``::1``)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def host_name(value: str) -> str:
    """The name part of a ``Host`` header or host entry, lowercased, without port or trailing dot;
    an IPv6 address in brackets (``[::1]``) whether it came with them or not."""
    value = value.strip().lower()
    if value.startswith("["):
        return value[:value.find("]") + 1] if "]" in value else value
    if value.count(":") > 1:  # a bare IPv6 address
        return f"[{value}]"
    name, colon, port = value.rpartition(":")
    if colon and port.isdigit():
        value = name
    return value.rstrip(".")


def allowed_hosts(server: ServerConfig) -> tuple[str, ...]:
    """The ``Host`` names answered: the configured ones, else loopback names on a loopback bind, else any."""
    if server.allowed_hosts is not None:
        return tuple(host_name(h) if h != "*" else h for h in server.allowed_hosts)
    return LOOPBACK_NAMES if is_loopback_bind(server.host) else ("*",)


def _host_allowed(name: str, allowed: Iterable[str]) -> bool:
    for entry in allowed:
        if entry == "*" or entry == name:
            return True
        suffix = entry[1:] if entry.startswith("*.") else entry
        if suffix.startswith(".") and (name == suffix[1:] or name.endswith(suffix)):
            return True
    return False


def allowed_origins(server: ServerConfig) -> tuple[str, ...]:
    """The origins whose pages may open a WebSocket (besides the server's own): the configured ones,
    else the loopback ones (any scheme and port, kept as ``loopback``) and ``cors.allow_origins``."""
    if server.allowed_origins is not None:
        return tuple(o.strip().lower().rstrip("/") for o in server.allowed_origins)
    cors = tuple(o.strip().lower().rstrip("/") for o in server.cors.allow_origins) if server.cors else ()
    return ("loopback", *cors)


def _origin_allowed(origin: str, host: str | None, allowed: Iterable[str]) -> bool:
    origin = origin.strip().lower().rstrip("/")
    scheme, sep, authority = origin.partition("://")
    if sep and host is not None and authority == host.strip().lower():
        return True  # the server's own pages (Host was checked already)
    for entry in allowed:
        if entry in ("*", origin):
            return True
        if entry == "loopback" and scheme in ("http", "https") and host_name(authority) in LOOPBACK_NAMES:
            return True
    return False


class HostGuard:
    """The ``Host`` allow-list on every request (``/health`` aside, for probes that name the pod's
    address) and the ``Origin`` allow-list on WebSocket handshakes. Wraps the whole app, unmatched
    routes included."""

    def __init__(self, app: ASGIApp, server: ServerConfig) -> None:
        self._app = app
        self._hosts = allowed_hosts(server)
        self._any_host = "*" in self._hosts
        self._origins = allowed_origins(server)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket") and scope["path"] not in OPEN_PATHS:
            host = header(scope, b"host")
            if not self._any_host and (host is None or not _host_allowed(host_name(host), self._hosts)):
                shown = host_name(host)[:100].encode("ascii", "backslashreplace").decode() if host else "none"
                await refuse(scope, send, HostNotAllowed(
                    f"This server does not answer for the host '{shown}' (server.allowed_hosts)."))
                return
            origin = header(scope, b"origin")
            if scope["type"] == "websocket" and origin is not None and not _origin_allowed(origin, host, self._origins):
                await refuse(scope, send, OriginNotAllowed(
                    "WebSockets from this page's origin are not allowed (server.allowed_origins)."))
                return
        await self._app(scope, receive, send)


class JsonBodyMiddleware:
    """``Content-Type: application/json`` (any parameters, ``+json`` types too) on every POST route but
    the multipart and audio ones. A request without a Content-Type passes unless it has an ``Origin``
    (a browser's cross-site POST always has one; curl and SDKs without a type do not)."""

    def __init__(self, app: ASGIApp) -> None:
        self._app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (scope["type"] == "http" and scope.get("method") in ("POST", "PUT", "PATCH")
                and not scope["path"].endswith(NON_JSON_ROUTES)):
            content_type = header(scope, b"content-type")
            media = (content_type or "").partition(";")[0].strip().lower()
            json = media == "application/json" or (media.startswith("application/") and media.endswith("+json"))
            if not json and (content_type is not None or header(scope, b"origin") is not None):
                await refuse(scope, send, NotJson(
                    "This route takes a JSON body: send it with 'Content-Type: application/json'."))
                return
        await self._app(scope, receive, send)
