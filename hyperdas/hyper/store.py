"""An activation store: the frozen target's read passes computed once per pair, not once per step.

HyperDAS reads the target on every base and source prompt at every training step
(`hyperdas.hyper.model.read_states`); the target never changes and each pair comes back every
epoch, so the same states are recomputed ~5 times in a 600-step run. The store runs the read
passes once, keeps per pair the layer-L states of the whole base read row (`hyperdas.hyper.reads`)
and of the source up to its last selectable token (the target's dtype: exact), with an entity read
also the layer-L states of the whole base row the edited run takes (so that run starts above the
layer, as it does from a prompt read's own states: `hyperdas.target.hooks.start_after`), and the normalised
states of every layer at the selectable positions (`dtype`; the hypernetwork's own dtype is exact,
float16 halves the size), and serves the same views the read passes give (tested equal within
float tolerance).

Where: in memory, or in files under a folder (memory-mapped, reused by later runs). A folder holds
a `meta.json` with what the states were computed from (the target's weights fingerprint and dtype,
the token ids, the layer, the package version, the store format); a store whose meta differs, or
that was never finished, or whose files differ from the sizes and per-chunk CRC32 checksums its meta
recorded, is rebuilt, never reused. A store larger than `max_bytes` (default: half
the available memory, or the free disk space less 1 GiB) is refused before anything is computed.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

from hyperdas.core.errors import ResourceError, WriteError
from hyperdas.core.files import file_checksums, why_not_written, write_text
from hyperdas.hyper.reads import ReadRule
from hyperdas.target.evaluate import states_after
from hyperdas.target.memory import GIB, available
from hyperdas.target.provenance import package_version, weights_fingerprint

FORMAT = 3  # bump when what is stored, or how, changes: older folders are then rebuilt
KINDS = ("none", "memory", "disk")
DTYPES = {"auto": None, "float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
META = "meta.json"
BUFFERS = ("exact.bin", "flat.bin")


def _rule(read: ReadRule | bool) -> ReadRule:
    """A `ReadRule`; a bool is the paper's prompt read with (True) or without the suffix."""
    return read if isinstance(read, ReadRule) else ReadRule(include_suffix=bool(read))


def _reads(enc, read: ReadRule):
    """(base read rows, their last selectable positions, source rows, theirs), for every pair."""
    everything = list(range(len(enc)))
    base, base_last, _ = read.base_rows(enc, everything)
    source, source_last = read.source_rows(enc, everything)
    return base, base_last, source, source_last


def _sizes(enc, read: ReadRule) -> list[tuple[int, int, int, int]]:
    """Per pair: (base read row length, base selectable length, source selectable length, length of
    the edited run's start: the base row when the read rows are not the base prompts, else 0)."""
    base, base_last, _, source_last = _reads(enc, read)
    starts = [0] * len(enc) if read.reads_prompt else [len(r) for r in enc.base]
    return [(len(b), bl + 1, sl + 1, e) for b, bl, sl, e in zip(base, base_last, source_last, starts)]


def store_bytes(target, enc, read: ReadRule | bool = False, dtype: torch.dtype | None = None) -> int:
    """Bytes a store of `enc` takes: layer-L states in the target's dtype, every layer's normalised
    states in `dtype` (default: the target's)."""
    D, layers = target.hidden_size, target.n_layers + 1
    exact = _target_dtype(target).itemsize
    flat = (dtype or _target_dtype(target)).itemsize
    return sum((w + s + e) * D * exact + (b + s) * layers * D * flat for w, b, s, e in _sizes(enc, _rule(read)))


def default_limit(kind: str, folder: str | Path | None = None) -> int | None:
    """Bytes a store may take by default: half the available memory, or the free disk space of
    `folder` less 1 GiB; None when unknown."""
    if kind == "disk":
        Path(folder).mkdir(parents=True, exist_ok=True)
        return shutil.disk_usage(folder).free - GIB
    free = available(torch.device("cpu"))
    return free // 2 if free is not None else None


