"""The docs say what the code does: the configuration reference matches the structs, and every link and
repository path the README and ``docs/`` name exists.

Pure: no server, no model.
"""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path
from types import ModuleType

import msgspec
import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = sorted([ROOT / "README.md", *(ROOT / "docs").glob("*.md")])

# What a repository path in backticks starts with.
_ROOTS = ("backends/", "compat/", "gateway/", "tests/", "bench/", "docs/", ".ci/")
_FILES = {"README.md", "syn4pse.yaml", "pyproject.toml", "Dockerfile"}
_CODE = re.compile(r"`([^`\n]+)`")
_LINK = re.compile(r"\[[^\]\n]*\]\(([^)\s]+)\)")
_FENCE = re.compile(r"^```.*?^```", re.S | re.M)


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_config", ROOT / "docs" / "gen_config.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("gen_config", module)
    spec.loader.exec_module(module)
    return module


gen = _generator()


# --------------------------------------------------------------------------------------------------
# docs/configuration.md


def test_configuration_tables_are_current() -> None:
    text = gen.DOC.read_text(encoding="utf-8")
    assert gen.update(text) == text, "docs/configuration.md is out of date: run .venv/bin/python docs/gen_config.py"


def test_every_backend_in_the_catalog_has_an_options_table() -> None:
    from backends import catalog
    from backends.types import ModelType

    names = {name for model_type in ModelType for name in catalog.names_for(model_type)}
    assert names, "the catalog lists no backend"
    assert {f"backend:{name}" for name in names} <= set(gen.sections())


def _documented_keys(block: str) -> set[str]:
    """The keys the committed tables of one block list, as full paths."""
    keys: set[str] = set()
    prefix = ""
    for line in block.splitlines():
        if line.startswith("**"):
            backend = re.search(r"`backend: ([\w-]+)`", line)
            title = re.fullmatch(r"\*\*`([^`]+)`\*\*", line)
            prefix = backend.group(1) if backend else title.group(1) if title else line
        elif row := re.match(r"\| `([^`]+)` \|", line):
            keys.add(f"{prefix}.{row.group(1)}")
    return keys


def test_the_reference_lists_every_field_and_no_other() -> None:
    text = gen.DOC.read_text(encoding="utf-8")
    committed = {m.group(1): m.group(2) for m in gen._BLOCK.finditer(text)}
    for name, tables in gen.sections().items():
        expected: set[str] = set()
        for table in tables:
            fields = {f"{table.prefix}.{f.encode_name}" for f in msgspec.structs.fields(table.struct)}
            assert {row.key for row in table.rows} == fields
            expected |= fields
        assert name in committed, f"docs/configuration.md has no block for {name}"
        documented = _documented_keys(committed[name])
        assert documented - expected == set(), f"{name}: documented, but no such option"
        assert expected - documented == set(), f"{name}: options missing from docs/configuration.md"


def test_every_option_says_what_it_does() -> None:
    undocumented = [row.key for tables in gen.sections().values() for table in tables for row in table.rows
                    if not row.doc.strip()]
    assert undocumented == [], "give these fields a docstring (or a note in docs/gen_config.py's NOTES)"


def test_notes_name_real_options() -> None:
    keys = {row.key for tables in gen.sections().values() for table in tables for row in table.rows}
    assert set(gen.NOTES) - keys == set(), "NOTES for options that do not exist"


def test_the_generator_fails_on_a_missing_block() -> None:
    text = gen.DOC.read_text(encoding="utf-8")
    name = "backend:silero_vad"
    without = re.sub(re.escape(gen.BEGIN.format(name=name)) + r".*?" + re.escape(gen.END.format(name=name)),
                     "", text, flags=re.S)
    assert without != text
    with pytest.raises(ValueError, match="silero_vad"):
        gen.update(without)


# --------------------------------------------------------------------------------------------------
# Links and paths in README.md and docs/*.md


