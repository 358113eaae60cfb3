"""Fetching a client-named URL (Deepgram's ``{"url": …}``, Groq's ``url``, chat images), only when allowed.

Off by default. When on: http and https only; every address the host resolves to must be public
(never loopback, private, link-local or otherwise reserved, nor an IPv6 form of such an IPv4 address)
unless ``allow_private``; the connection goes to the address that was checked (no second DNS answer can
slip in), and each redirect is checked the same way. The whole fetch has one deadline (a server that
sends a byte now and then cannot hold the request), and the body is bounded as it is *decoded*: the
server is asked for no content coding, and a gzip or deflate body it sends anyway is inflated a piece
at a time, so a small compressed body never becomes a large one in memory. Every refusal is a 400
naming the field (a body over the size limit: :class:`PayloadTooLarge`, naming it too).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import zlib
from collections.abc import Iterator, Sequence
from urllib.parse import SplitResult, urljoin, urlsplit, urlunsplit

import httpx

from compat.errors import InvalidRequest, PayloadTooLarge
from gateway.config import RemoteFetchConfig

__all__ = ["fetch_url"]

_REDIRECTS = (301, 302, 303, 307, 308)
_PIECE = 64 * 1024
"""Most bytes one inflation step produces: what a compressed body may unpack to before the size check."""
_CODINGS = ("gzip", "x-gzip", "deflate")
_MAX_CODINGS = 2
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_COMPATIBLE = ipaddress.ip_network("::/96")


def _refuse(param: str, why: str) -> InvalidRequest:
    return InvalidRequest(f"'{param}' cannot be fetched: {why}.", param=param, code="remote_url_refused")


def _too_large(param: str, limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(f"'{param}' is larger than {limit} bytes.", param=param)


def _shown(text: str) -> str:
    """A server's or client's word, safe to repeat in a message: short and printable."""
    return text[:64] if text.isprintable() else "(unprintable)"


def _public(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """Whether the address, and any IPv4 address it carries (mapped, 6to4, Teredo, NAT64), is public."""
    if not address.is_global or address.is_multicast:
        return False
    if isinstance(address, ipaddress.IPv6Address):
        inner = [address.ipv4_mapped, address.sixtofour, address.teredo[1] if address.teredo else None]
        if address in _NAT64 or address in _COMPATIBLE:
            inner.append(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
        return all(v4 is None or (v4.is_global and not v4.is_multicast) for v4 in inner)
    return True


async def _checked_address(host: str, port: int, policy: RemoteFetchConfig, param: str) -> str:
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
        addresses = [ipaddress.ip_address(info[4][0]) for info in infos]
    except (OSError, UnicodeError, ValueError):
        raise _refuse(param, f"the host '{_shown(host)}' does not resolve") from None
    if not addresses:
        raise _refuse(param, f"the host '{_shown(host)}' does not resolve")
    if not policy.allow_private:
        for address in addresses:
            if not _public(address):
                raise _refuse(param, f"the host resolves to a non-public address ({address})")
    return str(addresses[0])


def _target(url: str, param: str) -> tuple[SplitResult, str, int]:
    """The URL's parts, host and port, once it is a well-formed http(s) URL."""
    try:
        parts = urlsplit(url)
        host, port = parts.hostname, parts.port
    except ValueError as e:  # a bad IPv6 literal, a port out of range or not a number
        raise _refuse(param, f"it is not a valid URL ({e})") from None
    if parts.scheme not in ("http", "https"):
        raise _refuse(param, "only http and https URLs are fetched")
    if not host:
        raise _refuse(param, "the URL names no host")
    return parts, host, port or (443 if parts.scheme == "https" else 80)


