"""Layer and k of DAS and MDAS, chosen on validation per method (HyperDAS issue: a fair contest).

Full-vector patching at every layer (no training), then every (method, layer, k) of the grid trained
as notebook 02 trains it (DASConfig's steps, lr and early stopping on val Disentangle) and scored on
the same val pairs (causal and isolate rows of the attribute, whatever the method trained on).
Test pairs are never read. The target's states after each layer are computed once and shared by
every run at that layer.
    python benchmarks/das_sweep.py [--attributes Country ...] [--layers 9 12 15] [--ks 32 128]
Writes results/<model>/das_sweep.json: every run, and per method the best (layer, k) by val
Disentangle averaged over the attributes.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from hyperdas.core.results import results_dir, write_json
from hyperdas.das.interventions import FullInterchange
from hyperdas.das.sweep import best_per_method
from hyperdas.das.training import DASConfig, select_rows, train_das
from hyperdas.data.dataset import load_pairs, pairs_dir
from hyperdas.target.evaluate import encode, evaluate
from hyperdas.target.layer_states import LayerStates, with_states
from hyperdas.target.models import load_target


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--attributes", nargs="+", default=["Country"])
    parser.add_argument("--methods", nargs="+", default=["das", "mdas"])
    parser.add_argument("--layers", type=int, nargs="+", default=[9, 12, 15])
    parser.add_argument("--ks", type=int, nargs="+", default=[32, 128])
    parser.add_argument("--val-pairs", type=int, default=200)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--results", default=str(Path(__file__).resolve().parent.parent / "results"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    target = load_target(args.model)
    pairs = load_pairs(pairs_dir(args.results, target.name))
    runs, start_all = [], time.perf_counter()

    def record(kind, config, scores, seconds, best_step=None):
        runs.append(
            {
                "kind": kind,
                "config": config.to_dict(),
                "val": scores["overall"],
                "best_step": best_step,
                "seconds": round(seconds, 1),
            }
        )
        print(kind, config.target_attribute, config.layer, config.k, scores["overall"], f"{seconds:.0f}s", flush=True)

    for attribute in args.attributes:
        base = DASConfig(target_attribute=attribute)
        # one val set for every method: the attribute's causal and isolate rows
        val = encode(target.tokenizer, select_rows(pairs["val"], base.replace(method="mdas"), args.val_pairs))
        for layer in args.layers:
            states = LayerStates(target, layer)
            start = time.perf_counter()
            scores, _ = evaluate(target, layer, with_states(FullInterchange(), states), val)
            record("full_patch", base.replace(layer=layer), scores, time.perf_counter() - start)
            for method in args.methods:
                for k in args.ks:
                    config = base.replace(method=method, layer=layer, k=k)
                    result = train_das(target, pairs, config, progress=False, states=states)
                    scores, _ = evaluate(target, layer, with_states(result.intervention, states), val)
                    record(method, config, scores, result.seconds, result.best_step)
    best = best_per_method(runs)
    out = results_dir(args.results, target.name) / "das_sweep.json"
    write_json(
        out,
        {
            "model": target.name,
            "attribute": ", ".join(args.attributes),
            "scored_on": "val",
            "best": best,
            "runs": runs,
            "seconds": round(time.perf_counter() - start_all, 1),
        },
    )
    print("best per method:", best)
    print("wrote", out)


if __name__ == "__main__":
    main()
