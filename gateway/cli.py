"""The ``syn4pse`` command: ``serve``, ``models`` and ``pull``."""

from __future__ import annotations

import argparse
import logging
import socket
import sys
from collections.abc import Sequence

from compat.errors import GatewayError
from gateway.config import Config, ConfigError, ServerConfig, load_config

__all__ = ["main"]

log = logging.getLogger("syn4pse.cli")


WS_READ_FRAMES = 4
"""How many of ``server.audio.max_frame_bytes`` one WebSocket message may hold before it is read."""


def _setup_logging(config: Config) -> None:
    from gateway.observability import OneLineFormatter

    level = logging.DEBUG if config.server.env == "development" else getattr(
        logging, config.server.log_level.upper())
    handler = logging.StreamHandler()
    handler.setFormatter(OneLineFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=level, handlers=[handler])
    for chatty in ("aioice", "aiortc"):  # a line per ICE check and RTP event: for debugging only
        logging.getLogger(chatty).setLevel(max(level, logging.WARNING))


def _open_bind_refusal(server: ServerConfig) -> str | None:
    """Why the server must not start as configured: listening beyond loopback with no key asked."""
    from gateway.guards import is_loopback_bind

    if is_loopback_bind(server.host) or server.api_keys:
        return None
    if server.allow_open_bind:
        log.warning("listening on %s with no API keys: anyone who reaches this address can use every model "
                    "(set server.api_keys or SYN4PSE_API_KEYS to require a key)", server.host)
        return None
    return (f"refusing to listen on {server.host} with no API keys: anyone on the network could use the "
            "server. Set server.api_keys (or SYN4PSE_API_KEYS=key1,key2), listen on 127.0.0.1, or allow an "
            "open server with server.allow_open_bind: true (or SYN4PSE_ALLOW_OPEN_BIND=1, or "
            "--allow-open-bind).")


_KEEP = -1
"""``--grpc-port`` not given: the configured port stands."""


def _grpc_port(value: str) -> int | None:
    """``--grpc-port``: a port, or ``off`` for no gRPC endpoint."""
    if value.strip().lower() in ("off", "none"):
        return None
    try:
        port = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a port number or 'off', got '{value}'") from None
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"expected a port from 1 to 65535, got {port}")
    return port


def _unbindable(host: str, port: int) -> str | None:
    """Why ``host:port`` cannot be listened on (taken, not this machine's), or None: checked before start-up
    so a taken gRPC port is one line, not a failed start-up's trace."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as e:
            return e.strerror or str(e)
    return None


def _serve(config: Config, host: str | None, port: int | None, allow_open_bind: bool = False,
           grpc_port: int | None = _KEEP) -> int:
    import msgspec
    import uvicorn

    from gateway import memory
    from gateway.app import create_app
    from gateway.slowclients import guarded_h11

    server = msgspec.structs.replace(config.server, host=host or config.server.host,
                                     allow_open_bind=config.server.allow_open_bind or allow_open_bind,
                                     grpc_port=config.server.grpc_port if grpc_port == _KEEP else grpc_port)
    config.server = server  # the app's Host allow-list and the open-bind check see the address used
    _setup_logging(config)
    memory.set_up()
    refusal = _open_bind_refusal(server)
    if refusal is not None:
        print(f"syn4pse: {refusal}", file=sys.stderr)
        return 2
    if server.grpc_port is not None and (why := _unbindable(server.host, server.grpc_port)) is not None:
        print(f"syn4pse: cannot listen for gRPC on {server.host}:{server.grpc_port} ({why}); choose another"
              " server.grpc_port (or --grpc-port), or turn the endpoint off with null (--grpc-port off)",
              file=sys.stderr)
        return 2
    uvicorn.run(
        create_app(config),
        host=server.host,
        port=port or server.http_port,
        log_level=server.log_level,
        access_log=False,  # gateway.observability writes one JSON line per request instead
        timeout_graceful_shutdown=round(server.shutdown_timeout),
        # h11 honours a limit on header size; the default parser has none to set. The guarded protocol
        # adds the head and body deadlines uvicorn lacks (gateway/slowclients.py).
        http=guarded_h11(server.header_timeout, server.body_timeout),
        h11_max_incomplete_event_size=server.max_header_bytes,
        limit_concurrency=server.max_connections,
        timeout_keep_alive=server.keep_alive_timeout,
        # A WebSocket message is read whole before a route sees it: past a few of the audio sockets'
        # largest frames (which they refuse with their own close reason) the connection closes with 1009
        # before the message is buffered. The size is the decompressed one.
        ws_max_size=WS_READ_FRAMES * server.audio.max_frame_bytes,
    )
    return 0


def _server_models(config: Config, url: str | None) -> list[dict[str, object]] | None:
    """The running server's own view of its models (admin route), or None if none answers."""
    import httpx

    base = url or f"http://{'127.0.0.1' if config.server.host in ('0.0.0.0', '::') else config.server.host}:" \
                  f"{config.server.http_port}"
    keys = config.server.admin_keys or config.server.api_keys  # /admin/* takes the admin keys when set
    headers = {"Authorization": f"Bearer {keys[0]}"} if keys else {}
    try:
        response = httpx.get(f"{base}/admin/models", headers=headers, timeout=3)
    except httpx.HTTPError:
        if url:
            raise
        return None
    response.raise_for_status()
    data: list[dict[str, object]] = response.json()["data"]
    return data


