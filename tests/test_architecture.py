"""The shape of the code, checked: the layers import downward only, no module imports itself back
through others, route handlers stay thin, and no engine module grows past one job's size."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("backends", "compat", "gateway")
LAYER = {"backends": 0, "compat": 1, "gateway": 2}
MAX_HANDLER_LINES = 25
MAX_BACKEND_FILE_LINES = 500
ROUTE_DECORATORS = {"get", "post", "put", "patch", "delete", "route", "websocket", "websocket_listener"}


def _modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            found[name] = path
    return found


MODULES = _modules()


def _imports(name: str, path: Path) -> Iterator[str]:
    """Every project module ``name`` imports, at the top or inside a function."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            targets = [f"{base}.{alias.name}" for alias in node.names] + [base]
        else:
            continue
        for target in targets:
            while target and target not in MODULES:
                target = target.rpartition(".")[0]
            if target and target != name:
                yield target


GRAPH = {name: set(_imports(name, path)) for name, path in MODULES.items()}


def _parents(name: str) -> set[str]:
    """A package's ``__init__`` runs before its modules: importing ``a.b.c`` imports ``a`` and ``a.b``."""
    parts = name.split(".")
    return {".".join(parts[:i]) for i in range(1, len(parts))} & MODULES.keys()


def test_layers_import_downward_only() -> None:
    upward = [(name, target) for name, targets in GRAPH.items() for target in targets
              if LAYER[target.split(".")[0]] > LAYER[name.split(".")[0]]]
    assert not upward, upward


def test_no_import_cycle() -> None:
    """Module-level and function-level imports alike (a cycle deferred into a function is still one)."""
    edges = {name: {t for t in targets if name not in _parents(t) and t not in _parents(name)}
             for name, targets in GRAPH.items()}
    cycles: list[list[str]] = []
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges[node]):
            if state.get(nxt) == 1:
                cycles.append([*stack[stack.index(nxt):], nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for module in sorted(edges):
        if module not in state:
            visit(module)
    assert not cycles, "\n".join(" -> ".join(c) for c in cycles)


def _handlers() -> Iterator[tuple[str, ast.AsyncFunctionDef | ast.FunctionDef]]:
    for path in sorted((ROOT / "gateway").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.AsyncFunctionDef | ast.FunctionDef):
                continue
            for decorator in node.decorator_list:
                func = decorator.func if isinstance(decorator, ast.Call) else decorator
                if isinstance(func, ast.Name) and func.id in ROUTE_DECORATORS:
                    yield f"{path.relative_to(ROOT)}:{node.name}", node


def test_route_handlers_are_thin() -> None:
    """A handler decodes (compat), calls serving and encodes (compat): its body fits in 25 lines."""
    handlers = list(_handlers())
    assert len(handlers) >= 10  # the scan finds the routes
    fat = {}
    for where, node in handlers:
        body = node.body[1:] if ast.get_docstring(node) else node.body
        lines = (body[-1].end_lineno or body[-1].lineno) - body[0].lineno + 1
        if lines > MAX_HANDLER_LINES:
            fat[where] = lines
    assert not fat, fat


@pytest.mark.parametrize("path", sorted((ROOT / "backends").rglob("*.py")), ids=lambda p: p.name)
def test_backend_files_have_one_job(path: Path) -> None:
    assert len(path.read_text().splitlines()) <= MAX_BACKEND_FILE_LINES


WIRE_WORDS = ("/v1/", "Deepgram", "OpenAI", "Groq", "messages[", "response_format", "tools[", "invalid_request_error")


def _strings(tree: ast.AST) -> Iterator[str]:
    """String constants that are not documentation (a docstring, an attribute's docstring): what an
    engine can put in a message."""
    docs = {id(node.value) for node in ast.walk(tree) if isinstance(node, ast.Expr)}
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docs:
            yield node.value


@pytest.mark.parametrize("path", sorted((ROOT / "backends").rglob("*.py")), ids=lambda p: p.name)
def test_backends_know_no_wire(path: Path) -> None:
    """Engines set no HTTP status or ``param``, and their messages name no route, vendor or wire field:
    the gateway chooses those for each dialect (gateway/errors.py)."""
    tree = ast.parse(path.read_text())
    keywords = [k.arg for node in ast.walk(tree) if isinstance(node, ast.Call) for k in node.keywords
                if k.arg in ("param", "status", "status_code")]
    assert not keywords
    assert not [(text, word) for text in _strings(tree) for word in WIRE_WORDS if word in text]
