"""The main table (Cause / Iso / Disentangle per domain, attribute and method, with faithfulness),
its Markdown / LaTeX files, the speed and variants tables and the main bar figure."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd

from hyperdas.core.metrics import faithfulness_columns
from hyperdas.experiments.figures import style as look
from hyperdas.experiments.figures.results import (
    METRICS,
    ORDER,
    PAPER,
    Missing,
    Results,
    SchemaError,
    faithfulness_blocks,
)
from hyperdas.hyper.legacy import MODEL_BEFORE_FIELDS, TRAIN_BEFORE_FIELDS


def main_table(results: Results) -> pd.DataFrame:
    """Rows (domain, attribute, method); columns Cause / Iso / Disentangle on the test pairs:
    HyperDAS in each inference mode, MDAS, DAS and the full patch at HyperDAS's layer. Over several
    seeds each value is the seeds' mean, with its standard deviation in `<metric>_sd` (a mean row:
    over the seeds' attribute means) and `n_seeds`."""
    hyper_file = results.json("hyperdas.json")
    hyper = hyper_file["records"]
    layer = hyper[0]["layer"]
    rows = [{"seed": hyper_file.get("seed", 0), **r, "method": look.method_name(r["mode"])} for r in hyper]
    layers = sorted({r["layer"] for r in hyper})
    if len(layers) > 1:
        raise SchemaError(f"hyperdas.json mixes runs at layers {layers}: one run per file (rerun notebook 03)")
    try:
        baselines = results.records("baselines.json")
    except Missing:
        baselines = []
    if baselines and not any(r["layer"] == layer for r in baselines):
        raise SchemaError(
            f"baselines.json holds layers {sorted({r['layer'] for r in baselines})}, none at HyperDAS's layer {layer}: "
            f"rerun notebook 02 with layer={layer}, or notebook 03 at the baselines' layer"
        )
    rows += [{**r, "method": look.method_name(r["method"])} for r in baselines if r["layer"] == layer]
    frame = pd.DataFrame(rows)[["domain", "attribute", "method", "seed", *METRICS]]
    per_seed = frame.groupby(["domain", "method", "seed"], as_index=False)[list(METRICS)].mean()
    parts = [_over_seeds(frame, ["domain", "attribute", "method"]), _over_seeds(per_seed, ["domain", "method"])]
    parts[1]["attribute"] = "mean"
    table = pd.concat(parts).set_index(["domain", "attribute", "method"]).sort_index()
    several = table["n_seeds"].max() > 1
    if not several:
        table = table.drop(columns=[c for c in table.columns if c.endswith("_sd")])
    _baseline_faithfulness(table, rows)
    faithful = hyper_file.get("faithfulness")
    if faithful:  # every HyperDAS mean carries its faithfulness (hyperdas.experiments.faithfulness)
        for mode in faithful["conflict"]:
            method = look.method_name(mode)
            for domain in table.index.get_level_values("domain").unique():
                blocks = faithfulness_blocks(hyper_file, domain)
                columns = pd.DataFrame([faithfulness_columns(b, mode) for b in blocks])
                for column in columns:
                    table.loc[(domain, "mean", method), column] = columns[column].mean()
                    if len(blocks) > 1 and column.startswith("follows_"):
                        table.loc[(domain, "mean", method), f"{column}_sd"] = columns[column].std()
    return table


def seeds_caption(table: pd.DataFrame) -> str:
    """How many seeds stand behind the table's means, naming each method that ran fewer (a caption
    "over 3 seeds" above a patching row computed once would overstate it)."""
    per_method = table["n_seeds"].groupby(level="method").max().astype(int)
    most = int(per_method.max())
    if most == 1:
        return "one seed"
    fewer = [f"{m}: {n} seed{'s' if n > 1 else ', no sd'}" for m, n in per_method.items() if n < most]
    return f"mean ± sd over {most} seeds" + (f" ({'; '.join(fewer)})" if fewer else "")


