"""Where a model's files are on this machine, fetching them from Hugging Face when they are not yet.

Three kinds of source (see :class:`gateway.config.Source`): a Hugging Face repo, downloaded on first use
into ``models_path`` (only the ``include`` patterns, with a progress bar on the console); a local
path; an installed Python package that ships the files. Every failure names the model and where it
looked, and leaves the rest of the server alone.
"""

from __future__ import annotations

import enum
import importlib.util
import logging
from collections.abc import Callable
from pathlib import Path

from compat.errors import ModelUnavailable
from gateway.config import HuggingFaceSource, ModelConfig

__all__ = ["SourceState", "download", "has_files", "local_files", "source_state"]

log = logging.getLogger("syn4pse.sources")


class SourceState(enum.StrEnum):
    PRESENT = "present"
    NOT_DOWNLOADED = "not downloaded"
    MISSING = "missing"


def _hf_dir(models_dir: Path, hf: HuggingFaceSource) -> Path:
    org, name = hf.repo.split("/", 1)
    return models_dir / "huggingface" / org / name / hf.revision.replace("/", "--")


def _package_dir(package: str) -> Path | None:
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    if spec is None:
        return None
    if spec.submodule_search_locations:
        return Path(next(iter(spec.submodule_search_locations)))
    return Path(spec.origin).parent if spec.origin else None


def _root(name: str, model: ModelConfig, models_dir: Path) -> Path:
    source = model.source
    if source.huggingface is not None:
        return _hf_dir(models_dir, source.huggingface)
    if source.path is not None:
        return Path(source.path).expanduser()
    assert source.package is not None
    found = _package_dir(source.package)
    if found is None:
        raise ModelUnavailable(
            f"Model '{name}' ships in the Python package '{source.package}', which is not installed.")
    return found


def _with_file(root: Path, model: ModelConfig) -> Path:
    return root / model.source.file if model.source.file else root


def _marker(folder: Path) -> Path:
    return folder / ".syn4pse-complete"


def has_files(model: ModelConfig) -> bool:
    """Whether the model has files at all (an upstream model has none: it names no source)."""
    source = model.source
    return any(x is not None for x in (source.huggingface, source.path, source.package))


def source_state(name: str, model: ModelConfig, models_dir: Path) -> SourceState:
    """Whether the model's files are here, without fetching anything."""
    if not has_files(model):
        return SourceState.PRESENT
    try:
        root = _root(name, model, models_dir)
    except ModelUnavailable:
        return SourceState.MISSING
    if model.source.huggingface is not None and not _marker(root).exists():
        return SourceState.NOT_DOWNLOADED
    return SourceState.PRESENT if _with_file(root, model).exists() else SourceState.MISSING


def _progress_bar(report: Callable[[int, int], None]) -> type:
    """huggingface_hub's files bar, still drawn on the console, also reporting (done, total) files."""
    from tqdm.auto import tqdm

    class Bar(tqdm):  # type: ignore[misc]
        def update(self, n: float | None = 1) -> bool | None:
            shown: bool | None = super().update(n)
            report(int(self.n), int(self.total or 0))
            return shown

    return Bar


def download(name: str, model: ModelConfig, models_dir: Path,
             progress: Callable[[int, int], None] | None = None) -> Path:
    """Fetch a Hugging Face source (blocking; no-op when complete). Returns the local folder.

    ``progress(done, total)`` hears how many of the files are fetched.
    """
    hf = model.source.huggingface
    assert hf is not None
    folder = _hf_dir(models_dir, hf)
    if _marker(folder).exists():
        return folder
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError, RepositoryNotFoundError

    log.info("model %s: downloading %s@%s (%s) into %s", name, hf.repo, hf.revision,
             ", ".join(hf.include) or "all files", folder)
    try:
        snapshot_download(repo_id=hf.repo, revision=hf.revision, allow_patterns=hf.include or None,
                          local_dir=folder, tqdm_class=_progress_bar(progress) if progress is not None else None)
    except RepositoryNotFoundError:
        raise ModelUnavailable(
            f"Model '{name}' could not be fetched: the Hugging Face repo '{hf.repo}' (revision"
            f" '{hf.revision}') was not found.") from None
    except (LocalEntryNotFoundError, HfHubHTTPError, OSError) as e:
        reason = type(e).__name__
        if isinstance(e, LocalEntryNotFoundError) or "connect" in str(e).lower():
            reason = "the hub could not be reached"
        raise ModelUnavailable(
            f"Model '{name}' could not be fetched from the Hugging Face repo '{hf.repo}': {reason}.") from None
    if hf.include and not any(p.is_file() for p in folder.rglob("*") if ".cache" not in p.parts):
        raise ModelUnavailable(
            f"Model '{name}': no file in the Hugging Face repo '{hf.repo}' matches {hf.include}.")
    _marker(folder).touch()
    return folder


def local_files(name: str, model: ModelConfig, models_dir: Path) -> Path:
    """The model's file or folder on disk, downloading it first if need be (blocking)."""
    root = download(name, model, models_dir) if model.source.huggingface else _root(name, model, models_dir)
    path = _with_file(root, model)
    if not path.exists():
        where = "its source" if model.source.huggingface else str(model.source.package or "its path")
        raise ModelUnavailable(f"Model '{name}': {model.source.file or 'the model file'} was not found in {where}.")
    return path
