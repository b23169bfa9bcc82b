"""DAS and MDAS beside the budget ladder, one file per seed, with the per-pair outcomes that the
ladder's intervals and paired comparisons read (`hyperdas.core.intervals`).

    python -m hyperdas.ladder --baselines --seeds 0 1 2
    python -m hyperdas.ladder --baselines --seeds 0 --examples 19200

Without `--examples` each method stops early on val, as in notebook 02. With it, early stopping is
off and each attribute's model trains for its share of the budget (`examples` summed over the
attributes, as the ladder counts HyperDAS's examples); the val-best weights within that budget are
scored, as notebook 02 does. The configuration is notebook 02's (`--set` overrides) at its layer.
Writes ``<results>/<model>/ladder/baselines_<early|examples<N>>_seed<seed>.json``.
"""

from __future__ import annotations

import math
from pathlib import Path

from hyperdas.core.results import read_json, results_dir, write_json
from hyperdas.experiments.ladder import _plain
from hyperdas.experiments.ladder_summary import LADDER

METHODS = ("das", "mdas")


def baselines_file(root: str | Path, model_name: str, seed: int, examples: int | None = None) -> Path:
    budget = "early" if examples is None else f"examples{examples}"
    return results_dir(root, model_name) / LADDER / f"baselines_{budget}_seed{seed}.json"


def budget_config(base, n_attributes: int, examples: int | None):
    """`base` as run: unchanged (early stopping) or trained for its share of `examples`."""
    if examples is None:
        return base
    steps = math.ceil(examples / (n_attributes * base.batch_size))
    return base.replace(steps=steps, patience=steps // base.eval_every + 1)  # never stops early


def run_ladder_baselines(
    params: dict, seeds: list[int], root: str | Path, examples: int | None = None, progress: bool = True
) -> list[Path]:
    """Train and score DAS and MDAS per seed (files already written for the same configuration are
    kept); returns the files."""
    from hyperdas.das.baselines import run_baselines, target_attributes
    from hyperdas.data.dataset import load_pairs, pairs_dir
    from hyperdas.experiments import params as P
    from hyperdas.experiments.faithfulness import CONFLICT_PAIRS, conflict_set
    from hyperdas.target.models import load_target
    from hyperdas.target.provenance import provenance

    if examples is not None and examples < 1:
        from hyperdas.core.config import ConfigError

        raise ConfigError(f"--examples {examples}: give a positive number of training examples")
    model_config = P.model_config(params)
    base = P.das_config(params)
    target = load_target(model_config)
    pairs = load_pairs(params.get("pairs_in") or pairs_dir(root, target.name), tokenizer=target.tokenizer)
    attributes = target_attributes(pairs["train"])
    base = budget_config(base, len(attributes), examples)
    conflict = conflict_set(pairs["test"], params.get("n_conflict", CONFLICT_PAIRS))
    built_from = provenance(target, pairs)
    written = []
    for seed in seeds:
        config = base.replace(seed=seed)
        out = baselines_file(root, target.name, seed, examples)
        configs = _plain({"model": model_config, "das": config})
        saved = read_json(out) if out.is_file() else {}
        if saved.get("config") == configs and saved.get("provenance") == built_from:
            written.append(out)
            continue
        folder = results_dir(root, target.name) / "checkpoints" / f"ladder-baselines-{out.stem}"
        records = run_baselines(
            target,
            pairs,
            config,
            methods=METHODS,
            attributes=attributes,
            generation=False,
            checkpoint_root=folder,
            progress=progress,
            conflict=conflict,
        )
        for record in records:
            record.pop("history", None)  # the checkpoints keep it; the ladder reads scores and outcomes
        write_json(
            out,
            {
                "model": target.name,
                "config": configs,
                "seed": seed,
                "examples_budget": examples,
                "early_stopped": examples is None,
                "layer": config.layer,
                "test_rows": len(pairs["test"]),
                "conflict_pairs": len(conflict),
                "records": records,
                "provenance": built_from,
            },
        )
        written.append(out)
        if progress:
            print(f"baselines seed {seed}: -> {out}")
    return written
