"""Results and checkpoints are written whole or not at all, read back with a named error when they
are not, and one checkpoint folder has one writer."""

import json
import os
import subprocess
import sys
import time

import pytest

from hyperdas.core.errors import CheckpointError, HyperDASError, ResultsError
from hyperdas.core.files import append_line, atomic_path, folder_lock, remove_leftovers, write_text
from hyperdas.core.results import read_json, write_json
from hyperdas.das.interventions import RotatedSpaceInterchange
from hyperdas.das.training import DASConfig, load_checkpoint, save_checkpoint


def test_an_error_inside_the_write_leaves_the_old_file_and_no_temporary(tmp_path):
    path = write_text(tmp_path / "r.json", "old")
    with pytest.raises(ZeroDivisionError), atomic_path(path) as tmp:
        tmp.write_text("half of the ne")
        raise ZeroDivisionError("a bug in the writer")
    assert path.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["r.json"]


def test_a_full_disk_is_named_and_leaves_the_old_file(tmp_path):
    from hyperdas.core.errors import WriteError

    path = write_text(tmp_path / "resume.pt", "old")
    with pytest.raises(
        WriteError,
        match=r"could not write .*resume.pt \(the disk holding .* is full \(.* free; the write had taken 1000 bytes "
        r"when it failed\): free space there, or write elsewhere\); the previous files, if any, are unchanged",
    ):
        with atomic_path(path) as tmp:
            tmp.write_bytes(b"x" * 1000)
            raise OSError(28, "No space left on device")
    assert path.read_text() == "old" and len(list(tmp_path.iterdir())) == 1


KILLED_MID_WRITE = """
import os, sys
from hyperdas.core.files import atomic_path
with atomic_path(sys.argv[1]) as tmp:
    tmp.write_text("half of the ne")
    os._exit(9)  # kill -9 between the temporary write and the rename
"""


def test_a_writer_killed_before_the_rename_leaves_the_old_file_and_the_next_holder_cleans_up(tmp_path):
    path = write_text(tmp_path / "hyperdas.safetensors", "old")
    done = subprocess.run([sys.executable, "-c", KILLED_MID_WRITE, str(path)])
    assert done.returncode == 9 and path.read_text() == "old"
    assert len(list(tmp_path.iterdir())) == 2  # the dead writer's temporary file
    with folder_lock(tmp_path):
        assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith(".lock")) == [path.name]
    assert remove_leftovers(tmp_path / "missing") == []


def test_log_lines_are_appended_whole(tmp_path):
    for step in range(3):
        append_line(tmp_path / "log.jsonl", json.dumps({"step": step}))
    assert [json.loads(line)["step"] for line in (tmp_path / "log.jsonl").read_text().splitlines()] == [0, 1, 2]


def test_a_truncated_or_empty_checkpoint_is_named_with_the_fix(tmp_path):
    folder = save_checkpoint(tmp_path / "mdas", RotatedSpaceInterchange(16, 4), DASConfig(k=4))
    weights = folder / "intervention.safetensors"
    weights.write_bytes(weights.read_bytes()[:40])
    with pytest.raises(CheckpointError, match=r"intervention.safetensors differs .*\(size: 40 bytes, .*delete"):
        load_checkpoint(folder, 16)
    (folder / "meta.json").write_text("")
    with pytest.raises(CheckpointError, match=r"meta.json \(0 bytes\) cannot be read"):
        load_checkpoint(folder, 16)


def test_an_empty_resume_file_is_named(synthetic_target, synthetic_pairs, tmp_path):
    from hyperdas.das.training import train_das

    (tmp_path / "resume.pt").write_bytes(b"")
    pairs = synthetic_pairs(max_pairs={"train": 16, "val": 4, "test": 4})
    config = DASConfig(method="mdas", layer=0, k=4, steps=2, eval_every=2)
    with pytest.raises(CheckpointError, match=r"resume.pt \(0 bytes\) cannot be read.*start this run from step 0"):
        train_das(synthetic_target, pairs, config, checkpoint_dir=tmp_path, progress=False)


def test_a_cut_short_results_file_names_itself(tmp_path):
    path = write_json(tmp_path / "hyperdas.json", {"records": []})
    path.write_text(path.read_text()[:20])
    with pytest.raises(ResultsError, match="hyperdas.json is not valid JSON.*rerun"):
        read_json(path)


