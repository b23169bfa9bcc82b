"""Multi-process training (hyperdas.target.distributed): two CPU processes over gloo, launched by
`accelerate launch`, give the loss trajectory of one process on the same global batch, write
every result and checkpoint once, and leave checkpoints a single process loads."""

import json
import os
import subprocess
from pathlib import Path

import pytest
import torch

from hyperdas.cli import main
from hyperdas.data.dataset import save_pairs
from hyperdas.target import distributed
from hyperdas.target.distributed import DistributedError, Runtime

# relative, per logged loss. Only the order of float sums differs between the runs (shards, thread
# counts), but AdamW turns a gradient coordinate near zero into a full-size step of either sign, so
# 1e-7 differences grow over steps: the runs below use small learning rates (seen: <= 7e-6)
TOLERANCE = 1e-4


def test_shards_and_micro_batches_cover_the_global_batch_once():
    index = list(range(10, 17))
    shards = [Runtime.shard(_FakeWorld(rank, 2), index) for rank in (0, 1)]
    assert sorted(shards[0] + shards[1]) == index and shards[0] == [10, 12, 14, 16]
    assert Runtime(None, micro_batch=3).chunks([1, 2, 3, 4, 5, 6, 7]) == [[1, 2, 3], [4, 5, 6], [7]]
    assert Runtime().chunks([1, 2]) == [[1, 2]]
    with pytest.raises(DistributedError, match="cannot be split over 2 processes"):
        Runtime.shard(_FakeWorld(0, 2), [5])


def test_bad_set_ups_are_refused_with_the_fix():
    with pytest.raises(DistributedError, match="4 processes .* 1 CUDA device.*--num_processes 1"):
        distributed.check_processes(4, "cuda", available=1)
    with pytest.raises(DistributedError, match="3 processes .* 2 CPU core"):
        distributed.check_processes(3, "cpu", available=2)
    distributed.check_processes(2, "cpu", available=2)
    with pytest.raises(DistributedError, match="micro_batch=0"):
        distributed.runtime("cpu", micro_batch=0)
    assert distributed.runtime("cpu").accelerator is None and distributed.local_device("cuda") == "cuda"


def test_fsdp_launches_that_cannot_work_are_refused(monkeypatch):
    """FSDP (accelerate launch --use_fsdp) shards over GPUs and a floating-point target only."""
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    with pytest.raises(DistributedError, match="on CPUs launch without --use_fsdp"):
        distributed.runtime("cpu")
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    with pytest.raises(DistributedError, match="with load_in_4bit launch without --use_fsdp"):
        distributed.runtime("cuda", load_in_4bit=True)
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert distributed.local_device("cuda") == "cuda:1" and distributed.local_device("cpu") == "cpu"


def test_micro_batches_accumulate_to_the_same_step(synthetic_target, pairs_folder):
    """Gradient accumulation in one process: the step equals the whole batch's."""
    from hyperdas.data.dataset import load_pairs
    from hyperdas.hyper.model import HyperDASConfig
    from hyperdas.hyper.training import HyperTrainConfig, train_hyperdas

    pairs = load_pairs(pairs_folder)
    # the prompt read: its many selectable base columns let the sparsity penalty bite
    config = HyperDASConfig(layer=0, k=4, n_blocks=1, selection_heads=4, base_read="prompt")
    train = HyperTrainConfig(steps=4, batch_size=8, eval_every=4, max_val_pairs=8, sparsity_start=0.0)
    runs = [
        train_hyperdas(synthetic_target, pairs, config, train, progress=False, runtime=Runtime(None, micro))
        for micro in (None, 3)
    ]
    for whole, parts in zip(*(r.history for r in runs)):
        for key in ("loss", "ce", "sparsity"):
            assert parts[key] == pytest.approx(whole[key], rel=TOLERANCE), key
    assert runs[0].history[-1]["sparsity"] > 0  # the penalty's share per part was exercised


