"""Results are data: JSON files with metrics, config, seed, model, versions and timings."""

from __future__ import annotations

import datetime
import importlib.metadata
import json
import os
import platform
import re
from pathlib import Path
from typing import Any

from hyperdas.core.files import write_text

_PACKAGES = ("hyperdas", "torch", "transformers", "datasets", "accelerate", "bitsandbytes", "gguf")


def model_dir_name(name: str) -> str:
    """A results folder name for a model name (hub ids lose their org; odd characters go)."""
    tail = name.rstrip("/").split("/")[-1]
    return re.sub(r"[^A-Za-z0-9._-]+", "_", tail) or "model"


def results_dir(root: str | Path, model_name: str) -> Path:
    path = Path(root) / model_dir_name(model_name)
    path.mkdir(parents=True, exist_ok=True)
    return path


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _commit() -> str | None:
    """The package checkout's git commit (with "+changes" when its tracked files differ), if any."""
    import subprocess

    if not (REPO / "pyproject.toml").is_file():  # an installed copy, not a checkout
        return None
    try:
        head = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no", "--", "hyperdas", "notebooks"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return head + ("+changes" if dirty else "") if head else None


def environment() -> dict[str, Any]:
    """Package versions and the machine, recorded with every result."""
    import torch  # here, so the command lines' --help imports no torch

    versions = {}
    for name in _PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": _cpu_name(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda_device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "packages": versions,
        "commit": _commit(),
    }


def machine(record: dict) -> str:
    """The machine a results file was written on, from its `environment`, in words."""
    env = record.get("environment") or {}
    return env.get("cuda_device") or f"{env.get('cpu', '?')}, {env.get('cpu_count', '?')} cores"


def _jsonable(value: Any) -> Any:
    if hasattr(value, "to_dict"):
        return value.to_dict()
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "tolist"):  # tensors and arrays
        return value.tolist()
    raise TypeError(f"cannot write {type(value).__name__} to JSON")


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def write_json(path: str | Path, payload: dict[str, Any]) -> Path:
    """Write `payload` plus a timestamp and the environment; returns the path."""
    record = {**payload, "written_at": _now(), "environment": environment()}
    return write_text(path, json.dumps(record, indent=2, default=_jsonable) + "\n")


def read_json(path: str | Path) -> dict[str, Any]:
    """A results file; one that is empty or cut short is named with the fix (rerun what wrote it)."""
    from hyperdas.core.errors import ResultsError

    path = Path(path)
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ResultsError(f"{path} is not valid JSON ({err}): rerun the notebook or command that writes it") from err


def write_section(path: str | Path, key: str, section: dict[str, Any]) -> Path:
    """Set one top-level section of a results file, keeping the others (e.g. benchmarks.json). Each
    section carries the machine and time that measured it: a section written before sections did
    takes the file's record of its last write."""
    path = Path(path)
    record = read_json(path) if path.exists() else {}
    older = {"written_at": record.pop("written_at", None), "environment": record.pop("environment", None)}
    for name, value in record.items():
        if isinstance(value, dict) and "environment" not in value and older["environment"] is not None:
            record[name] = {**value, **older}
    return write_json(path, {**record, key: {**section, "written_at": _now(), "environment": environment()}})


REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "configs"  # the profiles


def portable_path(path: str | Path, results_root: str | Path | None = None) -> str:
    """A path as results files record it, the same on every machine: `<results>/...` inside the
    results root, `<cache>/...` inside the cache, relative inside the repository; other paths as given."""
    from hyperdas.core.cache import cache_root

    given = Path(path).expanduser()
    if not (given.is_absolute() or given.exists()):
        return str(path)  # a hub id, not a path
    path = given.resolve()
    for prefix, root in (("<results>", results_root), ("<cache>", cache_root()), ("", REPO)):
        if root is not None and path.is_relative_to(Path(root).expanduser().resolve()):
            tail = path.relative_to(Path(root).expanduser().resolve()).as_posix()
            return f"{prefix}/{tail}" if prefix else tail
    return str(path)


def resolve_path(text: str, results_root: str | Path | None = None) -> Path:
    """The inverse of `portable_path` on this machine."""
    from hyperdas.core.cache import cache_root

    if text.startswith("<results>/"):
        if results_root is None:
            raise ValueError(f"{text} is relative to a results root: pass results_root")
        return Path(results_root) / text.removeprefix("<results>/")
    if text.startswith("<cache>/"):
        return cache_root() / text.removeprefix("<cache>/")
    path = Path(text)
    return path if path.is_absolute() else REPO / path
