"""The activation store: the same views as the read passes, the same training numbers, staleness
detected, size refused before anything is computed."""

import json

import pytest
import torch

from hyperdas.core.config import ConfigError
from hyperdas.core.errors import ResourceError
from hyperdas.hyper.model import HyperDASConfig, read_states
from hyperdas.hyper.store import META, ActivationStore, store_bytes
from hyperdas.hyper.training import HyperTrainConfig, encoded_pairs, planned_store, train_hyperdas

MODEL = HyperDASConfig(layer=1, k=8, n_blocks=1, selection_heads=4)
TRAIN = HyperTrainConfig(steps=5, batch_size=8, lr=1e-3, eval_every=5, max_val_pairs=12, eval_modes=("soft",))


@pytest.fixture(scope="module")
def pairs(synthetic_pairs):
    return synthetic_pairs(max_pairs={"train": 40, "val": 12, "test": 12})


@pytest.fixture(scope="module")
def enc(synthetic_target, pairs):
    return encoded_pairs(synthetic_target, pairs["train"])


def test_views_equal_the_read_passes(synthetic_target, enc):
    store = ActivationStore(synthetic_target, enc, 1, progress=False)
    assert store.built and store.nbytes == store_bytes(synthetic_target, enc)
    index = [5, 0, 17, 33, 2]
    rows = [enc.base[i] for i in index]
    base, source = store.views(index, synthetic_target.device)
    read_base = read_states(synthetic_target, rows, [enc.base_pos[i] for i in index], 1, whole=True)
    read_source = read_states(synthetic_target, [enc.source[i] for i in index], [enc.source_pos[i] for i in index], 1)
    base_real = [len(r) for r in rows]
    source_real = [enc.source_pos[i] + 1 for i in index]
    for ours, theirs, real in ((base, read_base, base_real), (source, read_source, source_real)):
        assert ours[0].shape == theirs[0].shape and ours[2].shape == theirs[2].shape
        assert torch.equal(ours[1], theirs[1]) and torch.equal(ours[3], theirs[3])
        for b, n in enumerate(real):  # padding: zeros in the store, pad-token states in a read pass
            assert torch.allclose(ours[0][b, :n], theirs[0][b, :n], atol=1e-5)
        assert torch.allclose(ours[2] * ours[3][..., None], theirs[2] * theirs[3][..., None], atol=1e-5)
    # the store serves teacher-forced calls on its own pairs only
    assert store.serves(enc, 1, False, rows, index, [0] * 5)
    assert not store.serves(enc, 1, False, [r[:-1] for r in rows], index, [0] * 5)  # generation's prompts
    assert not store.serves(enc, 1, False, rows, index, [1] * 5)
    assert not store.serves(enc, 0, False, rows, index, [0] * 5)
    assert not store.serves(enc.subset(index), 1, False, rows, list(range(5)), [0] * 5)


@pytest.mark.parametrize("dtype, tolerance", [("auto", 1e-5), ("float16", 1e-3)])
def test_training_numbers_match_training_without_store(synthetic_target, pairs, dtype, tolerance):
    plain = train_hyperdas(synthetic_target, pairs, MODEL, TRAIN.replace(activation_store="none"), progress=False)
    stored = train_hyperdas(synthetic_target, pairs, MODEL, TRAIN.replace(store_dtype=dtype), progress=False)
    assert [h["loss"] for h in stored.history] == pytest.approx([h["loss"] for h in plain.history], rel=tolerance)
    assert stored.history[-1]["val"]["soft"] == plain.history[-1]["val"]["soft"]


def test_disk_store_is_reused_and_a_stale_one_rebuilt(synthetic_target, enc, tmp_path, capsys):
    first = ActivationStore(synthetic_target, enc, 1, kind="disk", folder=tmp_path, progress=False)
    again = ActivationStore(synthetic_target, enc, 1, kind="disk", folder=tmp_path, progress=False)
    assert first.built and not again.built
    index = [3, 9]
    for a, b in zip(first.views(index, "cpu"), again.views(index, "cpu")):
        assert all(torch.equal(x, y) for x, y in zip(a, b))
    meta = json.loads((tmp_path / META).read_text())
    (tmp_path / META).write_text(json.dumps({**meta, "weights_sha256": "another model"}))
    rebuilt = ActivationStore(synthetic_target, enc, 1, kind="disk", folder=tmp_path, progress=False)
    assert rebuilt.built and "computed from other weights_sha256: rebuilding" in capsys.readouterr().out
    # another layer: another key, so rebuilt too
    assert ActivationStore(synthetic_target, enc, 0, kind="disk", folder=tmp_path, progress=False).built
    # an unfinished build (killed before its meta was written) is never reused
    (tmp_path / META).unlink()
    assert ActivationStore(synthetic_target, enc, 0, kind="disk", folder=tmp_path, progress=False).built


