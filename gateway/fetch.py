"""Fetching a client-named URL (Deepgram's ``{"url": …}``, Groq's ``url``), only when the operator allows.

Off by default. When on: http and https only; every address the host resolves to must be public
(never loopback, private, link-local or otherwise reserved) unless ``allow_private``; the connection
goes to the address that was checked (no second DNS answer can slip in), and each redirect is checked
the same way; size and time are bounded. Every refusal is a 400 naming the field.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from urllib.parse import urljoin, urlsplit, urlunsplit

import httpx

from compat.errors import InvalidRequest, PayloadTooLarge
from gateway.config import RemoteFetchConfig

__all__ = ["fetch_url"]

_REDIRECTS = (301, 302, 303, 307, 308)


def _refuse(param: str, why: str) -> InvalidRequest:
    return InvalidRequest(f"'{param}' cannot be fetched: {why}.", param=param, code="remote_url_refused")


async def _checked_address(host: str, port: int, policy: RemoteFetchConfig, param: str) -> str:
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError):
        raise _refuse(param, f"the host '{host}' does not resolve") from None
    addresses = [ipaddress.ip_address(info[4][0]) for info in infos]
    if not addresses:
        raise _refuse(param, f"the host '{host}' does not resolve")
    if not policy.allow_private:
        for address in addresses:
            if not address.is_global or address.is_multicast:
                raise _refuse(param, f"the host resolves to a non-public address ({address})")
    return str(addresses[0])


async def fetch_url(url: str, policy: RemoteFetchConfig, *, param: str) -> bytes:
    if not policy.enabled:
        raise InvalidRequest(f"Fetching remote URLs is disabled on this server; send the content itself instead"
                             f" of '{param}'.", param=param, code="remote_url_disabled")
    async with httpx.AsyncClient(timeout=policy.timeout, follow_redirects=False, trust_env=False) as client:
        for _ in range(policy.max_redirects + 1):
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise _refuse(param, "only http and https URLs are fetched")
            port = parts.port or (443 if parts.scheme == "https" else 80)
            address = await _checked_address(parts.hostname, port, policy, param)
            host = f"[{address}]" if ":" in address else address
            pinned = urlunsplit((parts.scheme, f"{host}:{port}", parts.path or "/", parts.query, ""))
            headers = {"Host": parts.netloc.rsplit("@", 1)[-1]}
            try:
                async with client.stream("GET", pinned, headers=headers,
                                         extensions={"sni_hostname": parts.hostname}) as response:
                    if response.status_code in _REDIRECTS and "location" in response.headers:
                        url = urljoin(url, response.headers["location"])
                        continue
                    if response.status_code >= 400:
                        raise _refuse(param, f"the server answered {response.status_code}")
                    declared = int(response.headers.get("content-length") or 0)
                    if declared > policy.max_bytes:
                        raise PayloadTooLarge(f"'{param}' is larger than {policy.max_bytes} bytes.")
                    data = bytearray()
                    async for chunk in response.aiter_bytes():
                        data += chunk
                        if len(data) > policy.max_bytes:
                            raise PayloadTooLarge(f"'{param}' is larger than {policy.max_bytes} bytes.")
                    return bytes(data)
            except httpx.HTTPError as e:
                raise _refuse(param, f"the request failed ({type(e).__name__})") from None
        raise _refuse(param, "too many redirects")
