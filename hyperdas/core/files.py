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


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else 0


def _gib(n: float) -> str:
    if n < 2**20:
        return f"{n} bytes"
    return f"{n / 2**30:.2f} GiB" if n >= 2**28 else f"{n / 2**20:.1f} MiB"


def disk_full(err: BaseException) -> bool:
    """Whether `err` reports a full disk (torch.save says "[enforce fail at inline_container.cc] ...
    unexpected pos")."""
    import errno

    text = str(err)
    return getattr(err, "errno", None) == errno.ENOSPC or "unexpected pos" in text or "No space left" in text


def not_writable(err: BaseException) -> bool:
    import errno

    return getattr(err, "errno", None) in (errno.EROFS, errno.EACCES, errno.EPERM)


def why_not_written(err: BaseException, target: Path, partial: Path | None = None) -> str:
    """One line on why `target` could not be written: for a full disk, the folder, its free space
    and how much the write had taken before it failed; for a read-only or forbidden folder, that."""
    import shutil

    first = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
    folder = target.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if disk_full(err):
        taken = f"; the write had taken {_gib(_size(partial))} when it failed" if partial is not None else ""
        free = _gib(shutil.disk_usage(folder).free)
        return f"the disk holding {folder} is full ({free} free{taken}): free space there, or write elsewhere"
    if not_writable(err):
        return f"{folder} is not writable ({os.strerror(err.errno)}): choose a writable folder"
    return first


@contextmanager
def atomic_paths(*paths: str | Path) -> Iterator[list[Path]]:
    """Temporary paths beside `paths` to write to; when the block ends normally all are flushed to
    disk, then renamed onto their names, so a failure while any is written (a full disk) leaves
    every previous file; when the block raises they are removed. Files that belong together (a
    checkpoint's weights and its config) are written this way."""
    paths = [Path(p) for p in paths]
    tmps = [p.parent / f".{p.name}{TMP_MARK}{os.getpid()}-{secrets.token_hex(4)}" for p in paths]
    current = paths[0]
    try:
        for path in paths:
            current = path
            path.parent.mkdir(parents=True, exist_ok=True)
        current = paths[0]  # the block writes the set in its own order: named by its first file
        yield tmps
        for path, tmp in zip(paths, tmps):
            current = path
            with open(tmp, "rb+") as handle:
                os.fsync(handle.fileno())
        for path, tmp in zip(paths, tmps):  # a rename takes no space: past this point nothing fails
            os.replace(tmp, path)
        for folder in {p.parent for p in paths}:
            _fsync_folder(folder)
    except Exception as err:  # torch.save reports a full disk as a RuntimeError, safetensors as its own
        from hyperdas.core.errors import WriteError

        if not (isinstance(err, OSError | RuntimeError) or disk_full(err)):
            raise
        why = why_not_written(err, current, tmps[paths.index(current)])
        others = f" and {', '.join(p.name for p in paths if p != current)}" if len(paths) > 1 else ""
        raise WriteError(
            f"could not write {current}{others} ({why}); the previous files, if any, are unchanged"
        ) from err
    finally:
        for tmp in tmps:
            tmp.unlink(missing_ok=True)


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary path beside `path` to write to; renamed onto `path` when the block ends normally,
    removed when it raises (`atomic_paths` for one file)."""
    with atomic_paths(path) as (tmp,):
        yield tmp


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
    except (OSError, RuntimeError) as err:
        from hyperdas.core.errors import WriteError

        why = why_not_written(err, path, tmp)
        raise WriteError(f"could not write {path} ({why}); the previous folder, if any, is unchanged") from err
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


CHUNK = 64 * 2**20


def file_checksums(path: str | Path) -> dict:
    """A file's size and the CRC32 of each of its CHUNK-byte pieces, kept in a meta file so that a
    file cut short or changed on disk is found on open."""
    import zlib

    path = Path(path)
    if not path.is_file():
        return {"bytes": None, "crc32": []}
    sums = []
    with open(path, "rb") as handle:
        while piece := handle.read(CHUNK):
            sums.append(zlib.crc32(piece))
    return {"bytes": path.stat().st_size, "crc32": sums}


def check_checksums(path: str | Path, expected: dict | None, fix: str) -> None:
    """Refuse `path` (CheckpointError naming it and `fix`) when it differs from the `file_checksums`
    its meta recorded; files written before checksums were kept (`expected` None) pass."""
    from hyperdas.core.errors import CheckpointError

    if expected is None:
        return
    found = file_checksums(path)
    if found != expected:
        what = "size" if found["bytes"] != expected.get("bytes") else "content"
        raise CheckpointError(
            f"{path} differs from the checksums recorded when it was written ({what}: {found['bytes']} bytes, "
            f"{expected.get('bytes')} recorded): it was damaged or replaced; {fix}"
        )


SUMS = ".checksums.json"  # beside a file written by `checked_path`


@contextmanager
def checked_path(path: str | Path) -> Iterator[Path]:
    """`atomic_path` that also writes the file's `file_checksums` beside it (`<name>.checksums.json`),
    the two as one set; `read_checked` verifies them."""
    path = Path(path)
    with atomic_paths(path, path.with_name(path.name + SUMS)) as (tmp, sums):
        yield tmp
        import json

        sums.write_text(json.dumps(file_checksums(tmp)))


def read_checked(path: str | Path, read, fix: str):
    """`read_or_explain` after checking `path` against the checksums written with it (if any)."""
    import json

    path = Path(path)
    sums = path.with_name(path.name + SUMS)
    if sums.is_file():
        check_checksums(path, read_or_explain(sums, lambda p: json.loads(p.read_text()), fix), fix)
    return read_or_explain(path, read, fix)


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
