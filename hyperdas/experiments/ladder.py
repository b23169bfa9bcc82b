"""The budget ladder: one HyperDAS run trained to its longest budget, its weights kept at each rung
(`HyperTrainConfig.snapshot_steps`), and every rung scored on test with its faithfulness.

    python -m hyperdas.ladder --profile cpu --steps 4000 --rungs 300 600 1200 2400 4000

The run is the profile's HyperDAS (notebook 03's parameters, `--set` overrides as in the batch
runner) with `hyper_steps=--steps`; a rung's model is the weights at that step of the one run, so
its schedules (sparsity ramp, temperature) are the longest budget's, not those of a run that stops
there. Each rung holds the val scores training measured at that step, the test records of the
three inference modes and the faithfulness block (`hyperdas.experiments.faithfulness`). Training
resumes from its checkpoint folder; rungs already scored in the output file are kept, so an
interrupted ladder continues where it stopped.
Writes ``<results>/<model>/ladder/hyperdas_steps<steps>_seed<seed>.json``.

A run with overrides (other than `seed`) is a variant: its files and checkpoints are named by them
(`variant_name`), so it never overwrites the plain run. Pilots of single options (`pilot=True`) are
such runs in ``<results>/<model>/pilots/``, the plain run at the same budget beside them; each
rung then is also scored on every val pair (`val_scored`), so an option is kept or dropped on val
(`hyperdas.experiments.ladder_summary.pilot_comparisons`).
"""

from __future__ import annotations

import time
from pathlib import Path

from hyperdas.core.config import ConfigError
from hyperdas.core.results import read_json, results_dir, write_json
from hyperdas.experiments.ladder_summary import LADDER, PILOTS, write_summary

NOT_A_VARIANT = ("seed",)  # overrides that do not change what is trained (the seed names the file itself)


def variant_name(overrides: dict | None) -> str:
    """The file-name part of a run's overrides: "" for none, else "_<key>-<value>" per override,
    sorted (`answer_tokens=None` -> "_answer_tokens-none")."""
    parts = []
    for key in sorted(overrides or {}):
        value = overrides[key]
        text = "none" if value is None else str(value).lower()
        parts.append(f"_{key}-" + "".join(c if c.isalnum() or c in ".-" else "." for c in text))
    return "".join(parts)


def ladder_file(
    root: str | Path, model_name: str, steps: int, seed: int, overrides: dict | None = None, kind: str = LADDER
) -> Path:
    name = f"hyperdas_steps{steps}_seed{seed}{variant_name(overrides)}.json"
    return results_dir(root, model_name) / kind / name


def rung_record(
    target, model, pairs, step: int, val: dict | None, batch_size: int, n_conflict: int, score_val: bool = False
) -> dict:
    """One rung: val at `step` (from training), test records of every mode and the faithfulness block;
    `score_val`: also every val pair's records and outcomes (`val_scored`)."""
    from hyperdas.experiments.faithfulness import faithfulness
    from hyperdas.experiments.hyperdas_run import faithful_fields, score_test_pairs
    from hyperdas.hyper.training import encoded_pairs

    started = time.perf_counter()
    test = encoded_pairs(target, pairs["test"], model.config.instruction)
    outcomes: dict = {}
    records, _ = score_test_pairs(target, model, test, model.config.layer, outcomes=outcomes)
    scored_val = {"val_scored": val_scored(target, model, pairs)} if score_val else {}
    faithful = faithfulness(target, model, pairs, n_conflict=n_conflict)
    return {
        "steps": step,
        "examples_seen": step * batch_size,
        "val": val,
        "records": records,
        "outcomes": outcomes,
        **scored_val,
        **faithful_fields(faithful),
        "score_seconds": time.perf_counter() - started,
    }


def val_scored(target, model, pairs) -> dict:
    """Every val pair scored like test: records per mode and attribute, and per-pair outcomes."""
    from hyperdas.experiments.hyperdas_run import score_test_pairs
    from hyperdas.hyper.training import encoded_pairs

    outcomes: dict = {}
    encoded = encoded_pairs(target, pairs["val"], model.config.instruction)
    records, _ = score_test_pairs(target, model, encoded, model.config.layer, outcomes=outcomes)
    return {"records": records, "outcomes": outcomes}


