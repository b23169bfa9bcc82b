"""Small sweep that chose the embedded model's DAS/MDAS defaults (layer, k, lr), scored on val.

Full-vector patching at every probed layer (no training), then MDAS on one attribute over
layers, then k and lr at the best layer. Test pairs are never read.
    python benchmarks/das_sweep.py [--model smollm2-135m] [--attribute Country] [--steps 100]
Writes results/<model>/das_sweep.json.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from hyperdas.core.results import results_dir, write_json
from hyperdas.das.interventions import FullInterchange
from hyperdas.das.training import DASConfig, select_rows, train_das
from hyperdas.data.dataset import load_pairs, pairs_dir
from hyperdas.target.evaluate import encode, evaluate
from hyperdas.target.models import load_target


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--attribute", default="Country")
    parser.add_argument("--layers", type=int, nargs="+", default=[6, 9, 12, 15])
    parser.add_argument("--ks", type=int, nargs="+", default=[32, 128, 256])
    parser.add_argument("--lrs", type=float, nargs="+", default=[3e-3, 1e-2, 3e-2])
    parser.add_argument("--steps", type=int, default=80)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--results", default=str(Path(__file__).resolve().parent.parent / "results"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    target = load_target(args.model)
    pairs = load_pairs(pairs_dir(args.results, target.name))
    # the sweep's starting point (k, lr and validation size until the sweep picks them), not DASConfig's defaults
    base = DASConfig(
        method="mdas",
        target_attribute=args.attribute,
        layer=9,
        k=128,
        lr=1e-2,
        steps=args.steps,
        eval_every=25,
        patience=2,
        max_val_pairs=200,
    )
    val = encode(target.tokenizer, select_rows(pairs["val"], base))
    runs = []

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
        print(kind, config.layer, config.k, config.lr, scores["overall"], f"{seconds:.0f}s", flush=True)

    for layer in args.layers:
        start = time.perf_counter()
        scores, _ = evaluate(target, layer, FullInterchange(), val)
        record("full_patch", base.replace(layer=layer), scores, time.perf_counter() - start)

    def train(config):
        result = train_das(target, pairs, config, progress=False)
        scores, _ = evaluate(target, config.layer, result.intervention, val)
        record(config.method, config, scores, result.seconds, result.best_step)
        return scores["overall"]["disentangle"]

    by_layer = {layer: train(base.replace(layer=layer)) for layer in args.layers}
    best_layer = max(by_layer, key=by_layer.get)
    by_k = {k: train(base.replace(layer=best_layer, k=k)) for k in args.ks if k != base.k}
    by_k[base.k] = by_layer[best_layer]
    best_k = max(by_k, key=by_k.get)
    for lr in args.lrs:
        if lr != base.lr:
            train(base.replace(layer=best_layer, k=best_k, lr=lr))
    das = base.replace(method="das", layer=best_layer, k=best_k)
    train(das)
    out = results_dir(args.results, target.name) / "das_sweep.json"
    write_json(
        out,
        {
            "model": target.name,
            "attribute": args.attribute,
            "scored_on": "val",
            "best_layer": best_layer,
            "best_k": best_k,
            "runs": runs,
        },
    )
    print("wrote", out)


if __name__ == "__main__":
    main()
