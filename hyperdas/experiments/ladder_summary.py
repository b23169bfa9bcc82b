"""`results/ladder.json`: every model's ladder rungs and baselines under a results root, with the
patching ceilings, bootstrap intervals and paired comparisons (HyperDAS minus each baseline; each
longer budget minus the default one; each piloted option minus the plain run), rewritten whole by
`write_summary` from the files that `hyperdas.experiments.ladder` and `ladder_baselines` write.
"""

from __future__ import annotations

import statistics
from pathlib import Path

from hyperdas.core.intervals import interval, placed
from hyperdas.core.results import machine, read_json

LADDER, PILOTS = "ladder", "pilots"  # the folders of ladder runs and of option pilots, per model

SUMMARY = "ladder.json"
METRICS = ("cause", "iso", "disentangle")


def _seconds_per_step(run: dict) -> float | None:
    """A run's training seconds per step, store building included. A run file that predates
    `resumed_from` may have been resumed, its seconds then covering only the last part: None."""
    timings = run["timings"]
    if timings.get("train_seconds_all_runs"):
        return timings["train_seconds_all_runs"] / run["steps_run"]
    if timings.get("resumed_from") is None or not timings.get("train_seconds"):
        return None
    trained = run["steps_run"] - timings["resumed_from"]
    return timings["train_seconds"] / trained if trained > 0 else None


def _per_step(rungs) -> list[float]:
    return [s for run, _ in rungs if (s := _seconds_per_step(run)) is not None]


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
    """One row per (model, layer, total steps, rung, mode) over the seeds of the ladder `files`; a
    row's `_outcomes` (per-pair outcomes of its seeds, for `comparisons`) is dropped before writing."""
    import json

    runs: dict[tuple, list[dict]] = {}
    for path in files:
        saved = read_json(path)
        train = saved["config"]["train"]
        variant = json.dumps(saved.get("overrides") or {}, sort_keys=True)
        key = (saved["model"], saved["config"]["hyperdas"]["layer"], train["steps"], variant)
        runs.setdefault(key, []).append(saved)
    rows = []
    for (model, layer, total, variant), seeds in sorted(runs.items()):
        steps = sorted({r["steps"] for run in seeds for r in run["rungs"]})
        for step in steps:
            rungs = [(run, r) for run in seeds for r in run["rungs"] if r["steps"] == step]
            for mode in ("one_to_one", "one_to_many", "soft"):
                scored = [_overall([x for x in r["records"] if x["mode"] == mode]) for _, r in rungs]
                faithful = [r["faithfulness"] for _, r in rungs]
                kept = [r for _, r in rungs if mode in r.get("outcomes", {})]
                on_val = [r["val_scored"] for _, r in rungs if "val_scored" in r]
                outcomes = {
                    "keys": kept[0]["outcomes"]["keys"] if kept else None,
                    "pairs": rungs[0][0].get("provenance", {}).get("pairs"),
                    "hits": [r["outcomes"][mode] for r in kept],
                    "conflict": [r["faithfulness"]["conflict"][mode].get("outcomes") for r in kept],
                    "val_keys": on_val[0]["outcomes"]["keys"] if on_val else None,
                    "val_hits": [v["outcomes"][mode] for v in on_val],
                }
                rows.append(
                    {
                        "model": model,
                        "layer": layer,
                        "method": "hyperdas",
                        "overrides": json.loads(variant),
                        "mode": mode,
                        "steps": step,
                        "run_steps": total,
                        "examples_seen": rungs[0][1]["examples_seen"],
                        "seeds": [run["seed"] for run, _ in rungs],
                        **{m: _mean_sd([s[m] for s in scored]) for m in METRICS},
                        "val_disentangle": _mean_sd([r["val"][mode]["disentangle"] for _, r in rungs if r["val"]]),
                        **(
                            {"val_scored": {m: _mean_sd([_overall(_of(v, mode))[m] for v in on_val]) for m in METRICS}}
                            if on_val
                            else {}
                        ),
                        "follows_activations": _mean_sd([f["conflict"][mode]["follows_activations"] for f in faithful]),
                        "follows_instruction": _mean_sd([f["conflict"][mode]["follows_instruction"] for f in faithful]),
                        **{
                            split: {m: _mean_sd([f[split][mode][m] for f in faithful]) for m in METRICS}
                            for split in ("query_blind", "test_entity")
                            if all(split in f for f in faithful)
                        },
                        "train_seconds_per_step": _mean_sd(per_step) if (per_step := _per_step(rungs)) else None,
                        **_intervals(outcomes),
                        "machine": machine(rungs[0][0]),
                        "_outcomes": outcomes,
                    }
                )
    return rows


