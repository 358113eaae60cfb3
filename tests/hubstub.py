"""A tiny stand-in for the Hugging Face Hub's HTTP API, for tests that must not touch the network.

``HubStub(root)`` serves ``{root}/{org}/{name}/{files...}`` as model repos. Point ``huggingface_hub`` at it
with ``HF_ENDPOINT=<stub.start()>``; the variable is read when ``huggingface_hub`` is imported, so set it
before the import (or run the code under test in a subprocess).

Endpoints (what ``snapshot_download`` and ``hf_hub_download`` of huggingface_hub 2.x call):

* ``GET /api/models/{repo}[/revision/{rev}]`` - repo info (``sha``, ``siblings``).
* ``GET /api/models/{repo}/tree/{rev}[/{path}]?recursive=...`` - file listing, a single page.
* ``HEAD|GET /{repo}/resolve/{rev}/{path}`` - the file, with ``X-Repo-Commit``, ``ETag`` and
  ``Content-Length``; ``GET`` honours a ``Range: bytes=N-`` header (resumed downloads).

Every revision name resolves to the single fake commit ``HubStub.commit``. No Xet headers are ever sent
and listings carry no ``xetHash``/``lfs``, so clients fall back to plain HTTP downloads. Errors mirror the
Hub: an unknown repo is a 404 with ``X-Error-Code: RepoNotFound``, an unknown file a 404 with
``X-Error-Code: EntryNotFound``. Every response closes its connection, so once ``stop()`` returns
nothing answers on the port any more.

``hold(name)`` keeps back the bytes of every file so named until the event it returns is set (a download
seen while it is under way).

``requests`` records ``"METHOD /path"`` (as sent, without the query string). Besides the calls above,
huggingface_hub makes a best-effort ``GET /api/agent-harnesses`` once per process (while building its
User-Agent, skipped if ``$HF_HOME/.agent_harnesses.json`` is fresh or ``HF_HUB_OFFLINE`` is set); the
stub answers it 404, which the client ignores. Filter it out before asserting on exact request lists.
"""

from __future__ import annotations

import hashlib
import json
import pathlib
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

COMMIT = "5ca1ab1e" * 5
"""The fake 40-hex commit every revision resolves to."""

_CHUNK = 1 << 20
_RANGE = re.compile(r"^bytes=(\d+)-(\d*)$")


class HubStub:
    """Serves {root}/{org}/{name}/{files...} as hub repos at a fixed commit."""

    commit: str = COMMIT

    def __init__(self, root: pathlib.Path) -> None:
        """Prepare a stub over ``root``; nothing listens until ``start()``."""
        self.root = pathlib.Path(root).resolve()
        self.requests: list[str] = []
        self._lock = threading.Lock()
        self._etags: dict[tuple[str, int, int], str] = {}
        self._held: dict[str, threading.Event] = {}
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------------------------------

    def start(self) -> str:
        """Listen on 127.0.0.1 at a free port in a background thread; return the endpoint URL."""
        if self._server is not None:
            return self.endpoint
        handler = type("_BoundHandler", (_Handler,), {"stub": self})
        server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        server.daemon_threads = True
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, name="hubstub", daemon=True)
        self._thread.start()
        return self.endpoint

    def stop(self) -> None:
        """Stop serving and close the listening socket (idempotent)."""
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    @property
    def endpoint(self) -> str:
        """The ``http://127.0.0.1:<port>`` URL to use as ``HF_ENDPOINT``."""
        if self._server is None:
            raise RuntimeError("HubStub is not started")
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> HubStub:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def hold(self, name: str) -> threading.Event:
        """Keep back the body of files named ``name`` until the returned event is set."""
        with self._lock:
            return self._held.setdefault(name, threading.Event())

    def wait_if_held(self, name: str) -> None:
        with self._lock:
            gate = self._held.get(name)
        if gate is not None:
            gate.wait(120)

    # -- repo helpers (used by the handler) --------------------------------------------------------

    def _record(self, method: str, path: str) -> None:
        with self._lock:
            self.requests.append(f"{method} {path}")

    def repo_dir(self, repo_id: str) -> pathlib.Path | None:
        """The folder for ``org/name``, or None if there is no such repo."""
        parts = repo_id.split("/")
        if len(parts) != 2 or any(p in ("", ".", "..") for p in parts):
            return None
        folder = self.root / parts[0] / parts[1]
        return folder if folder.is_dir() else None

    def repo_files(self, repo: pathlib.Path) -> list[str]:
        """Every file of a repo as a sorted, '/'-separated relative path (``.git`` folders skipped)."""
        return sorted(
            p.relative_to(repo).as_posix()
            for p in repo.rglob("*")
            if p.is_file() and ".git" not in p.relative_to(repo).parts
        )

    def repo_file(self, repo: pathlib.Path, path: str) -> pathlib.Path | None:
        """The file at ``path`` inside ``repo`` (symlinks followed), or None if missing or not a repo path."""
        parts = path.split("/")
        if any(p in ("", ".", "..", ".git") for p in parts):
            return None
        target = repo.joinpath(*parts)
        return target if target.is_file() else None

    def etag(self, file: pathlib.Path) -> str:
        """Git blob sha1 of ``file`` (what the Hub uses as the ETag of a non-LFS file), cached by mtime."""
        st = file.stat()
        key = (str(file), st.st_mtime_ns, st.st_size)
        with self._lock:
            cached = self._etags.get(key)
        if cached is not None:
            return cached
        digest = hashlib.sha1(f"blob {st.st_size}\0".encode())
        with file.open("rb") as f:
            while chunk := f.read(_CHUNK):
                digest.update(chunk)
        value = digest.hexdigest()
        with self._lock:
            self._etags[key] = value
        return value


