"""Layer and k of DAS and MDAS, chosen on validation per method (HyperDAS issue: a fair contest).

Full-vector patching at every layer (no training; at the last entity token, and at every entity
token: `hyperdas.das.span_patch`), then every (method, layer, k) of the grid trained
as notebook 02 trains it (DASConfig's steps, lr and early stopping on val Disentangle) and scored on
the same val pairs (causal and isolate rows of the attribute, whatever the method trained on).
Each run is also scored on val conflict pairs (`hyperdas.target.conflict`): how often its edit at
that layer carries the source's value. Test pairs are never read. The target's states after each
layer are computed once and shared by every run at that layer.
    python benchmarks/das_sweep.py [--attributes Country ...] [--layers 9 12 15] [--ks 32 128]
    python benchmarks/das_sweep.py --methods --layers 3 6 9 12 15 --out patch_layers.json  # patching only
Writes results/<model>/das_sweep.json (or --out): every run, per method the best (layer, k) by val
Disentangle averaged over the attributes, per method and layer the mean share of conflict pairs
following the activations, and per attribute the share the target itself gives when the activations'
entity is written into the base prompt (`hyperdas.target.conflict.written_entity_outcomes`).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from hyperdas.core.results import results_dir, write_json
from hyperdas.das.interventions import FullInterchange
from hyperdas.das.span_patch import EntitySpanPatch
from hyperdas.das.sweep import best_per_method, conflict_by_layer
from hyperdas.das.training import DASConfig, select_rows, train_das
from hyperdas.data.dataset import load_pairs, pairs_dir
from hyperdas.experiments.faithfulness import conflict_set
from hyperdas.target.conflict import conflict_outcomes, written_entity_outcomes
from hyperdas.target.evaluate import encode, evaluate
from hyperdas.target.layer_states import LayerStates, with_states
from hyperdas.target.models import load_target


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--attributes", nargs="+", default=["Country"])
    parser.add_argument("--methods", nargs="*", default=["das", "mdas"], help="none: full patching only")
    parser.add_argument("--layers", type=int, nargs="+", default=[9, 12, 15])
    parser.add_argument("--ks", type=int, nargs="+", default=[32, 128])
    parser.add_argument("--val-pairs", type=int, default=200)
    parser.add_argument("--conflict-pairs", type=int, default=200, help="val conflict pairs, all attributes (0: none)")
    parser.add_argument("--out", default="das_sweep.json", help="file name under results/<model>/")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--results", default=str(Path(__file__).resolve().parent.parent / "results"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    target = load_target(args.model)
    pairs = load_pairs(pairs_dir(args.results, target.name))
    runs, start_all = [], time.perf_counter()
    val_rows = [r for r in pairs["val"] if r["target_attribute"] in args.attributes]
    conflict = conflict_set(val_rows, args.conflict_pairs) if args.conflict_pairs else []
    # the reference: the activations' entity written into the base prompt, no edit
    by_attribute = {a: [r for r in conflict if r["target_attribute"] == a] for a in args.attributes}
    written = {a: written_entity_outcomes(target, rows) for a, rows in by_attribute.items() if rows}

    def record(kind, config, scores, seconds, method, best_step=None):
        mine = by_attribute[config.target_attribute]
        outcome = conflict_outcomes(target, config.layer, method, mine) if mine else None
        runs.append(
            {
                "kind": kind,
                "config": config.to_dict(),
                "val": scores["overall"],
                "conflict": outcome,
                "best_step": best_step,
                "seconds": round(seconds, 1),
            }
        )
        shown = f"follows activations {outcome['follows_activations']:.3f}, " if outcome else ""
        cell = (kind, config.target_attribute, config.layer, config.k)
        print(*cell, scores["overall"], f"{shown}{seconds:.0f}s", flush=True)

    for attribute in args.attributes:
        base = DASConfig(target_attribute=attribute)
        # one val set for every method: the attribute's causal and isolate rows
        val = encode(target.tokenizer, select_rows(pairs["val"], base.replace(method="mdas"), args.val_pairs))
        for layer in args.layers:
            states = LayerStates(target, layer)
            start = time.perf_counter()
            patch = with_states(FullInterchange(), states)
            scores, _ = evaluate(target, layer, patch, val)
            record("full_patch", base.replace(layer=layer), scores, time.perf_counter() - start, patch)
            start = time.perf_counter()
            scores, _ = evaluate(target, layer, EntitySpanPatch(), val)
            record("span_patch", base.replace(layer=layer), scores, time.perf_counter() - start, EntitySpanPatch())
            for method in args.methods:
                for k in args.ks:
                    config = base.replace(method=method, layer=layer, k=k)
                    result = train_das(target, pairs, config, progress=False, states=states)
                    scored = with_states(result.intervention, states)
                    scores, _ = evaluate(target, layer, scored, val)
                    record(method, config, scores, result.seconds, scored, result.best_step)
    best = best_per_method(runs) if args.methods else {}
    out = results_dir(args.results, target.name) / args.out
    write_json(
        out,
        {
            "model": target.name,
            "attribute": ", ".join(args.attributes),
            "scored_on": "val",
            "best": best,
            "conflict_pairs": len(conflict),
            "follows_activations_by_layer": conflict_by_layer(runs),
            "written_entity": written,
            "runs": runs,
            "seconds": round(time.perf_counter() - start_all, 1),
        },
    )
    print("best per method:", best)
    print("wrote", out)


if __name__ == "__main__":
    main()
