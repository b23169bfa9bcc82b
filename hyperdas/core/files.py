"""Results and checkpoints are written whole or not at all.

Every writer goes through `atomic_path`: the bytes go to a temporary file in the same folder, are
flushed to disk, and the file is renamed onto its name, so a reader (or a run killed at any point)
sees the old file or the new one, never a torn one. JSONL logs grow by `append_line`: one write of
one whole line. A crash can leave a temporary file behind; `remove_leftovers` clears them.
"""

from __future__ import annotations

import functools
import inspect
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

TMP_MARK = ".tmp-"


def _fsync_folder(folder: Path) -> None:
    try:
        handle = os.open(folder, os.O_RDONLY)
    except OSError:  # e.g. a platform without directory handles
        return
    try:
        os.fsync(handle)
    finally:
        os.close(handle)


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary path beside `path` to write to; renamed onto `path` when the block ends normally,
    removed when it raises."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}{TMP_MARK}{os.getpid()}-{secrets.token_hex(4)}"
    try:
        yield tmp
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
        _fsync_folder(path.parent)
    except (OSError, RuntimeError) as err:  # torch.save reports a full disk as a RuntimeError
        from hyperdas.core.errors import WriteError

        first = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
        raise WriteError(f"could not write {path} ({first}); the previous file, if any, is unchanged") from err
    finally:
        tmp.unlink(missing_ok=True)


@contextmanager
def atomic_folder(path: str | Path) -> Iterator[Path]:
    """A temporary folder beside `path` to fill; it replaces `path` when the block ends normally, and
    is removed when it raises, so a failure while writing (a full disk, a kill) leaves the previous
    folder as it was. The old folder is moved aside before the new one takes its name and deleted
    after; a folder left aside by a kill between those two renames is put back by the next writer."""
    import shutil

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    aside = path.parent / f".{path.name}.previous"
    if aside.is_dir() and not path.exists():  # a kill between the two renames of the last write
        os.replace(aside, path)
    tmp = path.parent / f".{path.name}{TMP_MARK}{os.getpid()}-{secrets.token_hex(4)}"
    tmp.mkdir()
    try:
        yield tmp
        if path.exists():
            shutil.rmtree(aside, ignore_errors=True)
            os.replace(path, aside)
        os.replace(tmp, path)
        _fsync_folder(path.parent)
        shutil.rmtree(aside, ignore_errors=True)
    except OSError as err:
        from hyperdas.core.errors import WriteError

        first = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
        raise WriteError(f"could not write {path} ({first}); the previous folder, if any, is unchanged") from err
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_text(path: str | Path, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def append_line(path: str | Path, line: str) -> None:
    """Append one line in a single write, so a log never holds half a line."""
    data = (line.rstrip("\n") + "\n").encode()
    handle = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
    try:
        os.write(handle, data)
        os.fsync(handle)
    finally:
        os.close(handle)


def remove_leftovers(folder: str | Path) -> list[Path]:
    """Delete the temporary files a killed writer left in `folder` (this module's and the older
    `<name>.tmp` form); returns what was removed."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = [p for p in folder.iterdir() if p.is_file() and (TMP_MARK in p.name or p.name.endswith(".tmp"))]
    for path in found:
        path.unlink(missing_ok=True)
    return found


def read_or_explain(path: str | Path, read, fix: str):
    """`read(path)`, or a CheckpointError that names the file, why it could not be read and `fix`
    (an empty or truncated file, e.g. from a full disk or a writer of an older version)."""
    from hyperdas.core.errors import CheckpointError

    path = Path(path)
    try:
        return read(path)
    except FileNotFoundError:
        raise
    except Exception as err:  # safetensors, torch and json each raise their own kind
        size = path.stat().st_size if path.exists() else 0
        first = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
        raise CheckpointError(f"{path} ({size} bytes) cannot be read: {first}; {fix}") from err


LOCK = ".lock"


@contextmanager
def folder_lock(folder: str | Path) -> Iterator[None]:
    """One writer per checkpoint folder. A second is refused at once with the holder's pid; a lock
    whose holder died (even by kill -9) is free again, since the OS drops it with the process. The
    holder then clears the temporary files a killed writer left."""
    from filelock import FileLock, Timeout

    from hyperdas.core.errors import HyperDASError

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(folder / LOCK), timeout=0)
    try:
        lock.acquire()
    except Timeout:
        holder = (folder / f"{LOCK}.pid").read_text().strip() if (folder / f"{LOCK}.pid").is_file() else "?"
        raise HyperDASError(
            f"{folder} is in use by another run (pid {holder}): wait for it, or write to another results folder"
        ) from None
    try:
        (folder / f"{LOCK}.pid").write_text(f"{os.getpid()}\n")
        remove_leftovers(folder)  # holding the lock, any temporary file is a dead writer's
        yield
    finally:
        (folder / f"{LOCK}.pid").unlink(missing_ok=True)
        lock.release()


def one_writer(folder_arg: str):
    """Decorator: the function holds `folder_lock` on its `folder_arg` argument while it runs (when
    that is given, and only in the main process of a `runtime` argument, the one that writes)."""

    def wrap(fn):
        signature = inspect.signature(fn)

        @functools.wraps(fn)
        def locked(*args, **kwargs):
            bound = signature.bind(*args, **kwargs)
            bound.apply_defaults()
            folder, runtime = bound.arguments[folder_arg], bound.arguments.get("runtime")
            if folder is None or (runtime is not None and not runtime.is_main):
                return fn(*args, **kwargs)
            with folder_lock(folder):
                return fn(*args, **kwargs)

        return locked

    return wrap