def _of(scored: dict, mode: str) -> list[dict]:
    return [x for x in scored["records"] if x["mode"] == mode]


def _intervals(outcomes: dict) -> dict:
    """Bootstrap intervals (`hyperdas.core.intervals`) of test Disentangle and of the conflict share
    following the activations, over the seeds that kept their per-pair outcomes."""
    out = {}
    if outcomes["keys"] and outcomes["hits"]:
        out["disentangle_interval"] = interval(outcomes["hits"], keys=outcomes["keys"])
    if outcomes["conflict"] and all(outcomes["conflict"]):
        out["follows_activations_interval"] = interval(outcomes["conflict"], symbol="a")
    if outcomes.get("val_keys") and outcomes.get("val_hits"):
        out["val_disentangle_interval"] = interval(outcomes["val_hits"], keys=outcomes["val_keys"])
    return out


def _baseline_files(model_dir: Path) -> dict[tuple, list[dict]]:
    """The ladder's baseline runs (`hyperdas.experiments.ladder_baselines`) by (early stopped,
    budget); else notebook 02's `baselines.json` at its main layer, early-stopped."""
    found: dict[tuple, list[dict]] = {}
    for path in sorted((model_dir / LADDER).glob("baselines_*_seed*.json")):
        saved = read_json(path)
        found.setdefault((saved["early_stopped"], saved["examples_budget"]), []).append(saved)
    if found or not (model_dir / "baselines.json").is_file():
        return found
    saved = read_json(model_dir / "baselines.json")
    layer = saved.get("main_layer")
    records = [r for r in saved["records"] if r["method"] in ("das", "mdas") and r["layer"] == layer]
    return {(True, None): [{**saved, "layer": layer, "records": records}]}


def baseline_rows(model_dir: Path, keys: dict | None = None) -> list[dict]:
    """DAS and MDAS beside the ladder: one row per method and budget (early-stopped on val, or a
    budget without early stopping), examples seen summed over the attributes (one model each),
    mean ± sd over seeds; intervals where the runs kept per-pair outcomes and `keys` (the test rows'
    keys, from a HyperDAS rung on the same pairs) are given."""
    rows = []
    for (early, budget), runs in sorted(
        _baseline_files(model_dir).items(), key=lambda kv: (not kv[0][0], kv[0][1] or 0)
    ):
        for method in ("das", "mdas"):
            by_seed: dict[int, list[dict]] = {}
            for run in runs:
                for r in run["records"]:
                    if r["method"] == method:
                        by_seed.setdefault(r.get("seed", run.get("seed", 0)), []).append(r)
            if not by_seed:
                continue
            records = [r for rs in by_seed.values() for r in rs]
            overall = [_overall(rs) for rs in by_seed.values()]
            seen = [sum(r["best_step"] * r["config"]["batch_size"] for r in rs) for rs in by_seed.values()]
            conflict = [r["conflict"] for r in records if r.get("conflict")]
            blind = [r["query_blind"] for r in records if r.get("query_blind")]
            outcomes = _baseline_outcomes(runs[0], by_seed, keys)
            rows.append(
                {
                    "model": runs[0]["model"],
                    "layer": runs[0]["layer"],
                    "method": method,
                    "mode": None,
                    "steps": _mean_sd([sum(r["best_step"] for r in rs) for rs in by_seed.values()])["mean"],
                    "early_stopped": early,
                    "examples_budget": budget,
                    "examples_seen": _mean_sd(seen)["mean"],
                    "seeds": sorted(by_seed),
                    **{m: _mean_sd([o[m] for o in overall]) for m in METRICS},
                    "follows_activations": _mean_sd([c["follows_activations"] for c in conflict]) if conflict else None,
                    "follows_instruction": _mean_sd([c["follows_instruction"] for c in conflict]) if conflict else None,
                    **({"query_blind": {m: _mean_sd([b[m] for b in blind]) for m in METRICS}} if blind else {}),
                    **(_intervals(outcomes) if outcomes else {}),
                    "machine": machine(runs[0]),
                    "_outcomes": outcomes,
                }
            )
    return rows


