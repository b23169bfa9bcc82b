"""HyperDAS training-step overhead, peak memory and evaluation throughput on the embedded model.

One HyperDAS training step (`hyperdas.hyper.training.train_step`: read passes of base and source
without gradients, hypernetwork, selection, subspace, the edited base run, weighted CE +
sparsity, backward, clipping, AdamW) against one bare frozen forward+backward of the target on
the same base rows (gradient to the residual stream after the same layer; see das_step.py).
The step is timed lever by lever: without an activation store; with a store serving the read
passes only (the edited run recomputes blocks 0..L of the base prompt); with the store also
starting the edited run from the stored layer-L base states, its rows padded; that with the rows
packed into one sequence without padding, attending row by row (training's default,
`hyperdas.hyper.store`, `hyperdas.target.packed`); and that with the hypernetwork's copied embedding frozen
(`HyperDASConfig.freeze_embedding`). Interleaved after warm-up; medians reported, with each lever's
share of the step it starts from. Goal: ratio <= 0.8 with the store. Also: one step's loss with
and without the store from the same initialisation, the store's size (with and without the
edited run's start) and build time projected to the whole training split, and the memory
estimate that training prints (`hyperdas.target.memory`) against the peak resident set. Run, as
training runs on a CPU, with the batch runner's malloc settings (`hyperdas.batch.MALLOC`; the
script starts once more with them set): both steps share them.
    python benchmarks/hyperdas_step.py [--model smollm2-135m] [--layer 15] [--k 32] [--n-blocks 2]
Writes the section "hyperdas_step" of results/<model>/benchmarks.json.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import time
from pathlib import Path

import torch
from das_step import bare_step, timed  # noqa: E402  same folder: the shared reference step

from hyperdas.batch import MALLOC, tune_malloc
from hyperdas.core.results import results_dir, write_section
from hyperdas.data.dataset import load_pairs, pairs_dir
from hyperdas.hyper.model import HyperDAS, HyperDASConfig, Inference
from hyperdas.hyper.store import ActivationStore, store_bytes
from hyperdas.hyper.training import HyperTrainConfig, encoded_pairs, example_weights, make_optimizer, train_step
from hyperdas.target import evaluate as evaluate_module
from hyperdas.target.evaluate import evaluate
from hyperdas.target.memory import estimate_for
from hyperdas.target.models import load_target


def padded(run):
    """`run` with the edited run's rows padded, as before packing (`evaluate.PACK_ROWS`)."""

    def padded_run():
        evaluate_module.PACK_ROWS = False
        try:
            return run()
        finally:
            evaluate_module.PACK_ROWS = True

    return padded_run


def same_step_losses(target, config, train, enc, index, weights) -> dict:
    """One training step's loss from the same initialisation, with the read passes from a store
    (float32 and float16) and computed in the step."""
    losses = {}
    for name, store_dtype in (("without_store", None), ("store_float32", "auto"), ("store_float16", "float16")):
        torch.manual_seed(0)
        model = HyperDAS(target, config).to(target.device).train()
        store = (
            None
            if store_dtype is None
            else ActivationStore(target, enc, config.layer, model.read_rule, dtype=store_dtype, progress=False)
        )
        entry = train_step(target, model, enc, index, weights, make_optimizer(model, train), train, 1, store=store)
        losses[name] = entry["loss"]
    base = losses["without_store"]
    losses["relative_difference"] = {k: abs(v - base) / base for k, v in losses.items() if k != "without_store"}
    return losses


