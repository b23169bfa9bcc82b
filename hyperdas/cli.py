"""Command line training of HyperDAS from a profile (the notebooks' parameter names), e.g.

    python -m hyperdas.train --config configs/cpu.yaml --set hyper_steps=50 --set source_ca=false

(Multi-process runs under `accelerate launch` are not supported yet: issue 9.)

Overrides are YAML-typed (`true`/`false`, numbers, lists), so every switch can be turned off.
Writes the checkpoint, `train_log.jsonl` and `hyperdas_cli.json` (configs, best val, timings)
under ``<results>/<model>/checkpoints/hyperdas``.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from hyperdas.batch import ProfileError, load_profile, parse_overrides

# notebook parameter -> (config, field)
_MODEL_FIELDS = ("layer", "k", "n_blocks", "init", "subspace", "source_ca", "base_ca", "include_suffix")
_TRAIN_FIELDS = {"hyper_steps": "steps", "hyper_batch_size": "batch_size", "hyper_lr": "lr",
                 "hyper_lr_rotation": "lr_rotation", "causal_weight": "causal_weight", "iso_weight": "iso_weight",
                 "hyper_eval_every": "eval_every", "hyper_max_val_pairs": "max_val_pairs", "seed": "seed"}


def configs_from(params: dict):
    from hyperdas.config import ModelConfig
    from hyperdas.editor import HyperDASConfig
    from hyperdas.hypertrain import HyperTrainConfig

    model = ModelConfig(spec=params.get("model", "smollm2-135m"), dtype=params.get("dtype", "auto"),
                        device=params.get("device", "cpu"), load_in_4bit=bool(params.get("load_in_4bit", False)))
    hyper = HyperDASConfig(**{f: params[f] for f in _MODEL_FIELDS if f in params})
    train = HyperTrainConfig(**{field: params[p] for p, field in _TRAIN_FIELDS.items() if p in params})
    return model, hyper, train


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="profile name in configs/ or a YAML path")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--results", default=None, help="results root (default: the profile's or ./results)")
    parser.add_argument("--no-progress", dest="progress", action="store_false")
    args = parser.parse_args(argv)
    try:
        params = {**load_profile(args.config), **parse_overrides(args.overrides)}
        model_config, hyper, train = configs_from(params)
    except (ProfileError, ValueError, TypeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    from hyperdas.data.dataset import load_pairs, pairs_dir
    from hyperdas.hypertrain import train_hyperdas
    from hyperdas.models import load_target
    from hyperdas.results import results_dir, write_json

    root = Path(args.results or params.get("results_root") or "results")
    target = load_target(model_config)
    pairs = load_pairs(params.get("pairs_in") or pairs_dir(root, target.name))
    out = results_dir(root, target.name) / "checkpoints" / "hyperdas"
    result = train_hyperdas(target, pairs, hyper, train, out_dir=out, progress=args.progress)
    write_json(out / "hyperdas_cli.json", {"model": target.name, "config": {"model": model_config, "hyperdas": hyper,
               "train": train}, "best_step": result.best_step, "best_val": result.best_val,
               "steps_run": len(result.history), "seconds": result.seconds, "resumed_from": result.resumed_from})
    print(f"best val {result.best_val} at step {result.best_step}; checkpoint in {out}")
    return 0
