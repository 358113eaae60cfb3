"""The ``syn4pse`` command: ``serve``, ``models`` and ``pull``."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from compat.errors import GatewayError
from gateway.config import Config, ConfigError, load_config

__all__ = ["main"]


def _setup_logging(config: Config) -> None:
    level = logging.DEBUG if config.server.env == "development" else getattr(
        logging, config.server.log_level.upper())
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def _serve(config: Config, host: str | None, port: int | None) -> int:
    import uvicorn

    from gateway.app import create_app

    _setup_logging(config)
    uvicorn.run(
        create_app(config),
        host=host or config.server.host,
        port=port or config.server.http_port,
        log_level=config.server.log_level,
        access_log=False,  # gateway.observability writes one JSON line per request instead
        timeout_graceful_shutdown=round(config.server.shutdown_timeout),
        # h11 honours a limit on header size; the default parser has none to set.
        http="h11",
        h11_max_incomplete_event_size=config.server.max_header_bytes,
    )
    return 0


def _server_models(config: Config, url: str | None) -> list[dict[str, object]] | None:
    """The running server's own view of its models (admin route), or None if none answers."""
    import httpx

    base = url or f"http://{'127.0.0.1' if config.server.host in ('0.0.0.0', '::') else config.server.host}:" \
                  f"{config.server.http_port}"
    headers = {"Authorization": f"Bearer {config.server.api_keys[0]}"} if config.server.api_keys else {}
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
        return _serve(config, args.host, args.port)
    if args.command == "models":
        return _models(config, args.url)
    return _pull(config, args.names)


if __name__ == "__main__":
    sys.exit(main())