HOLDER = """
import sys, time
from hyperdas.core.files import folder_lock
with folder_lock(sys.argv[1]):
    print("holding", flush=True)
    time.sleep(60)
"""


def _hold(folder):
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(folder)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "holding"
    return holder


def test_a_second_writer_is_refused_with_the_holders_pid_and_a_killed_holders_lock_is_free(tmp_path):
    holder = _hold(tmp_path)
    try:
        with pytest.raises(HyperDASError, match=rf"in use by another run \(pid {holder.pid}\)"), folder_lock(tmp_path):
            pass
    finally:
        holder.kill()  # kill -9: the lock goes with the process
        holder.wait()
    with folder_lock(tmp_path):
        assert (tmp_path / ".lock.pid").read_text().strip() == str(os.getpid())


def test_training_into_a_folder_in_use_is_refused(synthetic_target, synthetic_pairs, tmp_path):
    from hyperdas.das.training import train_das

    holder = _hold(tmp_path)
    try:
        pairs = synthetic_pairs(max_pairs={"train": 16, "val": 4, "test": 4})
        config = DASConfig(method="mdas", layer=0, k=4, steps=2, eval_every=2)
        start = time.perf_counter()
        with pytest.raises(HyperDASError, match="in use by another run"):
            train_das(synthetic_target, pairs, config, checkpoint_dir=tmp_path, progress=False)
        assert time.perf_counter() - start < 5  # refused at once, not after waiting
    finally:
        holder.kill()
        holder.wait()


def test_one_writer_locks_only_a_given_folder_in_the_main_process(tmp_path):
    from types import SimpleNamespace

    from hyperdas.core.files import one_writer

    @one_writer("folder")
    def write(folder=None, runtime=None):
        return (tmp_path / ".lock.pid").is_file()

    assert write(tmp_path) is True and write() is False
    assert write(tmp_path, runtime=SimpleNamespace(is_main=False)) is False  # other processes do not write


def test_a_folder_write_that_fails_leaves_the_previous_folder(tmp_path):
    import errno

    from hyperdas.core.errors import WriteError
    from hyperdas.core.files import atomic_folder

    target = tmp_path / "pairs"
    with atomic_folder(target) as tmp:
        (tmp / "data.arrow").write_text("old pairs")
    for fail_after in (0, 1):  # before anything is written, and after half of it
        with pytest.raises(WriteError, match=r"could not write .*pairs \(the disk holding .* is full.*previous folder"):
            with atomic_folder(target) as tmp:
                if fail_after:
                    (tmp / "data.arrow").write_text("new pa")
                raise OSError(errno.ENOSPC, "No space left on device")
        assert (target / "data.arrow").read_text() == "old pairs"
        assert sorted(p.name for p in tmp_path.iterdir()) == ["pairs"]
    with atomic_folder(target) as tmp:
        (tmp / "data.arrow").write_text("new pairs")
    assert (target / "data.arrow").read_text() == "new pairs" and sorted(p.name for p in tmp_path.iterdir()) == [
        "pairs"
    ]
    # a kill between moving the old folder aside and renaming the new one: the next writer puts it back
    os.replace(target, tmp_path / ".pairs.previous")
    with pytest.raises(ZeroDivisionError), atomic_folder(target):
        raise ZeroDivisionError
    assert (target / "data.arrow").read_text() == "new pairs"


def test_pairs_survive_a_full_disk_while_new_ones_are_saved(synthetic_pairs, tmp_path, monkeypatch):
    import errno

    from datasets import DatasetDict

    from hyperdas.core.errors import WriteError
    from hyperdas.data.dataset import load_pairs, pairs_fingerprint, save_pairs

    pairs = synthetic_pairs(max_pairs={"train": 20, "val": 6, "test": 6})
    folder = save_pairs(pairs, tmp_path / "ravel_pairs", {"model": "synthetic"})
    real_save = DatasetDict.save_to_disk

    def save_then_fill_the_disk(self, path, **kwargs):
        real_save(self, path, **kwargs)  # the whole dataset written, then the disk is full
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(DatasetDict, "save_to_disk", save_then_fill_the_disk)
    with pytest.raises(WriteError, match=r"ravel_pairs \(the disk holding .* is full"):
        save_pairs(pairs.filter(lambda r: r["attribute_type"] == "causal"), folder, {"model": "other"})
    assert pairs_fingerprint(load_pairs(folder)) == pairs_fingerprint(pairs)
    assert json.loads((folder / "pairs_meta.json").read_text())["model"] == "synthetic"