@pytest.mark.parametrize("method", ["hyperdas", "mdas"])
def test_two_processes_follow_the_one_process_trajectory(method, synthetic_target, pairs_folder, tmp_path):
    args = [
        "--config",
        "smoke",
        "--method",
        method,
        "--attribute",
        "Country",
        "--no-progress",
        "--set",
        f"pairs_in={pairs_folder}",
        "--set",
        "k=4",
    ]
    own = {  # each method's parameters only: hyperdas-train refuses an override it would ignore
        "hyperdas": ["hyper_steps=6", "hyper_eval_every=3", "hyper_batch_size=8", "hyper_max_val_pairs=12"]
        + ["n_blocks=1", "hyper_lr=1e-4", "hyper_lr_rotation=1e-4"],
        "mdas": ["steps=6", "eval_every=3", "batch_size=8", "max_val_pairs=12", "lr=1e-3"],
    }
    args += [part for item in own[method] for part in ("--set", item)]
    assert main(args + ["--results", str(tmp_path / "one")]) == 0
    launched = _launch(args + ["--results", str(tmp_path / "two")], processes=2)
    assert launched.returncode == 0, launched.stdout[-3000:] + launched.stderr[-3000:]
    assert launched.stdout.count("best val") == 1  # only the main process reports

    name = method if method == "hyperdas" else f"{method}-Country"
    one, two = (tmp_path / run / "synthetic-llama" / "checkpoints" / name for run in ("one", "two"))
    logs = [[json.loads(line) for line in (d / "train_log.jsonl").read_text().splitlines()] for d in (one, two)]
    assert [e["step"] for e in logs[1]] == [e["step"] for e in logs[0]] == list(range(1, 7))  # each step once
    for single, double in zip(*logs):
        assert double["loss"] == pytest.approx(single["loss"], rel=TOLERANCE)
        if "val" in single:  # validation split over the processes, records gathered
            assert _val(double) == pytest.approx(_val(single), abs=1e-9)
    record = json.loads((two / f"{method}_cli.json").read_text())
    assert record["processes"] == 2 and record["steps_run"] == 6
    assert sorted(p.name for p in two.iterdir()) == sorted(p.name for p in one.iterdir())
    _loads_single_process(method, synthetic_target, one, two)


def _val(entry) -> list[float]:
    val = entry["val"]
    groups = val.values() if "soft" in val else [val]
    return [g[k] for g in groups for k in ("cause", "iso", "disentangle")]


def _loads_single_process(method, target, one: Path, two: Path) -> None:
    """A checkpoint written by the 2-process run loads in one process and matches the 1-process run's.
    Orthogonal rotations R are compared as the projections RᵀR they span: the parametrization's
    `original` and rotations within the subspace are directions the loss does not see, where
    AdamW's steps follow float noise."""
    if method == "hyperdas":
        from hyperdas.hyper.training import load_hyperdas

        models = [load_hyperdas(d, target)[0] for d in (one, two)]
        rotations = [m.subspace.rotation.weight for m in models]
    else:
        from hyperdas.das.training import load_checkpoint

        models = [load_checkpoint(d, target.hidden_size)[0] for d in (one, two)]
        rotations = [m.rotation.weight for m in models]
    weights = [m.state_dict() for m in models]
    assert weights[0].keys() == weights[1].keys()
    projections = [r.T @ r if r.shape[0] < r.shape[1] else r @ r.T for r in rotations]
    torch.testing.assert_close(projections[1], projections[0], rtol=0, atol=1e-4)
    for key in (k for k in weights[0] if "parametrizations" not in k):
        torch.testing.assert_close(weights[1][key], weights[0][key], rtol=1e-3, atol=1e-4)


def _launch(args: list[str], processes: int) -> subprocess.CompletedProcess:
    command = distributed.launch_command(processes, ["-m", "hyperdas.cli", *args])
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    return subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)


class _FakeWorld:
    """Stands in for an accelerator in `Runtime.shard`: only rank and world matter there."""

    def __init__(self, rank: int, world: int):
        self.rank, self.world = rank, world


@pytest.fixture(scope="module")
def pairs_folder(synthetic_pairs, tmp_path_factory):
    pairs = synthetic_pairs(max_pairs={"train": 48, "val": 12, "test": 12})
    return save_pairs(pairs, tmp_path_factory.mktemp("pairs") / "pairs", {})