def run_ladder(
    params: dict,
    steps: int,
    rungs: list[int],
    root: str | Path,
    progress: bool = True,
    score_only: bool = False,
    overrides: dict | None = None,
    pilot: bool = False,
    score_val: bool = False,
) -> Path:
    """Train (or resume) the ladder's run and score every rung not yet in its file; returns the file.
    `score_only`: train no further; score the rungs whose weights the run has kept so far (a run
    stopped part-way; running again without it resumes the training). `overrides`: those of
    `params` that make this run a variant (named by them); `pilot`: a pilot run (`PILOTS`).
    `score_val` (always for a pilot): also score every val pair, at kept rungs too (`val_scored`)."""
    score_val = score_val or pilot
    variant = {k: v for k, v in (overrides or {}).items() if k not in NOT_A_VARIANT}
    kind = PILOTS if pilot else LADDER
    from hyperdas.data.dataset import load_pairs, pairs_dir
    from hyperdas.experiments import params as P
    from hyperdas.experiments.faithfulness import CONFLICT_PAIRS
    from hyperdas.hyper.training import load_hyperdas, snapshot_folder, train_hyperdas
    from hyperdas.target.models import load_target

    params = {**params, "hyper_steps": steps, "snapshot_steps": sorted(rungs)}
    model_config = P.model_config(params)
    hyper, train = P.hyperdas_configs(params)  # checks the rungs before anything loads
    target = load_target(model_config)
    pairs = load_pairs(params.get("pairs_in") or pairs_dir(root, target.name), tokenizer=target.tokenizer)
    out = ladder_file(root, target.name, steps, train.seed, variant, kind)
    name = f"hyperdas-{'pilot' if pilot else 'ladder'}-steps{steps}-seed{train.seed}{variant_name(variant)}"
    folder = results_dir(root, target.name) / "checkpoints" / name
    configs = {"model": model_config, "hyperdas": hyper, "train": train}
    saved = read_json(out) if out.is_file() else None
    changed = _changed(saved["config"], _plain(configs)) if saved else []
    if changed:  # never overwrite a run's scored rungs with another run's
        raise ConfigError(
            f"{out} holds a ladder run with other settings ({', '.join(changed)}): move it aside to start "
            f"this one, or run with its settings"
        )
    started = time.perf_counter()
    if score_only:
        result = _so_far(folder, target, pairs)
        rungs = [s for s in rungs if (snapshot_folder(folder, s) / "config.json").is_file()]
    else:
        result = train_hyperdas(target, pairs, hyper, train, out_dir=folder, progress=progress)
    train_seconds = time.perf_counter() - started
    done = {}
    timings = {
        "train_seconds": result.seconds,  # this process's, from the step it resumed from
        "train_wall_seconds": None if score_only else train_seconds,
        "resumed_from": result.resumed_from,
        "train_seconds_all_runs": result.seconds_all_runs,  # None: resumed from a run that did not count them
    }
    best_step = result.best_step
    if saved:
        done = {r["steps"]: r for r in saved["rungs"]}
        if score_only:  # a scoring pass never erases what training recorded
            timings, best_step = saved["timings"], saved["best_step"]
    val_at = {h["step"]: h.get("val") for h in result.history}
    for step in sorted(rungs):
        if step in done and (not score_val or "val_scored" in done[step]):
            continue
        model, _ = load_hyperdas(snapshot_folder(folder, step), target, expect=hyper, pairs=pairs)
        if step in done:
            started = time.perf_counter()
            done[step]["val_scored"] = val_scored(target, model, pairs)
            done[step]["val_score_seconds"] = time.perf_counter() - started
        else:
            n_conflict = params.get("n_conflict", CONFLICT_PAIRS)
            done[step] = rung_record(
                target, model, pairs, step, val_at.get(step), train.batch_size, n_conflict, score_val
            )
        write_json(
            out,
            {
                "model": target.name,
                "config": configs,
                "overrides": variant,
                "seed": train.seed,
                "steps_run": len(result.history),
                "best_step": best_step,
                "rungs": [done[s] for s in sorted(done)],
                "timings": timings,
                "provenance": result.provenance,
            },
        )
        write_summary(root)
        if progress:
            print(f"rung {step}: scored ({done[step]['score_seconds']:.0f} s) -> {out}")
    return out


def _so_far(folder: Path, target, pairs):
    """What a stopped ladder run has done: its training log, no training time (it was not timed to
    the end)."""
    import json
    from types import SimpleNamespace

    from hyperdas.hyper.training import LOG
    from hyperdas.target.provenance import provenance

    log = folder / LOG
    if not log.is_file():
        raise FileNotFoundError(f"no training log in {folder}: start the ladder without --score-only first")
    history = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    return SimpleNamespace(
        history=history, best_step=None, seconds=None, resumed_from=None, seconds_all_runs=None,
        provenance=provenance(target, pairs),
    )  # fmt: skip


def _changed(saved: dict, current: dict) -> list[str]:
    """The settings (part.field: saved -> current) in which a saved run's configs differ from these; a
    field the saved file lacks was added to the package later, at its old behaviour, and is no change."""
    return [
        f"{part}.{field}: {value!r} -> {current.get(part, {}).get(field, '(none)')!r}"
        for part, fields in saved.items()
        for field, value in fields.items()
        if current.get(part, {}).get(field, "(none)") != value
    ]


def _plain(configs: dict) -> dict:
    """The configs as a results file holds them (JSON types)."""
    import json

    from hyperdas.core.results import _jsonable

    return json.loads(json.dumps(configs, default=_jsonable))
