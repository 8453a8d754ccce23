"""Output folder safety: never write into a non-empty folder unless asked, never into the base model."""

from __future__ import annotations

from pathlib import Path

from llm_unlearn.errors import OutputDirError


def prepare_output_dir(path: str | Path, overwrite: bool = False, protected: list[str | Path] | None = None) -> Path:
    """Create `path` for writing results.

    Args:
        path: the output folder.
        overwrite: allow a non-empty folder (files in it may be replaced).
        protected: folders that must never be written into (the base model's folder, an input adapter).

    Raises:
        OutputDirError: when `path` is (inside) a protected folder, or non-empty without `overwrite`.
    """
    out = Path(path).resolve()
    for folder in protected or []:
        if folder is None or not Path(folder).exists():
            continue
        guarded = Path(folder).resolve()
        if out == guarded or guarded in out.parents:
            raise OutputDirError(f"{path}: refusing to write into the input model folder {folder}")
    if out.exists() and not out.is_dir():
        raise OutputDirError(f"{path}: exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise OutputDirError(f"{path}: folder is not empty; pass --overwrite (or overwrite: true) to replace it")
    out.mkdir(parents=True, exist_ok=True)
    return out


def library_versions() -> dict[str, str]:
    """Versions of Python and the libraries that shape a result, for manifests and model cards."""
    import importlib.metadata as md
    import platform

    out = {"python": platform.python_version()}
    for name in ("llm-unlearn", "torch", "transformers", "trl", "peft", "accelerate", "deepspeed", "datasets"):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            continue
    return out