def _over_seeds(frame: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Mean and sample standard deviation of METRICS over the seeds of each `keys` group."""
    grouped = frame.groupby(keys)
    out = grouped[list(METRICS)].mean()
    sd = grouped[list(METRICS)].std().rename(columns={m: f"{m}_sd" for m in METRICS})
    return out.join(sd).assign(n_seeds=grouped["seed"].nunique()).reset_index()


def _baseline_faithfulness(table: pd.DataFrame, rows: list[dict]) -> None:
    """The baselines' query-blind control and conflict outcome (notebook 02), per method: query-blind
    scores as the mean over attributes and seeds; conflict shares pooled over the attributes' pairs
    (as HyperDAS's are), then the mean (and sd) over seeds."""
    baselines = [r for r in rows if r["method"] in ("DAS", "MDAS", "full patch")]
    for (domain, method), found in _groups(baselines, ("domain", "method")).items():
        blind = [r["query_blind"] for r in found if r.get("query_blind")]
        for m in METRICS if blind else ():
            values = [b[m] for b in blind if b[m] is not None]
            table.loc[(domain, "mean", method), f"query_blind_{m}"] = sum(values) / len(values) if values else None
        per_seed = _groups([r for r in found if r.get("conflict")], ("seed",)).values()
        for outcome in ("follows_activations", "follows_instruction") if per_seed else ():
            shares = pd.Series(
                [
                    sum(r["conflict"][outcome] * r["conflict"]["n"] for r in s) / sum(r["conflict"]["n"] for r in s)
                    for s in per_seed
                ]
            )
            table.loc[(domain, "mean", method), outcome] = shares.mean()
            if len(shares) > 1:
                table.loc[(domain, "mean", method), f"{outcome}_sd"] = shares.std()


def _groups(rows: list[dict], keys: tuple[str, ...]) -> dict[tuple, list[dict]]:
    out: dict[tuple, list[dict]] = {}
    for r in rows:
        out.setdefault(tuple(r.get(k, 0) for k in keys), []).append(r)
    return out


def reference_table(results: Results) -> pd.DataFrame:
    ref = results.reference()
    rows = [
        {"domain": e["domain"], "method": e["method"], **{m: e.get(m) for m in METRICS}, "source": e["source"]}
        for e in ref.get("main", [])
    ]
    if not rows:
        raise Missing("results/reference/llama3-8b.json is missing or holds no main-table entries")
    return pd.DataFrame(rows)


def _markdown(frame: pd.DataFrame) -> str:
    """A Markdown table with empty cells where a value is missing (not "nan")."""
    return frame.astype(object).where(frame.notna(), None).to_markdown(index=False, missingval="") + "\n"


def write_tables(results: Results, out: Path) -> list[Path]:
    """main_table.md / .tex in the paper's layout (`hyperdas.experiments.tables`) with the faithfulness
    table; with several domains the per-domain comparison (`domains.md`); the speed and variants tables."""
    from hyperdas.experiments import tables

    table = main_table(results)
    try:
        ref = results.reference()
        reference = ref.get("main", []) + ref.get("mdas_per_attribute", [])
    except Missing:
        reference = []
    rows = tables.paper_layout(table, reference)
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / "main_table.md", out / "main_table.tex"]
    what = f"{results.model_name()}, test pairs, {seeds_caption(table)}"
    paths[0].write_text(
        f"Ours ({what}) and the paper's rows (Llama3-8B; its HyperDAS is the soft mode)\n\n"
        + tables.markdown(rows)
        + "\nFaithfulness (conflict pairs, held-out entities, query-blind split; mean rows)\n\n"
        + tables.faithfulness_markdown(tables.faithfulness_rows(table))
    )
    paths[1].write_text(tables.latex(rows, f"Cause / Iso / Disentangle: ours ({what}) and the paper's ({PAPER})."))
    if table.index.get_level_values("domain").nunique() > 1:
        from hyperdas.experiments.figures.domains import domains_text

        paths.append(out / "domains.md")
        paths[-1].write_text(domains_text(results))
    for name, make in (("speed_table", speed_table), ("hyperdas_variants", variants_table)):
        try:
            frame = make(results).round(3)
        except Missing:
            continue
        paths.append(out / f"{name}.md")
        paths[-1].write_text(_markdown(frame))
    return paths


NOT_VARIANTS = ("hyperdas_layers.json",)  # records of notebook 03 per layer, not one run


def variants_table(results: Results) -> pd.DataFrame:
    """One row per HyperDAS run file and inference mode: `hyperdas.json` (notebook 03's latest run)
    and every `hyperdas_<variant>.json` kept beside it (the same notebook with other settings), with
    how the hypernetwork read the base (`base_read`), its instruction, layer, k, training selection
    and selection-entropy weight (a file from before a field existed: `hyperdas.hyper.legacy`), the
    test scores (mean over attributes, and over seeds for a file of several) and the faithfulness
    columns (their mean over the same seeds)."""
    rows = []
    # a profile's own folder also lists the runs kept in the model's shared folder (named with it)
    folders = [results.folder] + ([results.shared] if results.apart() else [])
    for path in [p for folder in folders for p in sorted(folder.glob("hyperdas*.json"))]:
        if path.name in NOT_VARIANTS:
            continue
        own = path.parent == results.folder
        data = results.json(path.name, None if own else path.parent)
        if "records" not in data:
            raise SchemaError(f"{path} lacks ['records']: rerun the notebook that writes it")
        config = {**MODEL_BEFORE_FIELDS, **data.get("config", {}).get("hyperdas", {})}
        train = {**TRAIN_BEFORE_FIELDS, **data.get("config", {}).get("train", {})}
        blocks = list(data.get("faithfulness_by_seed", {}).values()) or [data.get("faithfulness")]
        records = pd.DataFrame(data["records"])
        for mode, part in records.groupby("mode", sort=False):
            faithful = pd.DataFrame([faithfulness_columns(b, mode) for b in blocks if b]).mean().to_dict()
            rows.append(
                {
                    "file": path.name if own else f"results/{path.parent.name}/{path.name}",
                    "base_read": config["base_read"],
                    "instruction": config.get("instruction"),
                    "layer": config.get("layer"),
                    "k": config.get("k"),
                    "trained": train["train_selection"].replace("_", "-"),
                    "entropy": train["selection_entropy"],
                    "mode": mode.replace("_", "-"),
                    "n_seeds": part["seed"].nunique() if "seed" in part else 1,
                    **part[list(METRICS)].mean().to_dict(),
                    **faithful,
                }
            )
    if not rows:
        raise Missing(f"no HyperDAS results file (hyperdas*.json) in {results.folder}")
    return pd.DataFrame(rows)


def speed_table(results: Results) -> pd.DataFrame:
    """The speed measures of `benchmarks.json` (benchmarks/*.py) that the README quotes."""
    bench = results.json("benchmarks.json")
    hyper, das = bench.get("hyperdas_step"), bench.get("das_step")
    if not hyper:
        raise Missing("benchmarks.json has no hyperdas_step section: run benchmarks/hyperdas_step.py")
    rows = [
        ("HyperDAS training step (s, median)", hyper["hyperdas_step_seconds"]["median"], None, hyper),
        ("bare frozen forward+backward (s, median)", hyper["bare_forward_backward_seconds"]["median"], None, hyper),
        ("HyperDAS step / bare step", hyper["ratio"], hyper.get("goal_ratio"), hyper),
    ]
    lever_names = {
        "hyperdas_step_without_store": "no activation store",
        "hyperdas_step_store_reads_only": "store serving the read passes only",
        "hyperdas_step_store_padded": "rows padded, not packed",
        "hyperdas_step_frozen_embedding": "frozen copied embedding",
    }
    for name, ratio in hyper.get("ratios", {}).items():
        if name in lever_names:
            rows.append((f"HyperDAS step / bare step, {lever_names[name]}", ratio, None, hyper))
    if "ratio_without_store" in hyper:  # files written before the levers were timed one by one
        rows.append(("HyperDAS step / bare step, no activation store", hyper["ratio_without_store"], None, hyper))
    if das:
        rows.append(("DAS step / bare step", das["ratio"], das.get("goal_ratio"), das))
        if "from_states_ratio" in das:
            rows.append(("DAS step from cached layer states / bare step", das["from_states_ratio"], None, das))
    malloc = bench.get("malloc_tuning")
    if malloc:
        speedup = malloc["speedup"]["hyperdas"]
        rows.append(("HyperDAS step speed-up, batch runner's malloc settings", speedup, None, malloc))
    rows.append(("evaluation, soft (examples/s)", hyper["eval_examples_per_second"]["soft"], None, hyper))

    def where(section: dict) -> str:  # the machine that measured the section (older files: the file's)
        cpu = section.get("environment") or bench.get("environment", {})
        batch = f"; batch {section['batch_size']}" if "batch_size" in section else ""
        return f"{cpu.get('cpu', '?')}, {cpu.get('cpu_count', '?')} cores{batch}"

    return pd.DataFrame(
        [(name, value, goal, where(section)) for name, value, goal, section in rows],
        columns=["measure", "value", "goal", "machine"],
    )


def main_bars(results: Results):
    """Test Disentangle per attribute (and their mean), or with several domains per domain (and the
    mean over domains), mean ± sd over seeds, beside the paper's per domain (hatched); one colour per
    method in both panels."""
    table = main_table(results).reset_index()
    rows = table.to_dict("records")
    several = table["domain"].nunique() > 1  # then a bar group per domain's mean, and over domains
    ours = [
        {
            "group": r["domain"] if several else r["attribute"],
            "method": r["method"],
            "value": r["disentangle"],
            "sd": r.get("disentangle_sd"),
        }
        for r in rows
        if not several or r["attribute"] == "mean"
    ]
    if several:  # the paper's overall: the mean over domains
        for method in dict.fromkeys(r["method"] for r in ours):
            values = [r["value"] for r in ours if r["method"] == method]
            ours.append({"group": "mean", "method": method, "value": sum(values) / len(values), "sd": None})
    ref = results.reference().get("main", [])
    order = [m for m in ORDER if m in set(table["method"])]
    fig, axes = plt.subplots(1, 2, figsize=(12, 3.8), gridspec_kw={"width_ratios": [3, 2]})
    groups = list(dict.fromkeys(r["group"] for r in ours if r["group"] != "mean")) + ["mean"]
    look.grouped_bars(axes[0], ours, groups, order)
    axes[0].set(title=f"ours: {results.model_name()}", ylabel="Disentangle (test)", ylim=(0, 1))
    if ref:
        paper = [{"group": e["domain"], "method": e["method"], "value": e["disentangle"]} for e in ref]
        methods = [m for m in ORDER if m in {e["method"] for e in ref}]
        look.grouped_bars(
            axes[1], paper, list(dict.fromkeys(e["domain"] for e in ref)), methods, hatch=look.PAPER["hatch"]
        )
        axes[1].set(title=f"{PAPER} (hatched)", ylabel="Disentangle (test)", ylim=(0, 1))
    else:
        axes[1].set_axis_off()
    look.legend_below(fig, axes, ncol=6)
    return fig