def _full_disk_at(monkeypatch, nth: int) -> None:
    """ENOSPC from the `nth` flush of a regular file (where a delayed-allocation disk reports it)."""
    import errno
    import stat

    real, seen = os.fsync, []

    def fsync(fd):
        if stat.S_ISREG(os.fstat(fd).st_mode):
            seen.append(fd)
            if len(seen) == nth:
                raise OSError(errno.ENOSPC, "No space left on device")
        return real(fd)

    monkeypatch.setattr(os, "fsync", fsync)


def test_checkpoints_survive_a_full_disk_at_each_of_their_files(synthetic_target, tmp_path, monkeypatch):
    import torch

    from hyperdas.core.errors import WriteError
    from hyperdas.hyper.model import HyperDAS, HyperDASConfig
    from hyperdas.hyper.training import load_hyperdas, save_hyperdas

    config = HyperDASConfig(layer=0, k=8, n_blocks=1, selection_heads=4)
    torch.manual_seed(0)
    old, new = HyperDAS(synthetic_target, config), HyperDAS(synthetic_target, config)
    save_hyperdas(tmp_path / "hyper", old)
    das_old, das_new = RotatedSpaceInterchange(16, 4), RotatedSpaceInterchange(16, 4)
    save_checkpoint(tmp_path / "das", das_old, DASConfig(k=4))
    for nth in (1, 2, 3):  # the weights, the config, (DAS) the meta
        with monkeypatch.context() as patch:
            _full_disk_at(patch, nth)
            with pytest.raises(WriteError, match="is full"):
                save_hyperdas(tmp_path / "hyper", new) if nth < 3 else None
                save_checkpoint(tmp_path / "das", das_new, DASConfig(k=8))
        loaded, _ = load_hyperdas(tmp_path / "hyper", synthetic_target)
        assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), old.state_dict().values()))
        kept, kept_config = load_checkpoint(tmp_path / "das", 16)
        assert kept_config.k == 4 and torch.equal(kept.R, das_old.R)


def test_a_checkpoint_whose_weights_changed_on_disk_is_refused(synthetic_target, tmp_path):
    from hyperdas.hyper.model import HyperDAS, HyperDASConfig
    from hyperdas.hyper.training import load_hyperdas, save_hyperdas

    save_hyperdas(tmp_path / "hyper", HyperDAS(synthetic_target, HyperDASConfig(layer=0, k=8, n_blocks=1)))
    save_checkpoint(tmp_path / "das", RotatedSpaceInterchange(16, 4), DASConfig(k=4))
    for weights in (tmp_path / "hyper" / "hyperdas.safetensors", tmp_path / "das" / "intervention.safetensors"):
        data = bytearray(weights.read_bytes())
        data[-3] ^= 0x01  # one bit of a weight: safetensors itself cannot tell
        weights.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"hyperdas.safetensors differs from the checksums .*\(content.*delete"):
        load_hyperdas(tmp_path / "hyper", synthetic_target)
    with pytest.raises(CheckpointError, match=r"intervention.safetensors differs from the checksums"):
        load_checkpoint(tmp_path / "das", 16)


def test_a_baseline_checkpoint_is_loaded_only_for_the_pairs_it_was_trained_on(
    synthetic_target, synthetic_pairs, tmp_path
):
    from hyperdas.core.errors import ProvenanceError
    from hyperdas.das.training import train_das

    pairs = synthetic_pairs(max_pairs={"train": 40, "val": 12, "test": 12})
    config = DASConfig(layer=0, k=4, steps=2, batch_size=8, eval_every=2, max_val_pairs=12)
    train_das(synthetic_target, pairs, config, checkpoint_dir=tmp_path, progress=False)
    load_checkpoint(tmp_path, synthetic_target.hidden_size, synthetic_target, pairs)
    other = pairs.filter(lambda r: r["attribute_type"] == "causal")
    with pytest.raises(ProvenanceError, match=r"was trained on other pairs"):
        load_checkpoint(tmp_path, synthetic_target.hidden_size, synthetic_target, other)