def test_a_store_too_large_is_refused_before_it_starts(synthetic_target, enc, tmp_path):
    need = store_bytes(synthetic_target, enc)
    with pytest.raises(ResourceError, match=r"needs 0\.\d\d GiB of disk, more than the 0\.00 GiB it may take"):
        ActivationStore(synthetic_target, enc, 1, kind="disk", folder=tmp_path, max_bytes=need - 1, progress=False)
    assert not any(tmp_path.iterdir())
    with pytest.raises(ResourceError, match="of memory"):
        ActivationStore(synthetic_target, enc, 1, max_bytes=need // 2, progress=False)
    assert store_bytes(synthetic_target, enc, dtype=torch.float16) < need


def test_bad_store_settings(synthetic_target, pairs, enc):
    with pytest.raises(ConfigError, match=r"activation_store='ram': use one of \('auto', 'none', 'memory', 'disk'\)"):
        HyperTrainConfig(activation_store="ram")
    with pytest.raises(ConfigError, match=r"store_dtype='int8'"):
        HyperTrainConfig(store_dtype="int8")
    with pytest.raises(ConfigError, match=r"store_max_gib=0: must be > 0"):
        HyperTrainConfig(store_max_gib=0)
    with pytest.raises(ConfigError, match="needs a results folder"):
        train_hyperdas(synthetic_target, pairs, MODEL, TRAIN.replace(activation_store="disk"), progress=False)
    with pytest.raises(ValueError, match="needs a folder"):
        ActivationStore(synthetic_target, enc, 1, kind="disk")


def test_auto_skips_a_store_over_its_limit_and_an_explicit_one_is_refused(synthetic_target, pairs, capsys):
    tiny = TRAIN.replace(steps=1, store_max_gib=1e-6, batch_size=40)  # one step reads all 40 pairs
    trained = train_hyperdas(synthetic_target, pairs, MODEL, tiny)
    out = capsys.readouterr().out
    assert len(trained.history) == 1 and "no activation store: it needs" in out and "read passes run every step" in out
    with pytest.raises(ResourceError, match="the activation store of 40 pairs needs"):
        train_hyperdas(synthetic_target, pairs, MODEL, tiny.replace(activation_store="memory"), progress=False)


def test_scoring_skips_a_store_that_does_not_fit(synthetic_target, enc, monkeypatch):
    import hyperdas.hyper.store as module

    assert module.store_if_it_fits(synthetic_target, enc, 1) is not None
    monkeypatch.setattr(module, "default_limit", lambda kind, folder=None: 1000)
    assert module.store_if_it_fits(synthetic_target, enc, 1) is None


def test_auto_builds_no_store_for_a_run_that_reads_fewer_pairs_than_it_would_hold(synthetic_target, pairs, capsys):
    short = TRAIN.replace(steps=1, batch_size=4)
    assert planned_store(synthetic_target, [encoded_pairs(synthetic_target, pairs["train"])], MODEL, short) is None
    assert "no activation store: 1 steps read 4 pairs, fewer than the 40 it would hold" in capsys.readouterr().out
    enough = short.replace(steps=10)
    assert planned_store(synthetic_target, [encoded_pairs(synthetic_target, pairs["train"])], MODEL, enough) == "memory"


@pytest.mark.parametrize("damage", ["truncate", "flip"])
def test_a_damaged_disk_store_is_rebuilt_never_reused(synthetic_target, enc, tmp_path, capsys, damage):
    first = ActivationStore(synthetic_target, enc, 1, kind="disk", folder=tmp_path, progress=False)
    index = [3, 9]
    expected = [t.clone() for t in first.views(index, "cpu")[0]]
    del first
    path = tmp_path / "exact.bin"
    data = bytearray(path.read_bytes())
    if damage == "truncate":  # a full disk or a kill: torch.from_file would grow it back with zeros
        path.write_bytes(data[: len(data) // 2])
    else:
        data[len(data) // 3] ^= 0xFF
        path.write_bytes(bytes(data))
    again = ActivationStore(synthetic_target, enc, 1, kind="disk", folder=tmp_path, progress=False)
    assert again.built and "exact.bin differ from their checksums: rebuilding it" in capsys.readouterr().out
    assert all(torch.equal(a, b) for a, b in zip(again.views(index, "cpu")[0], expected))
    assert not ActivationStore(synthetic_target, enc, 1, kind="disk", folder=tmp_path, progress=False).built


def test_a_full_disk_while_a_store_is_built_is_named_and_leaves_the_built_store(
    synthetic_target, enc, tmp_path, monkeypatch
):
    import errno
    import os

    from hyperdas.core.errors import WriteError

    kept = tmp_path / "kept"
    ActivationStore(synthetic_target, enc, 1, kind="disk", folder=kept, progress=False)
    before = (kept / META).read_bytes()

    def full(fd, offset, length):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "posix_fallocate", full)
    with pytest.raises(WriteError, match=r"the disk holding .*new is full \(.* free\)"):
        ActivationStore(synthetic_target, enc, 1, kind="disk", folder=tmp_path / "new", progress=False)
    assert not (tmp_path / "new" / META).exists()  # never reused
    again = ActivationStore(synthetic_target, enc, 1, kind="disk", folder=kept, progress=False)
    assert not again.built and (kept / META).read_bytes() == before