def _models(config: Config, url: str | None) -> int:
    models = _server_models(config, url)
    if models is None:  # no server running: what is on disk
        from gateway.registry import Registry

        models = Registry(config).describe()
        print("(no server answering: state of the files on this machine)", file=sys.stderr)
    rows = [("NAME", "TYPE", "BACKEND", "STATE", "ALIASES")]
    for m in models:
        state = str(m["state"])
        if m.get("reason"):
            state += f" ({m['reason']})"
        progress = m.get("progress")
        if isinstance(progress, dict):
            state += f" ({progress['files_done']}/{progress['files_total']} files)"
        aliases = m.get("aliases")
        rows.append((str(m["id"]), str(m["type"]), str(m["backend"]), state,
                     ", ".join(str(a) for a in aliases) if isinstance(aliases, list) else ""))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=False)) + "  " + row[-1])
    return 0


def _pull(config: Config, names: Sequence[str]) -> int:
    from gateway.registry import Registry
    from gateway.sources import download

    _setup_logging(config)
    registry = Registry(config)
    failed = 0
    for name in names:
        try:
            canonical = registry.resolve(name)
            source = config.models[canonical].source
            if source.huggingface is None:
                where = f"the package {source.package}" if source.package else "a local path"
                print(f"{canonical}: ships in {where}; nothing to download")
                continue
            download(canonical, config.models[canonical], config.models_dir)
            print(f"{canonical}: downloaded")
        except GatewayError as e:
            print(f"{name}: {e.message}", file=sys.stderr)
            failed += 1
    return 1 if failed else 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="syn4pse", description="A local inference gateway.")
    parser.add_argument("--config", help="path to syn4pse.yaml (default: $SYN4PSE_CONFIG_PATH or ./syn4pse.yaml)")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="start the server")
    serve.add_argument("--config", dest="sub_config", help=argparse.SUPPRESS)
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.add_argument("--grpc-port", type=_grpc_port, default=_KEEP,
                       help="the gRPC (Open Inference Protocol) port, or 'off' (server.grpc_port)")
    serve.add_argument("--allow-open-bind", action="store_true",
                       help="listen on a non-loopback address without API keys (server.allow_open_bind)")
    models = sub.add_parser("models", help="list the configured models and their state")
    models.add_argument("--config", dest="sub_config", help=argparse.SUPPRESS)
    models.add_argument("--url", help="the server to ask (default: the one syn4pse.yaml describes)")
    pull = sub.add_parser("pull", help="download models ahead of their first use")
    pull.add_argument("--config", dest="sub_config", help=argparse.SUPPRESS)
    pull.add_argument("names", nargs="+", metavar="NAME")
    args = parser.parse_args(argv)

    try:
        config = load_config(getattr(args, "sub_config", None) or args.config)
    except ConfigError as e:
        print(f"syn4pse: invalid configuration: {e}", file=sys.stderr)
        return 2
    if args.command == "serve":
        return _serve(config, args.host, args.port, args.allow_open_bind, args.grpc_port)
    if args.command == "models":
        return _models(config, args.url)
    return _pull(config, args.names)


if __name__ == "__main__":
    sys.exit(main())