@pytest.fixture()
def small_disk(tmp_path):
    """A real 8 MiB filesystem (tmpfs), where the machine lets this process mount one."""
    import shutil

    folder = tmp_path / "fs"
    folder.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(folder)], capture_output=True)
    if done.returncode != 0 or shutil.disk_usage(folder).total > 16 * 2**20:
        pytest.skip(f"cannot mount a small filesystem here ({done.stderr.decode().strip()[:80] or 'not mounted'})")
    yield folder
    subprocess.run(["umount", "-l", str(folder)], capture_output=True)


def _fill(folder, keep: int) -> None:
    """Fill the filesystem of `folder` until `keep` bytes or fewer are left."""
    import shutil

    with open(folder / "filler", "wb") as handle:
        while (free := shutil.disk_usage(folder).free) > keep:
            try:
                handle.write(b"\0" * min(free - keep, 1 << 20))
                handle.flush()
            except OSError:
                break


def test_on_a_full_real_disk_the_previous_pairs_store_and_checkpoints_still_load(
    small_disk, synthetic_target, synthetic_pairs
):
    import torch

    from hyperdas.core.errors import WriteError
    from hyperdas.data.dataset import load_pairs, pairs_fingerprint, save_pairs
    from hyperdas.hyper.model import HyperDAS, HyperDASConfig
    from hyperdas.hyper.store import ActivationStore
    from hyperdas.hyper.training import encoded_pairs, load_hyperdas, save_hyperdas

    pairs = synthetic_pairs(max_pairs={"train": 20, "val": 6, "test": 6})
    save_pairs(pairs, small_disk / "pairs", {"model": "synthetic"})
    config = HyperDASConfig(layer=0, k=8, n_blocks=1, selection_heads=4)
    torch.manual_seed(0)
    old = HyperDAS(synthetic_target, config)
    save_hyperdas(small_disk / "hyper", old)
    save_checkpoint(small_disk / "das", RotatedSpaceInterchange(16, 4), DASConfig(k=4))
    enc = encoded_pairs(synthetic_target, pairs["train"])
    room = 2**30  # past the free-space check (free less 1 GiB), so the write itself meets the full disk
    ActivationStore(synthetic_target, enc, 0, kind="disk", folder=small_disk / "store", max_bytes=room, progress=False)
    _fill(small_disk, keep=0)
    with pytest.raises(WriteError, match="is full"):
        save_pairs(pairs.filter(lambda r: r["attribute_type"] == "causal"), small_disk / "pairs", {"model": "x"})
    with pytest.raises(WriteError, match="is full"):
        save_hyperdas(small_disk / "hyper", HyperDAS(synthetic_target, config))
    with pytest.raises(WriteError, match="is full"):
        save_checkpoint(small_disk / "das", RotatedSpaceInterchange(16, 8), DASConfig(k=8))
    with pytest.raises(WriteError, match="is full"):
        ActivationStore(synthetic_target, enc, 1, kind="disk", folder=small_disk / "s2", max_bytes=room, progress=False)
    assert pairs_fingerprint(load_pairs(small_disk / "pairs")) == pairs_fingerprint(pairs)
    loaded, _ = load_hyperdas(small_disk / "hyper", synthetic_target)
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), old.state_dict().values()))
    assert load_checkpoint(small_disk / "das", 16)[1].k == 4
    kept = ActivationStore(synthetic_target, enc, 0, kind="disk", folder=small_disk / "store", max_bytes=room)
    assert not kept.built


def test_a_resume_file_changed_on_disk_is_refused(synthetic_target, synthetic_pairs, tmp_path):
    from hyperdas.das.training import train_das

    pairs = synthetic_pairs(max_pairs={"train": 16, "val": 4, "test": 4})
    config = DASConfig(method="mdas", layer=0, k=4, steps=4, eval_every=2)
    train_das(synthetic_target, pairs, config, checkpoint_dir=tmp_path, progress=False)
    resume = tmp_path / "resume.pt"
    data = bytearray(resume.read_bytes())
    data[len(data) // 2] ^= 0x01  # one bit inside the saved tensors
    resume.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"resume.pt differs from the checksums .*\(content"):
        train_das(synthetic_target, pairs, config.replace(steps=6), checkpoint_dir=tmp_path, progress=False)