class _Inflater:
    """One gzip or deflate coding undone at most :data:`_PIECE` bytes at a time."""

    def __init__(self) -> None:
        self._z = zlib.decompressobj(wbits=32 + zlib.MAX_WBITS)  # a gzip or zlib header, told apart
        self.done = False

    def feed(self, data: bytes) -> Iterator[bytes]:
        while True:
            if self.done and data:  # a gzip body may hold several members, one after another
                self._z, self.done = zlib.decompressobj(wbits=32 + zlib.MAX_WBITS), False
            out = self._z.decompress(data, _PIECE)
            data = self._z.unconsumed_tail
            if self._z.eof:
                self.done, data = True, self._z.unused_data
            if out:
                yield out
            if not data and len(out) < _PIECE:
                return


def _decoded(layers: Sequence[_Inflater], data: bytes) -> Iterator[bytes]:
    """``data`` with every coding undone (the outermost first), in pieces of bounded size."""
    if not layers:
        if data:
            yield data
        return
    for piece in layers[0].feed(data):
        yield from _decoded(layers[1:], piece)


def _inflaters(header: str, param: str) -> list[_Inflater]:
    """One inflater for each coding of a ``Content-Encoding`` header, in the order they are undone."""
    codings = [c.strip().lower() for c in header.split(",") if c.strip().lower() not in ("", "identity")]
    for coding in codings:
        if coding not in _CODINGS:
            raise _refuse(param, f"the server sent it in the content coding '{_shown(coding)}', which is not"
                                 " decoded here")
    if len(codings) > _MAX_CODINGS:
        raise _refuse(param, f"the server sent it in {len(codings)} content codings (at most {_MAX_CODINGS})")
    return [_Inflater() for _ in codings]


async def _body(response: httpx.Response, limit: int, param: str) -> bytes:
    try:
        declared = int(response.headers.get("content-length") or 0)
    except ValueError:
        declared = 0
    if declared > limit:
        raise _too_large(param, limit)
    layers = _inflaters(response.headers.get("content-encoding", ""), param)
    data = bytearray()
    try:
        async for raw in response.aiter_raw():
            for piece in _decoded(layers, raw):
                data += piece
                if len(data) > limit:
                    raise _too_large(param, limit)
    except zlib.error:
        raise _refuse(param, "its compressed body is corrupt") from None
    if not all(layer.done for layer in layers):
        raise _refuse(param, "its compressed body is cut short")
    return bytes(data)


async def _fetch(client: httpx.AsyncClient, url: str, policy: RemoteFetchConfig, param: str) -> bytes:
    for _ in range(policy.max_redirects + 1):
        parts, hostname, port = _target(url, param)
        address = await _checked_address(hostname, port, policy, param)
        host = f"[{address}]" if ":" in address else address
        pinned = urlunsplit((parts.scheme, f"{host}:{port}", parts.path or "/", parts.query, ""))
        headers = {"Host": parts.netloc.rsplit("@", 1)[-1], "Accept-Encoding": "identity"}
        try:
            async with client.stream("GET", pinned, headers=headers,
                                     extensions={"sni_hostname": hostname}) as response:
                status = response.status_code
                if status in _REDIRECTS and "location" in response.headers:
                    try:
                        url = urljoin(url, response.headers["location"])
                    except ValueError:
                        raise _refuse(param, "the server redirected to a malformed URL") from None
                    continue
                if not 200 <= status < 300:
                    raise _refuse(param, f"the server answered {status}")
                return await _body(response, policy.max_bytes, param)
        except (httpx.HTTPError, httpx.InvalidURL) as e:
            raise _refuse(param, f"the request failed ({type(e).__name__})") from None
    raise _refuse(param, "too many redirects")


async def fetch_url(url: str, policy: RemoteFetchConfig, *, param: str) -> bytes:
    """The body at ``url``, decoded, under ``policy``; a refusal names ``param``."""
    if not policy.enabled:
        raise InvalidRequest(f"Fetching remote URLs is disabled on this server; send the content itself instead"
                             f" of '{param}'.", param=param, code="remote_url_disabled")
    try:
        async with asyncio.timeout(policy.timeout), httpx.AsyncClient(
                timeout=policy.timeout, follow_redirects=False, trust_env=False) as client:
            return await _fetch(client, url, policy, param)
    except TimeoutError:
        raise _refuse(param, f"it took longer than {policy.timeout:g} s") from None
