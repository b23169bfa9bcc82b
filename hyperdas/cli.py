"""Command line training of HyperDAS, DAS or MDAS from a profile (the notebooks' parameter names), e.g.

    hyperdas-train --config configs/cpu.yaml --set hyper_steps=50 --set source_ca=false
    hyperdas-train --config configs/cpu.yaml --method mdas --attribute Country
    accelerate launch --multi_gpu --num_processes 2 -m hyperdas.cli --config configs/cpu.yaml

Under `accelerate launch` every process loads its own frozen target, the trainable module is
wrapped by the accelerator (DDP; FSDP with `accelerate launch --use_fsdp`), the global batch stays the
profile's whatever the process count (`--micro-batch` cuts each process's share further, with
gradient accumulation), and only the main process writes (`hyperdas.target.distributed`).

Unset parameters take the configs' defaults, which the training notebooks (HyperDAS: 03, DAS/MDAS:
02) repeat, so the CLI and `make reproduce` train the same thing from the same profile
(`hyperdas.experiments.params`).
Overrides are YAML-typed (`true`/`false`, numbers, lists), so every switch can be turned off.
Writes the checkpoint, its log and `<method>_cli.json` (configs, best val, timings, process count)
under ``<results>/<model>/checkpoints/<method>`` (DAS/MDAS: ``<method>-<attribute>``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from hyperdas.core.errors import HyperDASError
from hyperdas.profiles import chain, check_names, check_values, load_profile, parse_overrides


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="profile name in configs/ or a YAML path")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--method", choices=("hyperdas", "das", "mdas"), default="hyperdas")
    parser.add_argument("--attribute", default="Country", help="DAS/MDAS: the attribute to train for")
    parser.add_argument(
        "--micro-batch",
        type=int,
        default=None,
        help="pairs per forward/backward in each process (gradients accumulate up to the global batch)",
    )
    parser.add_argument("--results", default=None, help="results root (default: the profile's or ./results)")
    parser.add_argument("--no-progress", dest="progress", action="store_false")
    parser.add_argument("--fresh", action="store_true", help="train again, ignoring the checkpoint folder's state")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error, not one line")
    parser.add_argument(
        "--no-faithfulness",
        dest="faithfulness",
        action="store_false",
        help="HyperDAS: skip the conflict and held-out-entity scores on the test pairs after training",
    )
    args = parser.parse_args(argv)
    try:
        return _train(args)
    except (HyperDASError, OSError, MemoryError) as err:
        if args.debug:
            raise
        print(f"error: {one_line(err)}", file=sys.stderr)
        return 2


def one_line(err: BaseException) -> str:
    text = " ".join(str(err).split()) or type(err).__name__
    return text if isinstance(err, HyperDASError) else f"{type(err).__name__}: {text}"


# overrides the CLI would accept and ignore: what to do instead
INSTEAD = {
    "fresh": "use the --fresh flag",
    "seeds": "the CLI trains one seed per run: --set seed=N",
}


def used_parameters(method: str) -> set[str]:
    """The notebook parameters hyperdas-train reads for `method` (`hyperdas.experiments.params`)."""
    from hyperdas.experiments import params as P

    own = set(P.HYPERDAS) | set(P.HYPER_TRAIN) | {"n_conflict"} if method == "hyperdas" else set(P.DAS)
    return set(P.MODEL) | {"results_root", "pairs_in"} | own


def check_used(overrides: dict, method: str, command: str | None = None) -> None:
    """Refuse an override this command would ignore (another notebook's parameter, or another
    method's): a profile may hold them for the notebooks, a `--set` means to change this run."""
    from hyperdas.profiles import ProfileError

    ignored = sorted(set(overrides) - used_parameters(method))
    if ignored:
        hints = [f"{name} ({INSTEAD[name]})" if name in INSTEAD else name for name in ignored]
        raise ProfileError(
            f"override(s) {', '.join(hints)}: {command or f'hyperdas-train --method {method}'} does not use them "
            f"(they belong to other notebooks or methods)"
        )


def _train(args) -> int:
    from hyperdas.experiments import params as P
    from hyperdas.target.distributed import runtime
    from hyperdas.target.models import check_device

    # everything the user gave is checked before any model loads
    overrides = parse_overrides(args.overrides)
    params = {**load_profile(args.config), **overrides}
    check_names(params, chain())
    check_used(overrides, args.method)
    model_config = P.model_config(params)
    hyper, train = P.hyperdas_configs(params)
    das = (
        P.das_config(params, method=args.method, target_attribute=args.attribute) if args.method != "hyperdas" else None
    )
    check_values(params, chain())  # the parameters outside the configs (which name their own fields)
    check_device(model_config.device)
    run = runtime(model_config.device, args.micro_batch, model_config.load_in_4bit)
    from hyperdas.core.files import write_text
    from hyperdas.core.results import results_dir, write_json
    from hyperdas.das.training import train_das
    from hyperdas.data.dataset import load_pairs, pairs_dir
    from hyperdas.hyper.training import train_hyperdas
    from hyperdas.target.models import load_target

    root = Path(args.results or params.get("results_root") or "results")
    target = load_target(model_config)
    pairs = load_pairs(params.get("pairs_in") or pairs_dir(root, target.name), tokenizer=target.tokenizer)
    if das is not None and args.attribute not in set(pairs["train"]["target_attribute"]):
        found = sorted(set(pairs["train"]["target_attribute"]))
        print(
            f"error: --attribute {args.attribute!r} has no training pairs; attributes present: {found}", file=sys.stderr
        )
        return 2
    name = args.method if das is None else f"{args.method}-{args.attribute}"
    out = results_dir(root, target.name) / "checkpoints" / name
    if das is None:
        result = train_hyperdas(
            target, pairs, hyper, train, out_dir=out, progress=args.progress, runtime=run, resume=not args.fresh
        )
        configs = {"model": model_config, "hyperdas": hyper, "train": train}
    else:
        result = train_das(
            target, pairs, das, checkpoint_dir=out, progress=args.progress, runtime=run, resume=not args.fresh
        )
        configs = {"model": model_config, "das": das}
        if run.is_main:  # the loss log HyperDAS writes as it goes
            write_text(out / "train_log.jsonl", "".join(json.dumps(entry) + "\n" for entry in result.history))
    faithful = None
    if das is None and run.is_main and args.faithfulness:  # every HyperDAS number carries its faithfulness
        from hyperdas.data.ravel import RavelDataError
        from hyperdas.experiments.faithfulness import CONFLICT_PAIRS, faithfulness

        try:
            faithful = faithfulness(target, result.model, pairs, n_conflict=params.get("n_conflict", CONFLICT_PAIRS))
        except RavelDataError as err:  # the checkpoint is saved: say why its faithfulness is missing
            faithful = {"skipped": str(err)}
            print(f"warning: no faithfulness scores: {err}", file=sys.stderr)
    if run.is_main:
        write_json(
            out / f"{args.method}_cli.json",
            {
                "model": target.name,
                "config": configs,
                "best_step": result.best_step,
                "best_val": result.best_val,
                "steps_run": len(result.history),
                "seconds": result.seconds,
                "resumed_from": result.resumed_from,
                "processes": run.world,
                "micro_batch": args.micro_batch,
                "fsdp": run.fsdp,
                **({"faithfulness": faithful} if faithful else {}),
            },
        )
        print(f"best val {result.best_val} at step {result.best_step}; checkpoint in {out}")
        if faithful and "conflict" in faithful:
            shares = {m: round(c["follows_activations"], 3) for m, c in faithful["conflict"].items()}
            print(f"conflict pairs ({faithful['conflict_pairs']}): output follows the activations in {shares}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
