"""The paper's figures and tables, one function each, from results files only (notebook 05).

Every figure function takes a `Results` (the files of one results folder, read lazily) and returns
a matplotlib Figure, or raises `Missing` naming the file or record it lacks, so the notebook can
skip it with that reason. Nothing here trains or evaluates a model. The paper's Llama3-8B numbers
come from `results/reference/` and are always drawn as such ("paper, Llama3-8B"), never mixed with
ours.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import matplotlib
import matplotlib.pyplot as plt
import matplotlib.ticker
import numpy as np
import pandas as pd
import seaborn as sns

from hyperdas.core.errors import HyperDASError
from hyperdas.core.metrics import faithfulness_columns
from hyperdas.core.results import REPO
from hyperdas.experiments.figures import style as look
from hyperdas.hyper.legacy import MODEL_BEFORE_FIELDS, TRAIN_BEFORE_FIELDS

METRICS = ("cause", "iso", "disentangle")
SCHEMA = 1  # results files written by this package's notebooks
REFERENCE_DIR = REPO / "results" / "reference"
PAPER = "paper, Llama3-8B"


class Missing(LookupError):
    """A figure's input is absent: the message says which."""


class SchemaError(HyperDASError, ValueError):
    """A results file from an older or foreign layout."""


def _non_numeric_scores(data, where: str = "") -> str | None:
    """The first score field (cause / iso / disentangle) anywhere in `data` that holds no number."""
    if isinstance(data, dict):
        for key, value in data.items():
            here = f"{where}.{key}" if where else str(key)
            if key in METRICS and isinstance(value, float) and not math.isfinite(value):
                return f"{here}={value!r} (a run that diverged or scored no pairs)"
            if key in METRICS and not (
                value is None or isinstance(value, (int, float)) and not isinstance(value, bool)
            ):
                if not isinstance(value, (dict, list)):
                    return f"{here}={value!r}"
            found = _non_numeric_scores(value, here)
            if found:
                return found
    elif isinstance(data, list):
        for i, value in enumerate(data):
            found = _non_numeric_scores(value, f"{where}[{i}]")
            if found:
                return found
    return None


class Results:
    """The files of one `results/<model>/` folder, with the checks the figures need."""

    REQUIRED = {
        "baselines.json": ("records",),
        "hyperdas.json": ("records",),
        "ablations.json": ("records",),
        "das_sweep.json": ("runs",),
    }

    # written into results/<model>/ by commands (make benchmarks, make das-sweep) whatever the profile:
    # a profile's own folder (results/<profile>/<model>/) reads them from there when it has none
    SHARED = ("benchmarks.json", "das_sweep.json", "patch_layers.json")

    def __init__(
        self, folder: str | Path, reference: str | Path | None = REFERENCE_DIR, shared: str | Path | None = None
    ):
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise FileNotFoundError(f"no results folder {self.folder}: run the notebooks first (make reproduce)")
        self.shared = Path(shared) if shared is not None else REPO / "results" / self.folder.name
        self.reference_dir = Path(reference) if reference is not None else None
        self.read: list[str] = []  # the files read since the last reset (make_all names them on a failure)
        self.models: dict[str, str] = {}  # the model each main results file names: one per folder

    def path(self, name: str, folder: Path | None = None) -> Path:
        """`name` in the folder; for a command's file (`SHARED`) absent there, the model's shared one."""
        here = (folder or self.folder) / name
        if folder is None and not here.is_file() and name in self.SHARED and (self.shared / name).is_file():
            return self.shared / name
        return here

    def apart(self) -> bool:
        """Whether this is a profile's own folder (results/<profile>/<model>/) beside the model's shared one."""
        return self.shared.is_dir() and self.shared.resolve() != self.folder.resolve()

    def json(self, name: str, folder: Path | None = None) -> dict:
        path = self.path(name, folder)
        if not path.is_file():
            raise Missing(f"{name} is missing in {folder or self.folder}")
        self.read.append(name)
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise SchemaError(f"{path} is not valid JSON ({err}): rerun the notebook that writes it") from None
        bad = _non_numeric_scores(data)
        if bad:
            raise SchemaError(f"{path}: {bad} must be a number: rerun the notebook that writes it")
        model = data.get("model") if name in self.REQUIRED else None
        if isinstance(model, str):
            others = {n: m for n, m in self.models.items() if m != model}
            if others:
                other, theirs = next(iter(others.items()))
                raise SchemaError(
                    f"{path} holds results of {model}, {other} beside it those of {theirs}: one folder holds one "
                    f"model's results (results/<model>/); move the stray file or rerun its notebook"
                )
            self.models[name] = model
        missing = [k for k in self.REQUIRED.get(name, ()) if k not in data]
        if missing:
            raise SchemaError(
                f"{path} lacks {missing}: written by an older version of hyperdas? rerun the notebook that writes it"
            )
        return data

    def jsonl(self, name: str) -> list[dict]:
        path = self.folder / name
        if not path.is_file():
            raise Missing(f"{name} is missing in {self.folder}")
        self.read.append(name)
        rows = []
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError:
                    raise SchemaError(f"{path} line {n} is not JSON: rerun the notebook that writes it") from None
        return rows

    def records(self, name: str) -> list[dict]:
        return self.json(name)["records"]

    def ablation(self, name: str) -> list[dict]:
        found = [r for r in self.records("ablations.json") if r["ablation"] == name]
        if not found:
            raise Missing(f"ablations.json holds no '{name}' records (notebook 04's `ablations` parameter)")
        return found

    def reference(self) -> dict:
        if self.reference_dir is None or not (self.reference_dir / "llama3-8b.json").is_file():
            return {}
        return json.loads((self.reference_dir / "llama3-8b.json").read_text())

    def model_name(self) -> str:
        for name in ("hyperdas.json", "baselines.json", "model_summary.json"):
            try:
                return self.json(name)["model"]
            except (Missing, KeyError):
                continue
        return self.folder.name