def _baseline_outcomes(run: dict, by_seed: dict[int, list[dict]], keys: dict | None) -> dict | None:
    """Per seed, the outcomes of the attributes' models placed into one string over the test split
    (and over the conflict set), when every record kept them."""
    records = [r for rs in by_seed.values() for r in rs]
    if keys is None or "test_rows" not in run or not all("outcomes" in r for r in records):
        return None

    def joined(rs: list[dict], part: str, n: int) -> str | None:
        if part == "hits":
            return placed([(r["outcomes"]["rows"], r["outcomes"]["hits"]) for r in rs], n)
        if not all(r.get("conflict", {}).get("rows") is not None for r in rs):
            return None
        return placed([(r["conflict"]["rows"], r["conflict"]["outcomes"]) for r in rs], n)

    conflict = [joined(rs, "conflict", run["conflict_pairs"]) for rs in by_seed.values()]
    return {
        "keys": keys,
        "pairs": run.get("provenance", {}).get("pairs"),
        "hits": [joined(rs, "hits", run["test_rows"]) for rs in by_seed.values()],
        "conflict": conflict if all(conflict) else [],
    }


def comparisons(rows: list[dict]) -> list[dict]:
    """Paired differences, HyperDAS (one-to-one and soft, every rung) minus each baseline row of the
    same model and layer, on the same test pairs and conflict pairs: Disentangle and the share that
    follows the activations, each with its bootstrap interval and whether it excludes zero."""
    out = []
    for h in rows:
        mine = h.get("_outcomes") or {}
        if h["method"] != "hyperdas" or h["mode"] not in ("one_to_one", "soft") or not mine.get("hits"):
            continue
        for b in rows:
            theirs = b.get("_outcomes") or {}
            same = (b["model"], b["layer"]) == (h["model"], h["layer"]) and theirs.get("pairs") == mine["pairs"]
            if b["method"] == "hyperdas" or not same or not theirs.get("hits"):
                continue
            found = {
                "model": h["model"],
                "layer": h["layer"],
                "hyperdas": {"mode": h["mode"], "steps": h["steps"], "run_steps": h["run_steps"], "seeds": h["seeds"]},
                "baseline": {k: b[k] for k in ("method", "early_stopped", "examples_budget", "seeds")},
                "disentangle_difference": interval(mine["hits"], theirs["hits"], keys=mine["keys"]),
            }
            if mine["conflict"] and theirs["conflict"]:
                found["follows_activations_difference"] = interval(mine["conflict"], theirs["conflict"], symbol="a")
            out.append(found)
    return out


def _paired(mine: dict, theirs: dict) -> dict:
    """Paired differences of two HyperDAS rows' outcomes (`hyperdas_rows`' `_outcomes`): val and test
    Disentangle and the share following the activations, each with its interval; `keep`: the first
    wins on val beyond its interval and loses no faithfulness beyond its interval."""
    out = {}
    if mine["val_hits"] and theirs["val_hits"]:
        out["val_difference"] = interval(mine["val_hits"], theirs["val_hits"], keys=mine["val_keys"])
    if mine["hits"] and theirs["hits"]:
        out["test_difference"] = interval(mine["hits"], theirs["hits"], keys=mine["keys"])
    if mine["conflict"] and theirs["conflict"] and all(mine["conflict"] + theirs["conflict"]):
        out["follows_activations_difference"] = interval(mine["conflict"], theirs["conflict"], symbol="a")
    val, follows = out.get("val_difference"), out.get("follows_activations_difference")
    out["keep"] = bool(val and val["low"] > 0 and not (follows and follows["high"] < 0))
    return out


PAIRED = ("model", "layer", "run_steps", "mode")