class ReadsOnly:
    """A store that serves the read passes but not the edited run's start (the path before the
    store kept it): blocks 0..L of the base prompt run again in every edited pass."""

    def __init__(self, store: ActivationStore):
        self._store = store

    def __getattr__(self, name):
        return getattr(self._store, name)

    def starts(self, index, device):
        return None


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--layer", type=int, default=15)
    parser.add_argument("--k", type=int, default=HyperDASConfig.k)  # the default configuration's
    parser.add_argument("--n-blocks", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--eval-pairs", type=int, default=96)
    parser.add_argument("--results", default=str(Path(__file__).resolve().parent.parent / "results"))
    args = parser.parse_args()
    if tune_malloc({"device": "cpu"}):  # glibc reads them at start
        os.execv(sys.executable, [sys.executable, *sys.argv])
    torch.manual_seed(0)
    target = load_target(args.model)
    rss_loaded = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    pairs = load_pairs(pairs_dir(args.results, target.name))
    config = HyperDASConfig(layer=args.layer, k=args.k, n_blocks=args.n_blocks)
    train = HyperTrainConfig(batch_size=args.batch_size)
    enc = encoded_pairs(target, pairs["train"].select(range(args.batch_size)))
    predicted = estimate_for(target, config, enc, args.batch_size)
    model = HyperDAS(target, config).to(target.device).train()
    frozen = HyperDAS(target, config.replace(freeze_embedding=True)).to(target.device).train()
    optimizer, frozen_optimizer = make_optimizer(model, train), make_optimizer(frozen, train)
    weights = example_weights(enc, train)
    index = list(range(args.batch_size))
    agreement = same_step_losses(target, config, train, enc, index, weights)
    store = ActivationStore(target, enc, args.layer, model.read_rule, progress=False)
    whole = encoded_pairs(target, pairs["train"])
    step = lambda m, o, s: lambda: train_step(target, m, enc, index, weights, o, train, 1, store=s)  # noqa: E731
    runs = {  # the levers in the order they apply
        "bare_forward_backward": lambda: bare_step(target, args.layer, enc, index),
        "hyperdas_step_without_store": step(model, optimizer, None),
        "hyperdas_step_store_reads_only": step(model, optimizer, ReadsOnly(store)),
        "hyperdas_step_store_padded": padded(step(model, optimizer, store)),
        "hyperdas_step": step(model, optimizer, store),
        "hyperdas_step_frozen_embedding": step(frozen, frozen_optimizer, store),
    }
    for _ in range(2):  # warm-up
        for run in runs.values():
            run()
    times = {name: [] for name in runs}
    for _ in range(args.repeats):  # interleaved, so drifts in machine load hit every variant
        for name, run in runs.items():
            times[name] += timed(run, 1)
    median = {name: statistics.median(t) for name, t in times.items()}
    levers = {}
    for before, after, lever in (
        ("hyperdas_step_without_store", "hyperdas_step_store_reads_only", "store_serves_read_passes"),
        ("hyperdas_step_store_reads_only", "hyperdas_step_store_padded", "store_starts_edited_run"),
        ("hyperdas_step_store_padded", "hyperdas_step", "packed_rows"),
        ("hyperdas_step", "hyperdas_step_frozen_embedding", "frozen_embedding"),
    ):
        levers[lever] = {
            "seconds_saved": median[before] - median[after],
            "share_of_step_before": 1 - median[after] / median[before],
        }

    model.eval()
    test = encoded_pairs(target, pairs["test"].select(range(min(args.eval_pairs, len(pairs["test"])))))
    throughput = {}
    for mode in ("soft", "one_to_one"):
        start = time.perf_counter()
        evaluate(target, args.layer, Inference(model, mode), test)
        throughput[mode] = len(test) / (time.perf_counter() - start)
    start = time.perf_counter()
    evaluate(target, args.layer, Inference(model, "soft"), test, mode="generation")
    throughput["soft_generation"] = len(test) / (time.perf_counter() - start)
    lengths = [len(enc.base[i]) for i in index]
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    trainable_frozen = sum(p.numel() for p in frozen.parameters() if p.requires_grad)
    reads_only_bytes = store_bytes(target, whole, model.read_rule) - sum(
        len(r) for r in whole.base
    ) * target.hidden_size * next(target.model.parameters()).dtype.itemsize * (not model.read_rule.reads_prompt)
    section = {
        "model": target.name,
        "config": config.to_dict(),
        "batch_size": args.batch_size,
        "torch_threads": torch.get_num_threads(),
        "malloc": {k: os.environ.get(k) for k in MALLOC},
        "base_tokens": {"min": min(lengths), "max": max(lengths)},
        "trainable_parameters": trainable,
        "trainable_parameters_frozen_embedding": trainable_frozen,
        **{f"{name}_seconds": {"median": median[name], "all": times[name]} for name in runs},
        "ratio": median["hyperdas_step"] / median["bare_forward_backward"],
        "ratios": {name: median[name] / median["bare_forward_backward"] for name in runs},
        "levers": levers,
        "goal_ratio": 0.8,
        "same_step_loss": agreement,
        "activation_store": {
            "batch_build_seconds": store.seconds,
            "train_pairs": len(whole),
            "train_bytes": store_bytes(target, whole, model.read_rule),
            "train_bytes_reads_only": reads_only_bytes,
            "train_bytes_float16": store_bytes(target, whole, model.read_rule, dtype=torch.float16),
            "train_build_seconds_projected": store.seconds * len(whole) / len(enc),
        },
        "eval_examples_per_second": throughput,
        "eval_pairs": len(test),
        "rss_after_loading_mib": rss_loaded,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "memory_estimate_mib": predicted.total / 2**20,
        "memory_estimate": predicted.describe(),
    }
    section["estimate_over_peak"] = section["memory_estimate_mib"] / section["peak_rss_mib"]
    path = results_dir(args.results, target.name) / "benchmarks.json"
    write_section(path, "hyperdas_step", section)
    print(json.dumps({k: v for k, v in section.items() if not k.endswith("_seconds")}, indent=2))
    print("wrote", path)


if __name__ == "__main__":
    main()
