"""HyperDAS trained with another instruction template, e.g. without entity names, to see how much
of its test score the names carry (notebook 04's conflict and blanked controls say they matter).

Notebook 03's defaults (its `parameters` cell, as the CLI uses them), the given template in training
and test, test scores in all three inference modes.
    python benchmarks/hyperdas_instruction.py --name attribute_only --instruction "{target_attribute}"
Writes the named section of results/<model>/instruction_runs.json.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from hyperdas.core.results import results_dir, write_section
from hyperdas.data.dataset import load_pairs, pairs_dir
from hyperdas.experiments import params as P
from hyperdas.hyper.model import Inference
from hyperdas.hyper.selection import MODES
from hyperdas.hyper.training import encoded_pairs, train_hyperdas
from hyperdas.target.evaluate import evaluate
from hyperdas.target.models import load_target


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--name", required=True, help="section name in instruction_runs.json")
    parser.add_argument("--instruction", required=True, help="str.format template over the pair's fields")
    parser.add_argument("--steps", type=int, default=None, help="default: HyperTrainConfig.steps (notebook 03's)")
    parser.add_argument("--results", default=str(Path(__file__).resolve().parent.parent / "results"))
    args = parser.parse_args()
    params = {"hyper_steps": args.steps} if args.steps else {}
    model_config, (config, train) = P.model_config(params), P.hyperdas_configs(params)
    config = config.replace(instruction=args.instruction)
    torch.manual_seed(train.seed)
    target = load_target(model_config)
    pairs = load_pairs(pairs_dir(args.results, target.name))
    result = train_hyperdas(target, pairs, config, train)
    test = encoded_pairs(target, pairs["test"], config.instruction)
    start, scores = time.perf_counter(), {}
    for mode in MODES:
        s = evaluate(target, config.layer, Inference(result.model, mode), test)[0]
        scores[mode] = {"overall": s["overall"], "per_attribute": s["per_attribute"]}
        print(mode, {k: round(v, 3) for k, v in s["overall"].items() if isinstance(v, float)}, flush=True)
    section = {
        "model": target.name,
        "hyperdas": config.to_dict(),
        "train": train.to_dict(),
        "seed": train.seed,
        "best_step": result.best_step,
        "best_val": result.best_val,
        "train_seconds": result.seconds,
        "test_seconds": time.perf_counter() - start,
        "test": scores,
        "val": [{"step": e["step"], **e["val"]} for e in result.history if "val" in e],
    }
    path = results_dir(args.results, target.name) / "instruction_runs.json"
    write_section(path, args.name, section)
    print("wrote", path)


if __name__ == "__main__":
    main()
