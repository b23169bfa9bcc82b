"""Command line training of HyperDAS, DAS or MDAS from a profile (the notebooks' parameter names), e.g.

    python -m hyperdas.cli --config configs/cpu.yaml --set hyper_steps=50 --set source_ca=false
    python -m hyperdas.cli --config configs/cpu.yaml --method mdas --attribute Country
    accelerate launch --multi_gpu --num_processes 2 -m hyperdas.cli --config configs/cpu.yaml

Under `accelerate launch` every process loads its own frozen target, the trainable module is
wrapped by the accelerator (DDP; FSDP with `accelerate launch --use_fsdp`), the global batch stays the
profile's whatever the process count (`--micro-batch` cuts each process's share further, with
gradient accumulation), and only the main process writes (`hyperdas.target.distributed`).

Unset parameters take the defaults of the notebook that trains the method (HyperDAS: notebook 03,
DAS/MDAS: notebook 02), so the CLI and `make reproduce` train the same thing from the same profile.
Overrides are YAML-typed (`true`/`false`, numbers, lists), so every switch can be turned off.
Writes the checkpoint, its log and `<method>_cli.json` (configs, best val, timings, process count)
under ``<results>/<model>/checkpoints/<method>`` (DAS/MDAS: ``<method>-<attribute>``).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from hyperdas.batch import ProfileError, load_profile, notebook_defaults, parse_overrides

# notebook parameter -> (config, field)
_MODEL_FIELDS = ("layer", "k", "n_blocks", "init", "subspace", "source_ca", "base_ca", "include_suffix",
                 "position_offsets")
_TRAIN_FIELDS = {"hyper_steps": "steps", "hyper_batch_size": "batch_size", "hyper_lr": "lr",
                 "hyper_lr_rotation": "lr_rotation", "causal_weight": "causal_weight", "iso_weight": "iso_weight",
                 "hyper_eval_every": "eval_every", "hyper_max_val_pairs": "max_val_pairs", "seed": "seed"}


def configs_from(params: dict):
    from hyperdas.core.config import ModelConfig
    from hyperdas.hyper.model import HyperDASConfig
    from hyperdas.hyper.training import HyperTrainConfig

    model = ModelConfig(spec=params.get("model", "smollm2-135m"), dtype=params.get("dtype", "auto"),
                        device=params.get("device", "cpu"), load_in_4bit=bool(params.get("load_in_4bit", False)))
    hyper = HyperDASConfig(**{f: params[f] for f in _MODEL_FIELDS if f in params})
    train = HyperTrainConfig(**{field: params[p] for p, field in _TRAIN_FIELDS.items() if p in params})
    return model, hyper, train


TRAINING_NOTEBOOK = {"hyperdas": "03_train_hyperdas", "das": "02_baselines", "mdas": "02_baselines"}
_DAS_FIELDS = ("layer", "k", "lr", "batch_size", "steps", "eval_every", "patience", "max_val_pairs", "seed")


def das_config_from(params: dict, method: str, attribute: str):
    from hyperdas.das.training import DASConfig

    return DASConfig(method=method, target_attribute=attribute, **{f: params[f] for f in _DAS_FIELDS if f in params})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="profile name in configs/ or a YAML path")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--method", choices=("hyperdas", "das", "mdas"), default="hyperdas")
    parser.add_argument("--attribute", default="Country", help="DAS/MDAS: the attribute to train for")
    parser.add_argument("--micro-batch", type=int, default=None,
                        help="pairs per forward/backward in each process (gradients accumulate up to the global batch)")
    parser.add_argument("--results", default=None, help="results root (default: the profile's or ./results)")
    parser.add_argument("--no-progress", dest="progress", action="store_false")
    args = parser.parse_args(argv)
    from hyperdas.target.distributed import DistributedError, runtime

    try:
        params = {**notebook_defaults(TRAINING_NOTEBOOK[args.method]), **load_profile(args.config),
                  **parse_overrides(args.overrides)}
        model_config, hyper, train = configs_from(params)
        das = das_config_from(params, args.method, args.attribute) if args.method != "hyperdas" else None
        run = runtime(model_config.device, args.micro_batch, model_config.load_in_4bit)
    except (ProfileError, DistributedError, ValueError, TypeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    from hyperdas.data.dataset import load_pairs, pairs_dir
    from hyperdas.hyper.training import train_hyperdas
    from hyperdas.target.models import load_target
    from hyperdas.core.results import results_dir, write_json
    from hyperdas.das.training import train_das

    root = Path(args.results or params.get("results_root") or "results")
    target = load_target(model_config)
    pairs = load_pairs(params.get("pairs_in") or pairs_dir(root, target.name))
    if das is not None and args.attribute not in set(pairs["train"]["target_attribute"]):
        found = sorted(set(pairs["train"]["target_attribute"]))
        print(f"error: --attribute {args.attribute!r} has no training pairs; attributes present: {found}", file=sys.stderr)
        return 2
    name = args.method if das is None else f"{args.method}-{args.attribute}"
    out = results_dir(root, target.name) / "checkpoints" / name
    if das is None:
        result = train_hyperdas(target, pairs, hyper, train, out_dir=out, progress=args.progress, runtime=run)
        configs = {"model": model_config, "hyperdas": hyper, "train": train}
    else:
        result = train_das(target, pairs, das, checkpoint_dir=out, progress=args.progress, runtime=run)
        configs = {"model": model_config, "das": das}
        if run.is_main:  # the loss log HyperDAS writes as it goes
            (out / "train_log.jsonl").write_text("".join(json.dumps(entry) + "\n" for entry in result.history))
    if run.is_main:
        write_json(out / f"{args.method}_cli.json", {
            "model": target.name, "config": configs, "best_step": result.best_step, "best_val": result.best_val,
            "steps_run": len(result.history), "seconds": result.seconds, "resumed_from": result.resumed_from,
            "processes": run.world, "micro_batch": args.micro_batch, "fsdp": run.fsdp})
        print(f"best val {result.best_val} at step {result.best_step}; checkpoint in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
