"""On-disk cache for converted models and derived data, safe against concurrent first use."""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from filelock import FileLock


def cache_root() -> Path:
    """Cache for converted models and data; set HYPERDAS_CACHE to move it."""
    root = Path(os.environ.get("HYPERDAS_CACHE", Path.home() / ".cache" / "hyperdas")).expanduser()
    if root.exists() and not root.is_dir():
        from hyperdas.core.errors import HyperDASError

        raise HyperDASError(f"the cache {root} (HYPERDAS_CACHE) is a file, not a folder: point it at a folder")
    return root


def convert_once(folder: Path, build: Callable[[Path], None]) -> Path:
    """Run `build(tmp_folder)` once per `folder`, safe against concurrent callers and crashes.

    The result is written to a temporary sibling and renamed into place, so a reader never
    sees a half-written folder; a lock file makes concurrent first calls wait for one builder.
    """
    done = folder / ".complete"
    if done.exists():
        return folder
    try:
        return _convert(folder, build, done)
    except (OSError, RuntimeError) as err:
        from hyperdas.core.errors import HyperDASError
        from hyperdas.core.files import disk_full, not_writable, why_not_written

        if not (disk_full(err) or not_writable(err)):
            raise
        why = why_not_written(err, folder / ".complete")
        raise HyperDASError(
            f"could not fill the cache {folder} ({why}); set HYPERDAS_CACHE to a writable folder with space"
        ) from err


def _convert(folder: Path, build: Callable[[Path], None], done: Path) -> Path:
    folder.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(folder) + ".lock"):
        if done.exists():
            return folder
        if folder.exists():  # an incomplete folder cannot come from us; do not trust it
            shutil.rmtree(folder)
        tmp = Path(tempfile.mkdtemp(prefix=folder.name + ".tmp-", dir=folder.parent))
        tmp.chmod(0o755)  # mkdtemp makes it private; the cache may be shared
        try:
            build(tmp)
            (tmp / ".complete").write_text("ok\n")
            os.replace(tmp, folder)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return folder


def file_sha256(paths: list[Path], chunk: int = 1 << 22) -> str:
    """sha256 of the concatenation of `paths`, in order."""
    digest = hashlib.sha256()
    for path in paths:
        with open(path, "rb") as handle:
            while block := handle.read(chunk):
                digest.update(block)
    return digest.hexdigest()