def style() -> None:
    look.apply()


ORDER = list(look.COLOURS)  # the methods in the order every figure and table lists them


# --- the main table --------------------------------------------------------------------------------


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
                blocks = _faithfulness_blocks(hyper_file, domain)
                columns = pd.DataFrame([faithfulness_columns(b, mode) for b in blocks])
                for column in columns:
                    table.loc[(domain, "mean", method), column] = columns[column].mean()
                    if len(blocks) > 1 and column.startswith("follows_"):
                        table.loc[(domain, "mean", method), f"{column}_sd"] = columns[column].std()
    return table


def _faithfulness_blocks(hyper_file: dict, domain: str) -> list[dict]:
    """The faithfulness blocks (one per seed) of the HyperDAS that served `domain`: its own when the
    domains were trained apart, the all-domain one when together, else the file's only model's."""
    groups = hyper_file.get("by_group", {}).get("groups", {})
    mine = groups.get(domain) or groups.get("all")
    if mine:
        return [entry["faithfulness"] for entry in mine.values()]
    return list(hyper_file.get("faithfulness_by_seed", {}).values()) or [hyper_file["faithfulness"]]


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
    table; the speed and variants tables."""
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
        ("HyperDAS training step (s, median)", hyper["hyperdas_step_seconds"]["median"], None),
        ("bare frozen forward+backward (s, median)", hyper["bare_forward_backward_seconds"]["median"], None),
        ("HyperDAS step / bare step", hyper["ratio"], hyper.get("goal_ratio")),
    ]
    lever_names = {
        "hyperdas_step_without_store": "no activation store",
        "hyperdas_step_store_reads_only": "store serving the read passes only",
        "hyperdas_step_frozen_embedding": "frozen copied embedding",
    }
    for name, ratio in hyper.get("ratios", {}).items():
        if name in lever_names:
            rows.append((f"HyperDAS step / bare step, {lever_names[name]}", ratio, None))
    if "ratio_without_store" in hyper:  # files written before the levers were timed one by one
        rows.append(("HyperDAS step / bare step, no activation store", hyper["ratio_without_store"], None))
    if das:
        rows.append(("DAS step / bare step", das["ratio"], das.get("goal_ratio")))
        if "from_states_ratio" in das:
            rows.append(("DAS step from cached layer states / bare step", das["from_states_ratio"], None))
    malloc = bench.get("malloc_tuning")
    if malloc:
        rows.append(("HyperDAS step speed-up, batch runner's malloc settings", malloc["speedup"]["hyperdas"], None))
    rows.append(("evaluation, soft (examples/s)", hyper["eval_examples_per_second"]["soft"], None))
    cpu = bench.get("environment", {})
    where = f"{cpu.get('cpu', '?')}, {cpu.get('cpu_count', '?')} cores; batch {hyper['batch_size']}"
    return pd.DataFrame(rows, columns=["measure", "value", "goal"]).assign(machine=where)


def main_bars(results: Results):
    """Test Disentangle per attribute (and their mean), mean ± sd over seeds, beside the paper's per
    domain (hatched); one colour per method in both panels."""
    table = main_table(results).reset_index()
    ours = [
        {"group": r["attribute"], "method": r["method"], "value": r["disentangle"], "sd": r.get("disentangle_sd")}
        for r in table.to_dict("records")
    ]
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


# --- sweeps and convergence ------------------------------------------------------------------------


def _sweep_frame(results: Results) -> pd.DataFrame:
    sweep = results.json("das_sweep.json")
    return pd.DataFrame(
        [
            {
                "method": look.method_name(r["kind"]),
                "layer": r["config"]["layer"],
                "k": r["config"]["k"],
                **r["val"],
            }
            for r in sweep["runs"]
        ]
    ).assign(attribute=sweep["attribute"])


def _hyperdas_layers(results: Results) -> list[dict]:
    """HyperDAS records of every layer notebook 03 ran (hyperdas_layers.json), else its latest run."""
    try:
        sections = results.json("hyperdas_layers.json")
    except Missing:
        return results.records("hyperdas.json")
    return [r for key, section in sections.items() if key.startswith("layer") for r in section["records"]]


def layer_sweep(results: Results):
    """Cause / Iso / Disentangle against the intervention layer (notebook 02's sweep and layers)."""
    rows = []
    try:
        rows += [
            {
                "method": look.method_name(r["method"]),
                "layer": r["layer"],
                "scored on": "test",
                **{m: r[m] for m in METRICS},
            }
            for r in results.records("baselines.json")
        ]
    except Missing:
        pass
    try:
        rows += [
            {
                "method": look.method_name(r["mode"]),
                "layer": r["layer"],
                "scored on": "test",
                **{m: r[m] for m in METRICS},
            }
            for r in _hyperdas_layers(results)
            if r["mode"] in ("one_to_one", "soft")  # the headline mode and the paper's
        ]
    except Missing:
        pass
    try:
        sweep = _sweep_frame(results)
        trained = sweep[sweep["method"] != "full patch"]
        # the k with the most runs; of tied ones, the best mean val Disentangle
        by_k = trained.groupby("k")["disentangle"].agg(["size", "mean"])
        best_k = by_k.sort_values(["size", "mean"]).index[-1] if len(by_k) else None
        rows += [
            {
                **r,
                "method": f"{r['method']} (val, {r['attribute']}"
                + (")" if r["method"] == "full patch" else f", k={r['k']})"),
                "scored on": "val",
            }
            for r in sweep[(sweep["method"] == "full patch") | (sweep["k"] == best_k)].to_dict("records")
        ]
    except Missing:
        pass
    frame = pd.DataFrame(rows)
    if frame.empty or frame["layer"].nunique() < 2:
        raise Missing(
            "fewer than two layers in baselines.json / das_sweep.json (notebook 02's sweep_layers, make das-sweep)"
        )
    frame = frame.groupby(["method", "layer"], as_index=False)[list(METRICS)].mean()
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.4), sharey=True)
    for ax, metric in zip(axes, METRICS):
        for n, (method, part) in enumerate(frame.groupby("method", sort=False)):
            base = method.split(" (val")[0]  # a val sweep in its method's colour, dashed
            part = part.sort_values("layer")
            ax.plot(
                part["layer"],
                part[metric],
                marker="o",
                ms=4,
                color=look.colour(base, n),
                ls="--" if "(val" in method else "-",
                label=method,
            )
        ax.set(title=metric.capitalize(), xlabel="intervention layer", ylabel="", ylim=(0, 1))
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    axes[0].set_ylabel("score (fraction)")
    look.legend_below(fig, axes, ncol=4)
    return fig


