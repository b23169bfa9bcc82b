"""Whether a HyperDAS run computes the frozen target's read passes once (`hyperdas.hyper.store`), where,
and building that store."""

from __future__ import annotations

from hyperdas.core.config import ConfigError
from hyperdas.hyper.model import HyperDASConfig
from hyperdas.hyper.reads import read_rule
from hyperdas.hyper.store import DTYPES as STORE_DTYPES
from hyperdas.hyper.store import ActivationStore, default_limit, store_bytes
from hyperdas.hyper.train_config import HyperTrainConfig


def planned_store(
    target, parts, config: HyperDASConfig, train: HyperTrainConfig, folder=None, progress: bool = True
) -> str | None:
    """The store kind training will build over the encoded `parts` (training pairs first; None: none;
    a disk store needs the checkpoint `folder`); "auto" resolves to "memory" on a CPU when the run
    reads at least as many pairs as the store holds and the store fits its limit, else to none,
    saying why."""
    kind = train.activation_store
    if kind == "disk" and folder is None:
        raise ConfigError("HyperTrainConfig.activation_store='disk' needs a results folder (out_dir) to keep it in")
    if kind != "auto":
        return None if kind == "none" else kind
    if target.device.type != "cpu":
        return None
    reads = train.steps * train.batch_size
    if reads < len(parts[0]):  # building it reads every pair once: more than a short run reads at all
        if progress:
            print(
                f"no activation store: {train.steps} steps read {reads} pairs, "
                f"fewer than the {len(parts[0])} it would hold"
            )
        return None
    need = _store_bytes(target, parts, config, train)
    room = int(train.store_max_gib * 2**30) if train.store_max_gib is not None else default_limit("memory")
    if room is not None and need > room:
        if progress:
            print(
                f"no activation store: it needs {need / 2**30:.2f} GiB, more than the {room / 2**30:.2f} GiB it may "
                f"take, so the read passes run every step (store_dtype='float16' or activation_store='disk' keep one)"
            )
        return None
    return "memory"


def _store_bytes(target, parts, config: HyperDASConfig, train: HyperTrainConfig) -> int:
    """Bytes the activation stores of the encoded `parts` take."""
    read, dtype = read_rule(config, target.tokenizer), STORE_DTYPES[train.store_dtype]
    return sum(store_bytes(target, p, read, dtype) for p in parts)


def make_store(target, enc, config: HyperDASConfig, train: HyperTrainConfig, kind, folder=None, progress: bool = True):
    """An activation store of `kind` over `enc` (None for None); a disk store lives in `folder` and is
    reused there when it is not stale (`hyperdas.hyper.store`)."""
    if kind is None or not len(enc):
        return None
    limit = None if train.store_max_gib is None else int(train.store_max_gib * 2**30)
    store = ActivationStore(
        target,
        enc,
        config.layer,
        read_rule(config, target.tokenizer),
        kind,
        train.store_dtype,
        folder,
        limit,
        progress=progress,
    )
    if progress:
        print(store.describe())
    return store