def _target_dtype(target) -> torch.dtype:
    return next(target.model.parameters()).dtype


def _key(target, enc, layer: int, read: ReadRule, dtype: torch.dtype) -> dict:
    """What the stored states depend on: a store with another key is stale."""
    digest = hashlib.sha256()
    for part in _reads(enc, read):
        digest.update(json.dumps(part).encode())
    if not read.reads_prompt:  # the edited run's start states: the whole base rows
        digest.update(json.dumps(enc.base).encode())
    return {
        "format": FORMAT,
        "package": package_version(),
        "model": target.name,
        "weights_sha256": weights_fingerprint(target),
        "target_dtype": str(_target_dtype(target)),
        "dtype": str(dtype),
        "layer": layer % target.n_layers,
        "read": read.key(),
        "tokens_sha256": digest.hexdigest(),
    }


class ActivationStore:
    """The read-pass views of the pairs of one `Encoded`, for one layer (see module doc)."""

    def __init__(
        self,
        target,
        enc,
        layer: int,
        read: ReadRule | bool = False,
        kind: str = "memory",
        dtype: str = "auto",
        folder: str | Path | None = None,
        max_bytes: int | None = None,
        batch_size: int = 32,
        progress: bool = True,
    ):
        if kind not in KINDS[1:]:
            raise ValueError(f"activation store kind {kind!r}: use one of {KINDS[1:]}")
        if dtype not in DTYPES:
            raise ValueError(f"activation store dtype {dtype!r}: use one of {tuple(DTYPES)}")
        if kind == "disk" and folder is None:
            raise ValueError("a disk activation store needs a folder")
        self.enc, self.layer, self.read = enc, layer % target.n_layers, _rule(read)
        self.dtype = DTYPES[dtype] or _target_dtype(target)
        self.exact = _target_dtype(target)
        self.D, self.n = target.hidden_size, target.n_layers + 1
        self.sizes = _sizes(enc, self.read)
        self.nbytes = store_bytes(target, enc, self.read, self.dtype)
        self.key = _key(target, enc, layer, self.read, self.dtype)
        self.folder = Path(folder) if folder is not None else None
        self.kind = kind
        self._index()
        if kind == "disk" and self._reusable():
            self._open(write=False)
            self.built, self.seconds = False, 0.0
            return
        self._check_room(max_bytes)
        self._open(write=True)
        started = time.perf_counter()
        self._build(target, batch_size, progress)
        self.seconds, self.built = time.perf_counter() - started, True
        if kind == "disk":
            files = {name: file_checksums(self.folder / name) for name in BUFFERS}
            write_text(self.folder / META, json.dumps({**self.key, "bytes": self.nbytes, "files": files}, indent=1))

    def _index(self) -> None:
        """Offsets of each pair's parts in the two buffers (exact: layer-L states of the base read,
        the source and the edited run's start; flat: all layers)."""
        self.exact_at, self.flat_at = [], []
        exact = flat = 0
        for w, b, s, e in self.sizes:
            self.exact_at.append((exact, exact + w * self.D, exact + (w + s) * self.D, exact + (w + s + e) * self.D))
            self.flat_at.append((flat, flat + b * self.n * self.D, flat + (b + s) * self.n * self.D))
            exact, flat = self.exact_at[-1][3], self.flat_at[-1][2]
        self.exact_numel, self.flat_numel = exact, flat

    def _reusable(self) -> bool:
        meta = self.folder / META
        if not meta.is_file():
            return False
        try:
            saved = json.loads(meta.read_text())
        except (OSError, json.JSONDecodeError):
            saved = {}
        if {k: saved.get(k) for k in self.key} == self.key:
            files = saved.get("files", {})
            damaged = [name for name in BUFFERS if files.get(name) != file_checksums(self.folder / name)]
            if not damaged:
                return True
            print(f"activation store {self.folder}: {', '.join(damaged)} differ from their checksums: rebuilding it")
            return False
        differ = sorted(k for k in self.key if saved.get(k) != self.key[k])
        print(f"activation store {self.folder} was computed from other {', '.join(differ)}: rebuilding it")
        return False

    def _check_room(self, max_bytes: int | None) -> None:
        where = "disk" if self.kind == "disk" else "memory"
        if max_bytes is None:
            max_bytes = default_limit(self.kind, self.folder)
        if max_bytes is not None and self.nbytes > max_bytes:
            raise ResourceError(
                f"the activation store of {len(self.sizes)} pairs needs {self.nbytes / GIB:.2f} GiB of {where}, "
                f"more than the {max(max_bytes, 0) / GIB:.2f} GiB it may take: use dtype float16, fewer pairs, "
                f"a larger limit, another store kind, or none"
            )

    def _open(self, write: bool) -> None:
        if self.kind == "memory":
            self.exact_buffer = torch.zeros(self.exact_numel, dtype=self.exact)
            self.flat_buffer = torch.zeros(self.flat_numel, dtype=self.dtype)
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        if write:  # an unfinished store has no meta: it is never reused
            (self.folder / META).unlink(missing_ok=True)
        for name, numel, dtype in (("exact", self.exact_numel, self.exact), ("flat", self.flat_numel, self.dtype)):
            path = self.folder / f"{name}.bin"
            if write:
                path.unlink(missing_ok=True)
                _reserve(path, numel * dtype.itemsize)
            buffer = torch.from_file(str(path), shared=True, size=numel, dtype=dtype)
            setattr(self, f"{name}_buffer", buffer)

    @torch.no_grad()
    def _build(self, target, batch_size: int, progress: bool) -> None:
        from hyperdas.hyper.model import read_states

        rows, base_last, sources, source_last = _reads(self.enc, self.read)
        order = sorted(range(len(rows)), key=lambda i: len(rows[i]))  # similar widths: little padding
        for start in tqdm(range(0, len(order), batch_size), desc="activation store", disable=not progress):
            index = order[start : start + batch_size]
            base = read_states(target, [rows[i] for i in index], [base_last[i] for i in index], self.layer, True)
            source = read_states(target, [sources[i] for i in index], [source_last[i] for i in index], self.layer)
            starts = (
                None if self.read.reads_prompt else states_after(target, self.layer, [self.enc.base[i] for i in index])
            )
            for row, i in enumerate(index):
                w, b, s, e = self.sizes[i]
                e0, e1, e2, e3 = self.exact_at[i]
                f0, f1, f2 = self.flat_at[i]
                self.exact_buffer[e0:e1] = base[0][row, :w].reshape(-1).to(self.exact)
                self.exact_buffer[e1:e2] = source[0][row, :s].reshape(-1).to(self.exact)
                if starts is not None:
                    self.exact_buffer[e2:e3] = starts[row, :e].reshape(-1).to(self.exact)
                self.flat_buffer[f0:f1] = base[2][row, : b * self.n].reshape(-1).to(self.dtype)
                self.flat_buffer[f1:f2] = source[2][row, : s * self.n].reshape(-1).to(self.dtype)

    def serves(self, enc, layer: int, read: ReadRule | bool, rows, index, offsets) -> bool:
        """Whether this store holds the read passes of this call: the same pairs object, layer and
        read rule, and right-padded base rows as encoded (teacher-forced training and scoring;
        generation's left-padded prompts are read afresh)."""
        return (
            enc is self.enc
            and layer % (self.n - 1) == self.layer
            and _rule(read) == self.read
            and not any(offsets)
            and all(r is enc.base[i] for r, i in zip(rows, index))
        )

    def views(self, index: list[int], device) -> tuple[tuple, tuple]:
        """(base view, source view) of pairs `index`, as `read_states` returns them (padding: zeros)."""
        base_layer, base_flat, source_layer, source_flat = [], [], [], []
        for i in index:
            e0, e1, e2, _ = self.exact_at[i]
            f0, f1, f2 = self.flat_at[i]
            base_layer.append(self.exact_buffer[e0:e1].view(-1, self.D))
            source_layer.append(self.exact_buffer[e1:e2].view(-1, self.D))
            base_flat.append(self.flat_buffer[f0:f1].view(-1, self.n, self.D))
            source_flat.append(self.flat_buffer[f1:f2].view(-1, self.n, self.D))
        rows, base_last, _ = self.read.base_rows(self.enc, index)
        sources, source_last = self.read.source_rows(self.enc, index)
        base = _view(base_layer, base_flat, [len(r) for r in rows], base_last, device)
        source = _view(source_layer, source_flat, [len(r) for r in sources], source_last, device)
        return base, source

    def starts(self, index: list[int], device) -> torch.Tensor | None:
        """(B, T, D) the unedited layer-L states of the base rows of pairs `index`, right-padded
        with zeros, from which the edited run continues; None when the read rows are the base
        prompts (their own layer-L states in `views` serve)."""
        if self.read.reads_prompt:
            return None
        rows = [self.exact_buffer[self.exact_at[i][2] : self.exact_at[i][3]].view(-1, self.D) for i in index]
        out = rows[0].new_zeros(len(rows), max(r.shape[0] for r in rows), self.D)
        for b, r in enumerate(rows):
            out[b, : r.shape[0]] = r
        return out.to(device)

    def describe(self) -> str:
        where = f"in {self.folder}" if self.kind == "disk" else "in memory"
        how = f"built in {self.seconds:.0f} s" if self.built else "reused"
        return (
            f"activation store of {len(self.sizes)} pairs {where}: {self.nbytes / GIB:.2f} GiB "
            f"({str(self.dtype).removeprefix('torch.')}), {how}"
        )