def k_tradeoff(results: Results):
    """Cause against Iso across subspace sizes k (das_sweep.json), at HyperDAS's layer where the sweep
    has several k there, else at the layer with the most k."""
    frame = _sweep_frame(results)
    frame = frame[frame["method"] != "full patch"]
    ks = frame.groupby("layer")["k"].nunique()
    try:
        layer = results.records("hyperdas.json")[0]["layer"]
    except (Missing, IndexError):
        layer = None
    if ks.get(layer, 0) < 2:
        layer = ks.idxmax()
    frame = frame[frame["layer"] == layer]
    if frame["k"].nunique() < 2:
        raise Missing("das_sweep.json has a single k at every layer")
    fig, ax = plt.subplots(figsize=(5, 4))
    methods = list(dict.fromkeys(frame["method"]))
    sns.scatterplot(
        data=frame, x="iso", y="cause", hue="method", palette=look.palette(methods), style="method", s=60, ax=ax
    )
    for r in frame.to_dict("records"):
        ax.annotate(f"k={r['k']}", (r["iso"], r["cause"]), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.set(
        title=f"Cause vs Iso across k (layer {layer}, val, {frame['attribute'].iloc[0]})",
        xlabel="Iso (fraction)",
        ylabel="Cause (fraction)",
        xlim=(0, 1),
        ylim=(0, 1),
    )
    return fig


def convergence(results: Results):
    log = [e for e in results.jsonl("train_log.jsonl") if e.get("method", "hyperdas") == "hyperdas"]
    if not log:
        raise Missing("train_log.jsonl holds no HyperDAS steps")
    fig, axes = plt.subplots(1, 2, figsize=(12, 3.8))
    frame = pd.DataFrame(log)
    axes[0].plot(frame["step"], frame["loss"], label="loss")
    axes[0].plot(frame["step"], frame["ce"], label="cross-entropy")
    axes[0].set(xlabel="training step", ylabel="training loss (nats)", title="HyperDAS training")
    axes[0].legend()
    evals = [
        {"step": e["step"], "method": look.method_name(mode), "disentangle": s["disentangle"]}
        for e in log
        if "val" in e
        for mode, s in e["val"].items()
    ]
    if evals:
        evals = pd.DataFrame(evals)
        methods = list(dict.fromkeys(evals["method"]))
        sns.lineplot(
            data=evals, x="step", y="disentangle", hue="method", palette=look.palette(methods), marker="o", ax=axes[1]
        )
    try:  # MDAS: one model per attribute; its validation curve averaged over attributes
        layer = results.records("hyperdas.json")[0]["layer"]
        mdas = [
            {"step": e["step"], "method": "MDAS (mean over attributes)", "disentangle": e["val"]["disentangle"]}
            for r in results.records("baselines.json")
            if r["method"] == "mdas" and r["layer"] == layer
            for e in r.get("history", [])
            if "val" in e
        ]
        if mdas:
            frame = pd.DataFrame(mdas).groupby(["step", "method"], as_index=False)["disentangle"].mean()
            sns.lineplot(
                data=frame,
                x="step",
                y="disentangle",
                hue="method",
                palette=[look.colour("MDAS")],
                marker="s",
                linestyle="--",
                ax=axes[1],
            )
    except Missing:
        pass
    axes[1].set(xlabel="training step", ylabel="Disentangle (val)", title="validation", ylim=(0, 1))
    look.legend_below(fig, axes, ncol=3)
    return fig


# --- ablations -----------------------------------------------------------------------------------


def blocks_cross_attention(results: Results):
    records = results.ablation("blocks_cross_attention")
    frame = pd.DataFrame(
        [
            {
                "N": r["n_blocks"],
                "cross-attention": r["cross_attention"],
                "source": "ours",
                "disentangle": r["overall"]["disentangle"],
            }
            for r in records
        ]
    )
    ref = results.reference().get("blocks_cross_attention", [])
    fig, axes = plt.subplots(1, 2 if ref else 1, figsize=(12 if ref else 6, 3.8), squeeze=False)
    sns.barplot(data=frame, x="N", y="disentangle", hue="cross-attention", ax=axes[0, 0])
    axes[0, 0].set(title=f"ours: {results.model_name()}", xlabel="decoder blocks N", ylabel="Disentangle", ylim=(0, 1))
    if ref:
        sns.barplot(data=pd.DataFrame(ref), x="n_blocks", y="disentangle", hue="cross_attention", ax=axes[0, 1])
        axes[0, 1].set(title=f"{PAPER} (city)", xlabel="decoder blocks N", ylabel="Disentangle", ylim=(0, 1))
    return fig


def _heatmaps(entries: list[tuple[str, dict]]):
    fig, axes = plt.subplots(1, len(entries), figsize=(5 * len(entries), 4.5), squeeze=False)
    same_rows = len({tuple(e["source_tokens"]) for _, e in entries}) == 1  # then only the first panel names them
    for n, (ax, (title, e)) in enumerate(zip(axes[0], entries)):
        last = n == len(entries) - 1  # one colour bar, beside the last panel
        sns.heatmap(
            np.array(e["A"]),
            ax=ax,
            cmap="viridis",
            vmin=0,
            vmax=1,
            xticklabels=[look.token_label(t) for t in e["base_tokens"]],
            yticklabels=[look.token_label(t) for t in e["source_tokens"]] if n == 0 or not same_rows else False,
            cbar=last,
            cbar_kws={"label": "selection weight"} if last else None,
        )
        ax.set(
            title=f"{look.method_name(title)}\n{e.get('instruction', '')}",
            xlabel="base token",
            ylabel="source token" if n == 0 or not same_rows else "",
        )
    fig.tight_layout()
    return fig


def sparsity_heatmaps(results: Results):
    records = results.ablation("sparsity")
    return _heatmaps(
        [
            (f"sparsity {r['variant']} (entropy {r['selection_entropy']:.2f} nats)", r["selections"][0])
            for r in records
            if r.get("selections")
        ]
    )


def selection_example(results: Results):
    path = results.folder / "selections" / "test_examples.json"
    if not path.is_file():
        raise Missing(f"{path} is missing (notebook 03)")
    saved = json.loads(path.read_text())
    first = min(s["example"] for s in saved)
    return _heatmaps([(s["mode"], s) for s in saved if s["example"] == first])


def householder(results: Results):
    path = results.folder / "selections" / "householder.json"
    if not path.is_file():
        raise Missing(f"{path} is missing (notebook 03 with subspace='householder')")
    data = json.loads(path.read_text())
    V = np.array(data["vectors"])
    order = np.argsort(data["attribute"], kind="stable")
    V, attributes = V[order], [data["attribute"][i] for i in order]
    centred = V - V.mean(0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    xy = centred @ vt[:2].T
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    sns.scatterplot(x=xy[:, 0], y=xy[:, 1], hue=attributes, ax=axes[0], s=40)
    axes[0].set(title="Householder vectors, 2-D PCA", xlabel="PC 1", ylabel="PC 2")
    norms = np.linalg.norm(V, axis=1)
    cosine = V @ V.T / np.outer(norms, norms)
    sns.heatmap(
        cosine,
        ax=axes[1],
        cmap="vlag",
        vmin=-1,
        vmax=1,
        xticklabels=False,
        yticklabels=False,
        cbar_kws={"label": "cosine similarity"},
    )
    edges = np.flatnonzero(np.array(attributes[1:]) != np.array(attributes[:-1])) + 1
    for e in edges:
        axes[1].axhline(e, color="k", lw=0.8)
        axes[1].axvline(e, color="k", lw=0.8)
    axes[1].set(
        title=f"cosine similarity, min {cosine.min():.3f} (sorted: " + ", ".join(dict.fromkeys(attributes)) + ")"
    )
    return fig


def initialisation(results: Results):
    records = results.ablation("initialisation")
    fig, ax = plt.subplots(figsize=(6, 3.8))
    for r in records:
        steps, losses = zip(*r["loss_curve"])
        ax.plot(steps, losses, label=f"{r['variant']} (Disentangle {r['overall']['disentangle']:.2f})")
    ax.set(title="hypernetwork initialisation", xlabel="training step", ylabel="training loss (nats)")
    ax.legend()
    return fig


def leakage_controls(results: Results):
    records = results.ablation("controls")
    fig, axes = plt.subplots(1, 2, figsize=(12, 3.8))
    scored = pd.DataFrame(
        [{"control": look.wrapped(r["variant"]), **r["overall"]} for r in records if "overall" in r]
    ).rename(columns={m: m.capitalize() for m in METRICS})
    scored.melt(id_vars="control", var_name="score", value_vars=[m.capitalize() for m in METRICS]).pipe(
        lambda f: sns.barplot(data=f, x="control", y="value", hue="score", ax=axes[0])
    )
    axes[0].set(title="controls on the trained model", ylabel="score (fraction)", ylim=(0, 1))
    conflict = [r for r in records if r["variant"] == "conflict"]
    if conflict:
        c = conflict[0]
        outcomes = ["activations", "instruction", "neither"]
        axes[1].bar(outcomes, [c[f"follows_{o}"] for o in outcomes], color="#6b6b6b")
        axes[1].set(title=f"conflict: output follows ... ({c['n']} pairs)", ylabel="fraction of pairs", ylim=(0, 1))
    else:
        axes[1].set_axis_off()
    look.legend_below(fig, axes[:1], ncol=3)
    return fig


def ladder(results: Results):
    """`results/ladder.json` (written by `hyperdas.experiments.ladder`), with the paper's curve."""
    from hyperdas.experiments.figures.ladder import ladder_figure

    path = results.folder.parent / "ladder.json"
    if not path.is_file():  # a profile's own folder: the ladder summary of results/
        path = results.shared.parent / "ladder.json"
    if not path.is_file():
        raise Missing(f"no {path}: run python -m hyperdas.ladder")
    results.read.append(str(path))
    return ladder_figure(json.loads(path.read_text()), results.reference().get("convergence_one_to_one"))


FIGURES = {
    "main_disentangle": main_bars,
    "layer_sweep": layer_sweep,
    "k_tradeoff": k_tradeoff,
    "convergence": convergence,
    "blocks_cross_attention": blocks_cross_attention,
    "sparsity_heatmaps": sparsity_heatmaps,
    "selection_example": selection_example,
    "householder": householder,
    "initialisation": initialisation,
    "leakage_controls": leakage_controls,
    "ladder": ladder,
}


# what a results file with renamed fields, values of the wrong type or a bad line raises
UNREADABLE = (SchemaError, KeyError, TypeError, ValueError, IndexError)


def _failed(results: Results, why: Exception) -> str:
    if isinstance(why, SchemaError):
        return f"failed: {why}"
    problem = f"no field {why}" if isinstance(why, KeyError) else f"{type(why).__name__}: {why}"
    files = ", ".join(dict.fromkeys(results.read)) or "(no file read)"
    return f"failed: {files} in {results.folder}: {problem}; rerun the notebook that writes it"


def make_all(results: Results, out: str | Path, names=None) -> dict[str, str]:
    """Write every figure as PNG and PDF (and the main table as Markdown / LaTeX) under `out`;
    returns name -> "written" or the reason it was skipped."""
    unknown = [n for n in names or () if n not in FIGURES]
    if unknown:
        raise ValueError(f"unknown figure(s) {unknown}; known: {sorted(FIGURES)}")
    style()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    status = {}
    results.read = []
    try:
        write_tables(results, out)
        status["main_table"] = "written"
    except Missing as why:
        status["main_table"] = f"skipped: {why}" + _remove_stale(out, "main_table", ("md", "tex"))
    except UNREADABLE as why:
        status["main_table"] = _failed(results, why) + _remove_stale(out, "main_table", ("md", "tex"))
    for name in names or FIGURES:
        results.read = []
        try:
            fig = FIGURES[name](results)
        except Missing as why:
            status[name] = f"skipped: {why}" + _remove_stale(out, name)
            continue
        except UNREADABLE as why:  # one bad file costs its own figures only
            plt.close("all")
            status[name] = _failed(results, why) + _remove_stale(out, name)
            continue
        for ext in ("png", "pdf"):  # no creation date: the same figure gives the same bytes
            fig.savefig(out / f"{name}.{ext}", metadata={"CreationDate": None} if ext == "pdf" else None)
        plt.close(fig)
        status[name] = "written"
    return status


def _remove_stale(out: Path, name: str, extensions=("png", "pdf")) -> str:
    """Delete `name`'s files drawn from earlier results (a derived file never outlives its inputs);
    returns the note for the status line."""
    stale = [out / f"{name}.{ext}" for ext in extensions if (out / f"{name}.{ext}").is_file()]
    for path in stale:
        path.unlink()
    return "; removed the one made from earlier results" if stale else ""
