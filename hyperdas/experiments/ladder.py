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
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

from hyperdas.core.intervals import interval
from hyperdas.core.results import read_json, results_dir, write_json

LADDER = "ladder"


def ladder_file(root: str | Path, model_name: str, steps: int, seed: int) -> Path:
    return results_dir(root, model_name) / LADDER / f"hyperdas_steps{steps}_seed{seed}.json"


def rung_record(target, model, pairs, step: int, val: dict | None, batch_size: int, n_conflict: int) -> dict:
    """One rung: val at `step` (from training), test records of every mode and the faithfulness block."""
    from hyperdas.experiments.faithfulness import faithfulness
    from hyperdas.experiments.hyperdas_run import faithful_fields, score_test_pairs
    from hyperdas.hyper.training import encoded_pairs

    started = time.perf_counter()
    test = encoded_pairs(target, pairs["test"], model.config.instruction)
    outcomes: dict = {}
    records, _ = score_test_pairs(target, model, test, model.config.layer, outcomes=outcomes)
    faithful = faithfulness(target, model, pairs, n_conflict=n_conflict)
    return {
        "steps": step,
        "examples_seen": step * batch_size,
        "val": val,
        "records": records,
        "outcomes": outcomes,
        **faithful_fields(faithful),
        "score_seconds": time.perf_counter() - started,
    }


def run_ladder(params: dict, steps: int, rungs: list[int], root: str | Path, progress: bool = True) -> Path:
    """Train (or resume) the ladder's run and score every rung not yet in its file; returns the file."""
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
    out = ladder_file(root, target.name, steps, train.seed)
    folder = results_dir(root, target.name) / "checkpoints" / f"hyperdas-ladder-steps{steps}-seed{train.seed}"
    started = time.perf_counter()
    result = train_hyperdas(target, pairs, hyper, train, out_dir=folder, progress=progress)
    train_seconds = time.perf_counter() - started
    configs = {"model": model_config, "hyperdas": hyper, "train": train}
    done = {}
    if out.is_file():
        saved = read_json(out)
        if saved["config"] == _plain(configs):
            done = {r["steps"]: r for r in saved["rungs"]}
    val_at = {h["step"]: h.get("val") for h in result.history}
    for step in sorted(rungs):
        if step not in done:
            model, _ = load_hyperdas(snapshot_folder(folder, step), target, expect=hyper, pairs=pairs)
            n_conflict = params.get("n_conflict", CONFLICT_PAIRS)
            done[step] = rung_record(target, model, pairs, step, val_at.get(step), train.batch_size, n_conflict)
        write_json(
            out,
            {
                "model": target.name,
                "config": configs,
                "seed": train.seed,
                "steps_run": len(result.history),
                "best_step": result.best_step,
                "rungs": [done[s] for s in sorted(done)],
                "timings": {"train_seconds": result.seconds, "train_wall_seconds": train_seconds},
                "provenance": result.provenance,
            },
        )
        write_summary(root)
        if progress:
            print(f"rung {step}: scored ({done[step]['score_seconds']:.0f} s) -> {out}")
    return out


def _plain(configs: dict) -> dict:
    """The configs as a results file holds them (JSON types)."""
    import json

    from hyperdas.core.results import _jsonable

    return json.loads(json.dumps(configs, default=_jsonable))


# --- the summary across models: results/ladder.json ------------------------------------------------

SUMMARY = "ladder.json"
METRICS = ("cause", "iso", "disentangle")


def _mean_sd(values: list[float]) -> dict:
    """Mean and sample standard deviation (None for one value) of `values`."""
    return {
        "mean": statistics.fmean(values),
        "sd": statistics.stdev(values) if len(values) > 1 else None,
        "n": len(values),
    }


def _overall(records: list[dict]) -> dict:
    """Cause / Iso / Disentangle as the main table takes them: the mean over attributes."""
    return {m: sum(r[m] for r in records) / len(records) for m in METRICS}


def _machine(record: dict) -> str:
    env = record.get("environment", {})
    return env.get("cuda_device") or f"{env.get('cpu', '?')}, {env.get('cpu_count', '?')} cores"


def _ceilings(model_dir: Path, layer: int) -> dict | None:
    """Val conflict shares that patching reaches at `layer` (`patch_layers.json`): the full residual
    at the last entity token, and at every entity token."""
    path = model_dir / "patch_layers.json"
    if not path.is_file():
        return None
    saved = read_json(path)
    found = {kind: by_layer.get(str(layer)) for kind, by_layer in saved.get("follows_activations_by_layer", {}).items()}
    return {**found, "attribute": saved.get("attribute"), "split": "val"} if any(found.values()) else None