def _slug(heading: str) -> str:
    """The anchor GitHub gives a heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def _anchors(page: Path) -> set[str]:
    text = _FENCE.sub("", page.read_text(encoding="utf-8"))
    return {_slug(m.group(1)) for m in re.finditer(r"^#+ (.+)$", text, re.M)}


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_relative_links_resolve(page: Path) -> None:
    text = _FENCE.sub("", page.read_text(encoding="utf-8"))
    broken: list[str] = []
    for target in _LINK.findall(text):
        if re.match(r"[a-z]+:", target):
            continue  # http(s), mailto
        path, _, anchor = target.partition("#")
        where = (page.parent / path).resolve() if path else page
        if not where.exists() or (anchor and where.suffix == ".md" and anchor not in _anchors(where)):
            broken.append(target)
    assert broken == [], f"{page.name}: links to nothing"


def _is_path(token: str) -> bool:
    return bool(re.fullmatch(r"[\w.\-/*]+", token)) and (token.startswith(_ROOTS) or token in _FILES)


def _relative(token: str) -> bool:
    """A file or folder name written under a folder the context names (``chat.py``, ``llama/``)."""
    return bool(re.fullmatch(r"[\w.\-/*]+", token)) and (token.endswith((".py", "/")) or "/" in token)


def _named_paths(text: str) -> list[str]:
    """Every repository path in backticks, with names under a table column's or a list item's folder
    resolved against it (a column headed "route (`gateway/routes/`)", an item starting "`backends/`")."""
    paths: list[str] = []
    lines = text.splitlines()
    columns: list[str | None] = []
    folder: str | None = None
    for i, line in enumerate(lines):
        cells = line.strip().strip("|").split("|") if line.startswith("|") else []
        if cells and i + 1 < len(lines) and re.fullmatch(r"\|(\s*:?-+:?\s*\|)+", lines[i + 1].strip()):
            columns = [next((t for t in _CODE.findall(c) if t.endswith("/") and _is_path(t)), None) for c in cells]
            continue
        if not cells:
            columns = []
        if line.startswith("- "):
            first = _CODE.search(line)
            folder = first.group(1) if first and first.group(1).endswith("/") and _is_path(first.group(1)) else None
        elif not line.strip():
            folder = None
        parts = cells if cells else [line]
        for n, part in enumerate(parts):
            base = columns[n] if cells and n < len(columns) else None if cells else folder
            for token in _CODE.findall(part):
                if _is_path(token):
                    paths.append(token)
                elif base and _relative(token) and not token.startswith(("/", "~", ".")):
                    paths.append(base + token)
    return paths


def _exists(path: str) -> bool:
    """Whether the path exists; a placeholder in capitals (``backends/NAME.py``) stands for any name."""
    if (ROOT / path).exists():
        return True
    pattern = re.sub(r"\b[A-Z]{3,}\b", "*", path.rstrip("/"))
    return "*" in pattern and any(ROOT.glob(pattern))


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_named_paths_exist(page: Path) -> None:
    text = page.read_text(encoding="utf-8")
    fenced = " ".join(f"`{t}`" for block in _FENCE.findall(text) for t in block.split() if _is_path(t))
    named = [*_named_paths(_FENCE.sub("", text)), *_CODE.findall(fenced)]
    assert page.name != "README.md" or len(named) > 50, "the README's map names few paths: is the check blind?"
    missing = sorted({p for p in named if not _exists(p)})
    assert missing == [], f"{page.name} names paths that do not exist"


def test_the_path_check_resolves_table_columns_and_list_folders() -> None:
    text = ("| endpoint | route (`gateway/routes/`) |\n|---|---|\n| chat | `openai.py`, `nowhere.py` |\n\n"
            "- `backends/` — `base.py`, `llama/`\n  and `types.py`\n\nthen `loose.py` and `compat/wire.py`\n")
    named = _named_paths(text)
    assert named == ["gateway/routes/openai.py", "gateway/routes/nowhere.py", "backends/", "backends/base.py",
                     "backends/llama/", "backends/types.py", "compat/wire.py"]
    assert [p for p in named if not _exists(p)] == ["gateway/routes/nowhere.py", *(
        ["backends/llama/"] if not (ROOT / "backends" / "llama").exists() else [])]