def _reserve(path: Path, nbytes: int) -> None:
    """Claim the disk blocks of a store file before it is mapped: a full disk then fails here with a
    named error, instead of killing the process (SIGBUS) when a mapped page cannot be written."""
    try:
        with open(path, "wb") as handle:
            if nbytes and hasattr(os, "posix_fallocate"):
                os.posix_fallocate(handle.fileno(), 0, nbytes)
    except OSError as err:
        path.unlink(missing_ok=True)
        raise WriteError(f"could not write the activation store {path} ({why_not_written(err, path)})") from err


def _view(layer_rows, flat_rows, lengths, lasts, device) -> tuple:
    """Pad per-pair tensors into one batch view: (layer-L states (B, T, D), selectable (B, T),
    every layer's states flattened (B, S*(n+1), D) in float32, their mask)."""
    B, D, n = len(layer_rows), layer_rows[0].shape[-1], flat_rows[0].shape[1]
    width, cut = max(t.shape[0] for t in layer_rows), max(t.shape[0] for t in flat_rows)
    layer = layer_rows[0].new_zeros(B, width, D)
    flat = torch.zeros(B, cut, n, D)
    for b, (lr, fr) in enumerate(zip(layer_rows, flat_rows)):
        layer[b, : lr.shape[0]] = lr
        flat[b, : fr.shape[0]] = fr
    last, length = torch.tensor(lasts)[:, None], torch.tensor(lengths)[:, None]
    positions = torch.arange(width)[None]
    selectable = (positions <= last) & (positions < length)
    flat_mask = selectable[:, :cut, None].expand(-1, -1, n).flatten(1)
    return layer.to(device), selectable.to(device), flat.flatten(1, 2).to(device), flat_mask.to(device)


def store_if_it_fits(target, enc, layer: int, read: ReadRule | bool = False):
    """An in-memory store of `enc` for scoring it in several modes, or None (the read passes then
    run per mode) when it would take more than its default limit: scoring never fails for want of
    memory the way an explicitly requested store may."""
    limit = default_limit("memory")
    if limit is not None and store_bytes(target, enc, read) > limit:
        return None
    return ActivationStore(target, enc, layer, read, progress=False)
