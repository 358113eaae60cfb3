"""The playground at ``/``: a page of plain ES modules (``gateway/static/``) that uses the public APIs as any
client does. Served without a key (it holds none until the user types one); nothing it loads comes from
anywhere but this server."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from litestar import Request, Response, Router, get
from litestar.params import FromPath

from compat.errors import NotFound

__all__ = ["STATIC", "playground_router"]

STATIC = Path(__file__).resolve().parent.parent / "static"
_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
          ".css": "text/css; charset=utf-8", ".svg": "image/svg+xml", ".png": "image/png"}
_POLICY = ("default-src 'self'; img-src 'self' data: blob:; media-src 'self' blob: mediastream:; "
           "connect-src 'self' ws: wss:; style-src 'self'; script-src 'self'; object-src 'none'; base-uri 'none'")


def _file(path: Path) -> Response[bytes]:
    return Response(path.read_bytes(), media_type=_TYPES[path.suffix],
                    headers={"content-security-policy": _POLICY, "x-content-type-options": "nosniff",
                             "cache-control": "no-cache"})


@get("/", include_in_schema=False)
async def page(request: Request[Any, Any, Any]) -> Response[bytes]:
    return _file(STATIC / "index.html")


@get("/static/{path:path}", include_in_schema=False)
async def asset(request: Request[Any, Any, Any], path: FromPath[str]) -> Response[bytes]:
    """A file of the playground; nothing outside ``gateway/static/`` and no other kind of file."""
    found = (STATIC / path.lstrip("/")).resolve()
    if not found.is_relative_to(STATIC) or found.suffix not in _TYPES or not found.is_file():
        raise NotFound(f"No such file: /static/{path.lstrip('/')[:100]}")
    return _file(found)


def playground_router() -> Router:
    return Router(path="/", route_handlers=[page, asset])