def hyperdas_rows(files: list[Path]) -> list[dict]:
    """One row per (model, layer, total steps, rung, mode) over the seeds of the ladder `files`."""
    runs: dict[tuple, list[dict]] = {}
    for path in files:
        saved = read_json(path)
        train = saved["config"]["train"]
        key = (saved["model"], saved["config"]["hyperdas"]["layer"], train["steps"])
        runs.setdefault(key, []).append(saved)
    rows = []
    for (model, layer, total), seeds in sorted(runs.items()):
        steps = sorted({r["steps"] for run in seeds for r in run["rungs"]})
        for step in steps:
            rungs = [(run, r) for run in seeds for r in run["rungs"] if r["steps"] == step]
            for mode in ("one_to_one", "one_to_many", "soft"):
                scored = [_overall([x for x in r["records"] if x["mode"] == mode]) for _, r in rungs]
                faithful = [r["faithfulness"] for _, r in rungs]
                rows.append(
                    {
                        "model": model,
                        "layer": layer,
                        "method": "hyperdas",
                        "mode": mode,
                        "steps": step,
                        "run_steps": total,
                        "examples_seen": rungs[0][1]["examples_seen"],
                        "seeds": [run["seed"] for run, _ in rungs],
                        **{m: _mean_sd([s[m] for s in scored]) for m in METRICS},
                        "val_disentangle": _mean_sd([r["val"][mode]["disentangle"] for _, r in rungs if r["val"]]),
                        "follows_activations": _mean_sd([f["conflict"][mode]["follows_activations"] for f in faithful]),
                        "follows_instruction": _mean_sd([f["conflict"][mode]["follows_instruction"] for f in faithful]),
                        **{
                            split: {m: _mean_sd([f[split][mode][m] for f in faithful]) for m in METRICS}
                            for split in ("query_blind", "test_entity")
                            if all(split in f for f in faithful)
                        },
                        "train_seconds_per_step": _mean_sd(
                            [run["timings"]["train_seconds"] / run["steps_run"] for run, _ in rungs]
                        ),
                        **_intervals([r for _, r in rungs], mode),
                        "machine": _machine(rungs[0][0]),
                    }
                )
    return rows


def _intervals(rungs: list[dict], mode: str) -> dict:
    """Bootstrap intervals (`hyperdas.core.intervals`) of test Disentangle and of the conflict share
    following the activations, over the rungs (seeds) that kept their per-pair outcomes."""
    kept = [r for r in rungs if mode in r.get("outcomes", {})]
    if not kept:
        return {}
    out = {"disentangle_interval": interval([r["outcomes"][mode] for r in kept], keys=kept[0]["outcomes"]["keys"])}
    shares = [r["faithfulness"]["conflict"][mode].get("outcomes") for r in kept]
    if all(shares):
        out["follows_activations_interval"] = interval(shares, symbol="a")
    return out


def baseline_rows(model_dir: Path) -> list[dict]:
    """DAS and MDAS of `baselines.json` at its main layer, early-stopped on val: one row per method,
    examples seen summed over the attributes (one model each), mean ± sd over seeds."""
    path = model_dir / "baselines.json"
    if not path.is_file():
        return []
    saved = read_json(path)
    layer = saved.get("main_layer")
    rows = []
    for method in ("das", "mdas"):
        records = [r for r in saved["records"] if r["method"] == method and r["layer"] == layer]
        by_seed: dict[int, list[dict]] = {}
        for r in records:
            by_seed.setdefault(r.get("seed", 0), []).append(r)
        if not by_seed:
            continue
        overall = [_overall(rs) for rs in by_seed.values()]
        seen = [sum(r["best_step"] * r["config"]["batch_size"] for r in rs) for rs in by_seed.values()]
        conflict = [r["conflict"] for r in records if r.get("conflict")]
        blind = [r["query_blind"] for r in records if r.get("query_blind")]
        rows.append(
            {
                "model": saved["model"],
                "layer": layer,
                "method": method,
                "mode": None,
                "steps": _mean_sd([sum(r["best_step"] for r in rs) for rs in by_seed.values()])["mean"],
                "early_stopped": True,
                "examples_seen": _mean_sd(seen)["mean"],
                "seeds": sorted(by_seed),
                **{m: _mean_sd([o[m] for o in overall]) for m in METRICS},
                "follows_activations": _mean_sd([c["follows_activations"] for c in conflict]) if conflict else None,
                "follows_instruction": _mean_sd([c["follows_instruction"] for c in conflict]) if conflict else None,
                **({"query_blind": {m: _mean_sd([b[m] for b in blind]) for m in METRICS}} if blind else {}),
                "machine": _machine(saved),
            }
        )
    return rows


def collect(root: str | Path) -> dict:
    """Every model's ladder rungs and early-stopped baselines under the results `root`, with the
    patching ceilings at each model's layer."""
    root = Path(root)
    rows, sources = [], []
    for model_dir in sorted(p for p in root.iterdir() if (p / LADDER).is_dir()):
        files = sorted((model_dir / LADDER).glob("hyperdas_steps*_seed*.json"))
        found = hyperdas_rows(files)
        if not found:
            continue
        base = baseline_rows(model_dir)
        for row in found + base:
            row["ceilings"] = _ceilings(model_dir, row["layer"])
        rows += found + base
        sources += [str(p.relative_to(root)) for p in files]
        if base:
            sources.append(str((model_dir / "baselines.json").relative_to(root)))
    return {"rows": rows, "sources": sources}


def write_summary(root: str | Path) -> Path:
    """`<root>/ladder.json` from every ladder file under `root` (rewritten whole each time)."""
    import json

    from hyperdas.core.files import write_text

    return write_text(Path(root) / SUMMARY, json.dumps(collect(root), indent=1) + "\n")
