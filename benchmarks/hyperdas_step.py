"""HyperDAS training-step overhead, peak memory and evaluation throughput on the embedded model.

One HyperDAS training step (`hyperdas.hyper.training.train_step`: read passes of base and source
without gradients, hypernetwork, selection, subspace, the edited base run, weighted CE +
sparsity, backward, clipping, AdamW) against one bare frozen forward+backward of the target on
the same base rows (gradient to the residual stream after the same layer; see das_step.py).
The step is timed with the read passes served by an activation store (`hyperdas.hyper.store`,
training's default) and without one. Interleaved after warm-up; medians reported. Goal: ratio
<= 1.5 with the store. Also: one step's loss with and without the store from the same
initialisation, the store's size and build time projected to the whole training split, and the
memory estimate that training prints (`hyperdas.target.memory`) against the peak resident set.
    python benchmarks/hyperdas_step.py [--model smollm2-135m] [--layer 15] [--k 32] [--n-blocks 2]
Writes the section "hyperdas_step" of results/<model>/benchmarks.json.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import time
from pathlib import Path

import torch
from das_step import bare_step, timed  # noqa: E402  same folder: the shared reference step

from hyperdas.core.results import results_dir, write_section
from hyperdas.data.dataset import load_pairs, pairs_dir
from hyperdas.hyper.model import HyperDAS, HyperDASConfig, Inference
from hyperdas.hyper.store import ActivationStore, store_bytes
from hyperdas.hyper.training import HyperTrainConfig, encoded_pairs, example_weights, make_optimizer, train_step
from hyperdas.target.evaluate import evaluate
from hyperdas.target.memory import estimate_for
from hyperdas.target.models import load_target


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
    torch.manual_seed(0)
    target = load_target(args.model)
    rss_loaded = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    pairs = load_pairs(pairs_dir(args.results, target.name))
    config = HyperDASConfig(layer=args.layer, k=args.k, n_blocks=args.n_blocks)
    train = HyperTrainConfig(batch_size=args.batch_size)
    enc = encoded_pairs(target, pairs["train"].select(range(args.batch_size)))
    predicted = estimate_for(target, config, enc, args.batch_size)
    model = HyperDAS(target, config).to(target.device).train()
    optimizer = make_optimizer(model, train)
    weights = example_weights(enc, train)
    index = list(range(args.batch_size))
    agreement = same_step_losses(target, config, train, enc, index, weights)
    store = ActivationStore(target, enc, args.layer, model.read_rule, progress=False)
    whole = encoded_pairs(target, pairs["train"])
    run_stored = lambda: train_step(target, model, enc, index, weights, optimizer, train, 1, store=store)  # noqa: E731
    run_hyper = lambda: train_step(target, model, enc, index, weights, optimizer, train, 1)  # noqa: E731
    run_bare = lambda: bare_step(target, args.layer, enc, index)  # noqa: E731
    for _ in range(2):  # warm-up
        run_stored(), run_hyper(), run_bare()
    stored, hyper, bare = [], [], []
    for _ in range(args.repeats):  # interleaved, so drifts in machine load hit all three
        stored += timed(run_stored, 1)
        hyper += timed(run_hyper, 1)
        bare += timed(run_bare, 1)

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
    section = {
        "model": target.name,
        "config": config.to_dict(),
        "batch_size": args.batch_size,
        "torch_threads": torch.get_num_threads(),
        "base_tokens": {"min": min(lengths), "max": max(lengths)},
        "trainable_parameters": trainable,
        "hyperdas_step_seconds": {"median": statistics.median(stored), "all": stored},
        "hyperdas_step_without_store_seconds": {"median": statistics.median(hyper), "all": hyper},
        "bare_forward_backward_seconds": {"median": statistics.median(bare), "all": bare},
        "ratio": statistics.median(stored) / statistics.median(bare),
        "ratio_without_store": statistics.median(hyper) / statistics.median(bare),
        "goal_ratio": 1.5,
        "same_step_loss": agreement,
        "activation_store": {
            "batch_build_seconds": store.seconds,
            "train_pairs": len(whole),
            "train_bytes": store_bytes(target, whole, model.read_rule),
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
