"""The layer and dimension sweeps behind the paper's sweep figures, trained by notebooks 02 and 03
beside their main runs and never over them.

HyperDAS (notebook 03): one model per extra layer (at the main k), each a section `layer<L>` of
`hyperdas_layers.json` beside the main run's; one per extra rank k (at the main layer), each a
section `hyperdas-k<k>` of `dimension_sweep.json`. MDAS (notebook 02): one per extra rank and
attribute at the main layer, section `mdas-k<k>` of `dimension_sweep.json` (its layer sweep stays in
`baselines.json`). Every HyperDAS section carries its faithfulness, as the main run's does.
"""

from __future__ import annotations

from pathlib import Path

from hyperdas.core.results import write_section
from hyperdas.experiments import faithfulness as faith
from hyperdas.experiments.hyperdas_run import LAYERS, faithful_fields, score_test_pairs
from hyperdas.hyper.training import checkpoint_folder, encoded_pairs, train_hyperdas

DIMS = "dimension_sweep.json"


def _section(target, pairs, config, train, folder, resume: bool, n_conflict: int, seed: int) -> dict:
    """Train one HyperDAS variant (resumable in `folder`), score it on test and on conflict pairs."""
    result = train_hyperdas(target, pairs, config, train, out_dir=folder, resume=resume)
    test = encoded_pairs(target, pairs["test"], config.instruction)
    records, seconds = score_test_pairs(target, result.model, test, config.layer, seed=train.seed)
    block = faith.faithfulness(target, result.model, pairs, n_conflict=n_conflict, seed=seed)
    return {
        "records": [{**r, "k": config.k} for r in records],
        "config": {"hyperdas": config, "train": train},
        "seed": train.seed,
        "best_step": result.best_step,
        "steps_run": len(result.history),
        "timings": {"train_seconds": result.seconds, "test_seconds": seconds},
        **faithful_fields(block),
    }


def hyperdas_sweep(
    target,
    pairs,
    config,
    train,
    out_dir: str | Path,
    layers=(),
    ks=(),
    resume: bool = True,
    n_conflict: int = 200,
    seed: int = 0,
) -> list[str]:
    """Train and score the HyperDAS of every extra layer and rank (the main run's excluded); returns
    the sections written."""
    out_dir, written = Path(out_dir), []
    for layer in [x for x in layers if x != config.layer]:
        variant = config.replace(layer=layer)
        section = _section(target, pairs, variant, train, checkpoint_folder(out_dir, layer), resume, n_conflict, seed)
        write_section(out_dir / LAYERS, f"layer{layer}", section)
        written.append(f"{LAYERS}: layer{layer}")
    for k in [x for x in ks if x != config.k]:
        variant = config.replace(k=k)
        folder = out_dir / "checkpoints" / f"hyperdas-layer{config.layer}-k{k}"
        write_section(
            out_dir / DIMS, f"hyperdas-k{k}", _section(target, pairs, variant, train, folder, resume, n_conflict, seed)
        )
        written.append(f"{DIMS}: hyperdas-k{k}")
    return written


def mdas_dimension_sweep(
    target, pairs, base, out_dir: str | Path, ks=(), attributes=None, resume: bool = True
) -> list[str]:
    """MDAS at the main layer for every extra rank (`base`: notebook 02's DAS config), per attribute
    of `attributes`; returns the sections written."""
    from hyperdas.das.baselines import run_baselines

    out_dir, written = Path(out_dir), []
    for k in [x for x in ks if x != base.k]:
        records = run_baselines(
            target,
            pairs,
            base.replace(k=k),
            methods=["mdas"],
            attributes=attributes,
            generation=False,
            checkpoint_root=out_dir / "checkpoints" / "baselines",
            resume=resume,
        )
        write_section(out_dir / DIMS, f"mdas-k{k}", {"records": records, "config": base.replace(k=k)})
        written.append(f"{DIMS}: mdas-k{k}")
    return written