class _Handler(BaseHTTPRequestHandler):
    """Routes Hub API and resolve requests to the owning ``HubStub``."""

    stub: HubStub
    protocol_version = "HTTP/1.1"
    server_version = "hubstub/1"

    def log_message(self, format: str, *args: Any) -> None:
        """Keep test output quiet."""

    def do_HEAD(self) -> None:
        self._dispatch(head=True)

    def do_GET(self) -> None:
        self._dispatch(head=False)

    # -- routing -----------------------------------------------------------------------------------

    def _dispatch(self, head: bool) -> None:
        split = urlsplit(self.path)
        self.stub._record(self.command, split.path)
        query = parse_qs(split.query)
        parts = [unquote(p) for p in split.path.split("/")[1:]]
        try:
            if parts[:2] == ["api", "models"] and len(parts) >= 4:
                self._api(parts[2:], query, head)
            elif len(parts) >= 5 and parts[2] == "resolve":
                self._resolve(f"{parts[0]}/{parts[1]}", "/".join(parts[4:]), head)
            else:
                self._error(404, None, "Not Found", head)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def _api(self, parts: list[str], query: dict[str, list[str]], head: bool) -> None:
        repo_id = f"{parts[0]}/{parts[1]}"
        repo = self.stub.repo_dir(repo_id)
        if repo is None:
            self._error(404, "RepoNotFound", "Repository not found", head)
            return
        rest = parts[2:]
        if not rest or (rest[0] == "revision" and len(rest) == 2):
            files = self.stub.repo_files(repo)
            self._json(
                {
                    "_id": self.stub.commit[:24],
                    "id": repo_id,
                    "modelId": repo_id,
                    "author": parts[0],
                    "sha": self.stub.commit,
                    "private": False,
                    "gated": False,
                    "disabled": False,
                    "downloads": 0,
                    "likes": 0,
                    "tags": [],
                    "siblings": [{"rfilename": f} for f in files],
                },
                head,
            )
        elif rest[0] == "tree" and len(rest) >= 2:
            recursive = query.get("recursive", ["false"])[0].lower() in ("1", "true")
            self._tree(repo, "/".join(rest[2:]).strip("/"), recursive, head)
        else:
            self._error(404, None, "Not Found", head)

    def _tree(self, repo: pathlib.Path, prefix: str, recursive: bool, head: bool) -> None:
        parts = prefix.split("/") if prefix else []
        base = repo.joinpath(*parts)
        if any(p in ("", ".", "..", ".git") for p in parts) or not base.is_dir():
            self._error(404, "EntryNotFound", f"{prefix} does not exist", head, commit=True)
            return
        entries: list[dict[str, Any]] = []
        for p in sorted(base.rglob("*") if recursive else base.iterdir()):
            rel = p.relative_to(repo).as_posix()
            if ".git" in rel.split("/"):
                continue
            if p.is_dir():
                oid = hashlib.sha1(f"tree {rel}".encode()).hexdigest()
                entries.append({"type": "directory", "oid": oid, "size": 0, "path": rel})
            elif p.is_file():
                entries.append(
                    {"type": "file", "oid": self.stub.etag(p), "size": p.stat().st_size, "path": rel}
                )
        self._json(entries, head)

    def _resolve(self, repo_id: str, path: str, head: bool) -> None:
        repo = self.stub.repo_dir(repo_id)
        if repo is None:
            self._error(404, "RepoNotFound", "Repository not found", head)
            return
        file = self.stub.repo_file(repo, path)
        if file is None:
            self._error(404, "EntryNotFound", "Entry not found", head, commit=True)
            return
        size = file.stat().st_size
        start, end = 0, size - 1
        status = 200
        rng = self.headers.get("Range")
        if rng and not head and (m := _RANGE.match(rng.strip())):
            start = int(m.group(1))
            end = min(int(m.group(2)), size - 1) if m.group(2) else size - 1
            if start >= size:
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{size}")
                self.send_header("Content-Length", "0")
                self.send_header("Connection", "close")
                self.end_headers()
                return
            status = 206
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(end - start + 1 if status == 206 else size))
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("ETag", f'"{self.stub.etag(file)}"')
        self.send_header("X-Repo-Commit", self.stub.commit)
        self.send_header("Content-Disposition", f'inline; filename="{file.name}"')
        self.send_header("Connection", "close")
        self.end_headers()
        if head:
            return
        self.stub.wait_if_held(file.name)
        remaining = end - start + 1
        with file.open("rb") as f:
            f.seek(start)
            while remaining > 0 and (chunk := f.read(min(_CHUNK, remaining))):
                self.wfile.write(chunk)
                remaining -= len(chunk)

    # -- responses ---------------------------------------------------------------------------------

    def _json(self, payload: Any, head: bool) -> None:
        body = json.dumps(payload).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Repo-Commit", self.stub.commit)
        self.send_header("Connection", "close")
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def _error(self, status: int, code: str | None, message: str, head: bool, commit: bool = False) -> None:
        body = json.dumps({"error": message}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        if code is not None:
            self.send_header("X-Error-Code", code)
            self.send_header("X-Error-Message", message)
        if commit:
            self.send_header("X-Repo-Commit", self.stub.commit)
        self.send_header("Connection", "close")
        self.end_headers()
        if not head:
            self.wfile.write(body)