def pilot_comparisons(pilots: list[dict], plain: list[dict]) -> list[dict]:
    """Each option's run minus the plain run of the same model, layer, budget and rung, per mode
    (one-to-one and soft), on the same pairs (`_paired`: val decides)."""
    out = []
    for v in pilots:
        if not v["overrides"] or v["mode"] not in ("one_to_one", "soft"):
            continue
        found = [
            p
            for p in plain
            if not p["overrides"]
            and all(p[k] == v[k] for k in (*PAIRED, "steps"))
            and p["_outcomes"]["pairs"] == v["_outcomes"]["pairs"]
        ]
        if found:
            head = {k: v[k] for k in (*PAIRED, "overrides", "steps", "seeds")}
            out.append({**head, "plain_seeds": found[0]["seeds"], **_paired(v["_outcomes"], found[0]["_outcomes"])})
    return out


REFERENCE_STEPS = 600  # notebook 03's hyper_steps (tested): the budget a longer one must beat on val


def budget_comparisons(rows: list[dict], reference: int = REFERENCE_STEPS) -> list[dict]:
    """Each rung of a ladder run minus its rung at the `reference` budget, per mode (one-to-one and
    soft), where both kept val outcomes (`python -m hyperdas.ladder --score-only --val`): whether
    training longer wins on val (`_paired`)."""
    out = []
    for r in rows:
        if r["method"] != "hyperdas" or r["mode"] not in ("one_to_one", "soft") or r["steps"] == reference:
            continue
        found = [b for b in rows if b["method"] == "hyperdas" and b["steps"] == reference and b["overrides"] == {}]
        found = [b for b in found if all(b[k] == r[k] for k in PAIRED) and b["seeds"] == r["seeds"]]
        if found and r["_outcomes"]["val_hits"] and found[0]["_outcomes"]["val_hits"]:
            head = {k: r[k] for k in (*PAIRED, "steps", "seeds")}
            out.append({**head, "reference_steps": reference, **_paired(r["_outcomes"], found[0]["_outcomes"])})
    return out


def collect(root: str | Path) -> dict:
    """Every model's ladder rungs and baselines under the results `root`, with the patching ceilings
    at each model's layer and the paired comparisons; the pilots of single options (`PILOTS`, and
    any ladder run with overrides) apart, with their comparisons to the plain run."""
    root = Path(root)
    rows, sources, pilots, plain, pilot_sources = [], [], [], [], []
    for model_dir in sorted(p for p in root.iterdir() if (p / PILOTS).is_dir()):
        files = sorted((model_dir / PILOTS).glob("hyperdas_steps*_seed*.json"))
        pilots += hyperdas_rows(files)
        pilot_sources += [str(p.relative_to(root)) for p in files]
    for model_dir in sorted(p for p in root.iterdir() if (p / LADDER).is_dir()):
        files = sorted((model_dir / LADDER).glob("hyperdas_steps*_seed*.json"))
        found = hyperdas_rows(files)
        pilots += [r for r in found if r["overrides"]]
        found = [r for r in found if not r["overrides"]]
        plain += found
        if not found:
            continue
        keys = next((r["_outcomes"]["keys"] for r in found if r["_outcomes"]["keys"]), None)
        base = baseline_rows(model_dir, keys)
        for row in found + base:
            row["ceilings"] = _ceilings(model_dir, row["layer"])
        rows += found + base
        sources += [str(p.relative_to(root)) for p in files]
        ladder_baselines = sorted((model_dir / LADDER).glob("baselines_*_seed*.json"))
        if ladder_baselines:
            sources += [str(p.relative_to(root)) for p in ladder_baselines]
        elif base:
            sources.append(str((model_dir / "baselines.json").relative_to(root)))
    compared = comparisons(rows)
    budgets = budget_comparisons(rows)
    piloted = pilot_comparisons(pilots, pilots + plain)
    for row in rows + pilots:
        row.pop("_outcomes", None)
    return {
        "rows": rows,
        "comparisons": compared,
        **({"budgets": budgets} if budgets else {}),
        **({"pilots": {"rows": pilots, "comparisons": piloted, "sources": pilot_sources}} if pilots else {}),
        "sources": sources,
    }


def write_summary(root: str | Path) -> Path:
    """`<root>/ladder.json` from every ladder file under `root` (rewritten whole each time)."""
    import json

    from hyperdas.core.files import write_text

    return write_text(Path(root) / SUMMARY, json.dumps(collect(root), indent=1) + "\n")
