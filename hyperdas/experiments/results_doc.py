"""docs/results.md, generated whole from the results files (`python -m hyperdas.report`): what each
file holds and which command writes it, when and on which machine each was written, and the full
tables (main table per attribute, RAVEL per domain, every HyperDAS run file, the budget ladder in
every mode with its paired comparisons, the speed measures, the paper's numbers). Nothing in it is
typed by hand.
"""

from __future__ import annotations

from pathlib import Path

from hyperdas.core.results import CONFIGS, REPO, machine, read_json
from hyperdas.experiments import report

# (pattern under results/, what it holds, what writes it)
FILES = (
    ("reference/llama3-8b.json", "the paper's numbers (Llama3-8B), each with its source", "entered from the paper"),
    ("ladder.json", "the budget ladder across models: rows, intervals, comparisons", "`python -m hyperdas.ladder`"),
    ("*/model_summary.json", "the target: architecture, a fact check, residual norms", "notebook 00"),
    ("*/data_summary.json", "what the target knows (the filter) and the pair counts", "notebook 01"),
    (
        "*/filter_verdicts/*.json.gz",
        "the filter's verdict per prompt (hashed): notebook 01 rebuilds the pairs without running a prompt",
        "notebook 01",
    ),
    ("*/baselines.json", "DAS, MDAS and patching per attribute and layer, per seed", "notebook 02"),
    ("*/baselines_*.json", "notebook 02 with other settings (the name says which)", "notebook 02, overrides"),
    ("*/hyperdas.json", "HyperDAS test scores per mode and attribute, faithfulness", "notebook 03"),
    ("*/hyperdas_layers.json", "HyperDAS trained at other layers", "notebook 03 (`hyper_sweep_layers`)"),
    ("*/dimension_sweep.json", "HyperDAS and MDAS at other subspace ranks", "notebooks 02 / 03 (`sweep_ks`)"),
    ("*/hyperdas_*.json", "notebook 03 with other settings (its `config` says which)", "notebook 03, overrides"),
    ("*/train_log.jsonl", "notebook 03's training log (loss and val per step)", "notebook 03"),
    ("*/selections/*.json", "selection matrices and Householder vectors of test examples", "notebook 03"),
    ("*/ablations.json", "inference modes, leakage controls, diagnosis, trained variants", "notebook 04"),
    ("*/das_sweep.json", "DAS / MDAS val scores over layers and k", "`make das-sweep`"),
    ("*/patch_layers.json", "patching ceilings per layer (val conflict pairs)", "`make das-sweep`"),
    ("*/instruction_runs.json", "HyperDAS with other instruction templates", "`benchmarks/hyperdas_instruction.py`"),
    ("*/benchmarks.json", "step times, throughput and memory", "`make benchmarks`"),
    ("*/reproduce.json", "status and seconds per notebook of the last chain run", "`hyperdas-batch`"),
    ("*/run_log.jsonl", "one line per chain run: profile, overrides, commit, machine", "`hyperdas-batch`"),
    ("*/runs/*.ipynb", "an executed notebook of the last chain run, with its outputs", "`hyperdas-batch`"),
    (
        "*/ladder/hyperdas_*.json",
        "one ladder run: every rung's scores and per-pair outcomes",
        "`python -m hyperdas.ladder`",
    ),
    ("*/ladder/baselines_*.json", "DAS / MDAS beside the ladder, per-pair outcomes", "`hyperdas.ladder --baselines`"),
    ("*/pilots/hyperdas_*.json", "one option's pilot (its name says which), val scored too", "`ladder --pilot`"),
)


def _written(path: Path) -> tuple[str, str, str]:
    """(date, machine, commit) from a results file's record; blanks where it has none."""
    if path.suffix != ".json":
        return "", "", ""
    try:
        record = read_json(path)
    except Exception:  # a file this table cannot read is listed, not fatal
        return "unreadable", "", ""
    if not isinstance(record, dict):
        return "", "", ""
    env = record.get("environment") or {}
    if not env:
        return str(record.get("written_at", ""))[:10], "", ""
    commit = env.get("commit")
    return str(record.get("written_at", ""))[:10], machine(record), commit[:12] if commit else "not recorded"


def profile_roots(root: Path) -> list[Path]:
    """The folders under `root` where a profile keeps its results apart (`results_root` in configs/)."""
    import yaml

    found = {(yaml.safe_load(p.read_text()) or {}).get("results_root") for p in sorted(CONFIGS.glob("*.yaml"))}
    return sorted(REPO / f for f in found if f and (REPO / f).parent == root.resolve())


def model_folders(root: Path) -> list[Path]:
    """Every results/<model>/ and results/<profile>/<model>/ folder."""
    apart = [root / p.name for p in profile_roots(root)]  # in the form `root` was given
    top = [p for p in sorted(root.iterdir()) if p.is_dir() and p not in apart and p.name not in ("reference", "gpu")]
    return top + [m for p in apart if p.is_dir() for m in sorted(p.iterdir()) if m.is_dir()]


def files_table(root: Path) -> str:
    lines = ["| file | holds | written by | written | machine | commit |", "|---|---|---|---|---|---|"]
    seen: set[Path] = set()
    folders = model_folders(root)
    for pattern, holds, writer in FILES:
        paths = (
            [p for folder in folders for p in sorted(folder.glob(pattern[2:]))]
            if pattern.startswith("*/")
            else sorted(root.glob(pattern))
        )
        for path in paths:
            if path in seen:
                continue
            seen.add(path)
            date, written_on, commit = _written(path)
            name = path.relative_to(root.parent)
            lines.append(f"| [`{name}`](../{name}) | {holds} | {writer} | {date} | {written_on} | {commit} |")
    return "\n".join(lines) + "\n"


def _markdown(frame) -> str:
    return frame.astype(object).where(frame.notna(), None).to_markdown(index=False, missingval="") + "\n"


def comparisons_table(summary: dict) -> str:
    rows = summary.get("comparisons", [])
    if not rows:
        return "No ladder run and baseline run kept per-pair outcomes on the same pairs yet.\n"
    lines = [
        "| model | HyperDAS | baseline | Disentangle difference [95%] | follows-activations difference [95%] |",
        "|---|---|---|---|---|",
    ]
    for c in rows:
        h, b = c["hyperdas"], c["baseline"]
        budget = "early-stopped" if b["early_stopped"] else f"{b['examples_budget']:,} examples"
        lines.append(
            f"| {c['model']} | {h['mode'].replace('_', '-')}, step {h['steps']:,} of {h['run_steps']:,} | "
            f"{b['method'].upper()}, {budget} | {_difference(c['disentangle_difference'])} | "
            f"{_difference(c.get('follows_activations_difference'))} |"
        )
    return "\n".join(lines) + "\n"


def _difference(d: dict | None) -> str:
    return "" if not d else f"{d['estimate']:+.3f} [{d['low']:.3f}, {d['high']:.3f}]"


def _beside(mine: dict | None, plain: dict | None) -> str:
    return "" if not mine or not plain else f"{mine['mean']:.3f} ({plain['mean']:.3f})"


def _option(overrides: dict) -> str:
    return ", ".join(f"`{k}={'None' if v is None else v}`" for k, v in overrides.items())


def pilots_table(summary: dict) -> str:
    """The pilots of single options: each one's val / test Disentangle and follows-activations share
    (plain run's beside it), the paired differences and whether the option is kept."""
    pilots = summary.get("pilots")
    if not pilots or not pilots["comparisons"]:
        return "No pilot has a plain run at the same budget beside it yet.\n"

    def key(r: dict, overrides: dict) -> tuple:
        return r["model"], r["layer"], r["run_steps"], r["steps"], r["mode"], str(overrides)

    rows = {key(r, r.get("overrides")): r for r in pilots["rows"] + summary["rows"] if r["method"] == "hyperdas"}
    lines = [
        "| model | option | mode | step | val Dis. (plain) | val difference [95%] | test difference [95%] | "
        "follows activations (plain) | its difference [95%] | wins on val, as faithful |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for c in pilots["comparisons"]:
        mine, plain = (rows[key(c, o)] for o in (c["overrides"], {}))
        val = _beside(*(r.get("val_scored", {}).get("disentangle") for r in (mine, plain)))
        lines.append(
            f"| {c['model']} | {_option(c['overrides'])} | {c['mode'].replace('_', '-')} | {c['steps']:,} | {val} | "
            f"{_difference(c.get('val_difference'))} | {_difference(c.get('test_difference'))} | "
            f"{_beside(mine.get('follows_activations'), plain.get('follows_activations'))} | "
            f"{_difference(c.get('follows_activations_difference'))} | {'yes' if c['keep'] else 'no'} |"
        )
    return "\n".join(lines) + "\n"


def budgets_table(summary: dict) -> str:
    """Each rung against the default budget's rung of the same run, on val (what decides) and test."""
    lines = [
        "| model | mode | step vs step | seeds | val difference [95%] | test difference [95%] | "
        "follows-activations difference [95%] | wins on val |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for c in summary.get("budgets", []):
        lines.append(
            f"| {c['model']} | {c['mode'].replace('_', '-')} | {c['steps']:,} vs {c['reference_steps']:,} "
            f"(run of {c['run_steps']:,}) | {', '.join(map(str, c['seeds']))} | "
            f"{_difference(c.get('val_difference'))} | {_difference(c.get('test_difference'))} | "
            f"{_difference(c.get('follows_activations_difference'))} | {'yes' if c['keep'] else 'no'} |"
        )
    return "\n".join(lines) + "\n"


def domain_sections(root: Path) -> list[str]:
    """RAVEL per domain for every results folder whose HyperDAS ran, or whose notebook 01 filtered, on
    several domains: the per-domain comparison and the known-entity rule's table."""
    from hyperdas.experiments import plots
    from hyperdas.experiments.figures.domains import (
        baseline_domain_markdown,
        baseline_domain_rows,
        domains_text,
        support_markdown,
    )

    parts = []
    for folder in model_folders(root):
        summary, hyper, base = folder / "data_summary.json", folder / "hyperdas.json", folder / "baselines.json"
        support = read_json(summary).get("support", []) if summary.is_file() else []
        trained = hyper.is_file() and len({r["domain"] for r in read_json(hyper)["records"]}) > 1
        baselines = base.is_file() and len({r.get("domain") for r in read_json(base)["records"]}) > 1
        if not trained and not baselines and len({r["domain"] for r in support}) < 2:
            continue
        parts.append(f"## All of RAVEL: `{folder.relative_to(root.parent)}`\n")
        if trained:
            parts.append(domains_text(plots.Results(folder)))
        if baselines:
            rows = baseline_domain_rows(plots.Results(folder))
            parts += [
                f"DAS, MDAS, patching and RAVEL's untrained subspaces (PCA, random) per domain (notebook 02, "
                f"layer {rows[0]['layer']}, test pairs; mean over the attributes, then seeds):\n",
                baseline_domain_markdown(rows),
            ]
        if support:
            parts += [
                "What the target knows (notebook 01's known-entity rule, `data_summary.json → support`):\n",
                support_markdown(support),
            ]
    return parts


def document(root: str | Path) -> str:
    """The whole of docs/results.md."""
    from hyperdas.experiments import plots

    root = Path(root)
    model_dir = root / report.HEADLINE
    results = plots.Results(model_dir)
    parts = [
        "# Results\n",
        "Generated by `python -m hyperdas.report` from the files under `results/`; edit those (rerun what "
        "writes them), not this page: `tests/test_report.py` fails when the two differ. Scores are test-split, "
        "teacher-forced, as defined in the README.\n",
        "## The files\n",
        files_table(root),
        "## Main table, per attribute\n",
        "Mean over seeds where several ran (`_sd`: their standard deviation); the faithfulness columns on the "
        "mean rows. In the paper's layout, beside the paper's rows: `figures/main_table.md` and `.tex`.\n",
        _markdown(plots.main_table(results).round(3).reset_index()),
        "## Every HyperDAS run file\n",
        "One row per file and inference mode (`figures/hyperdas_variants.md`).\n",
        _markdown(plots.variants_table(results).round(3)),
    ]
    parts += domain_sections(root)
    if (root / "ladder.json").is_file():
        summary = read_json(root / "ladder.json")
        parts += [
            "## The budget ladder, every mode\n",
            report.ladder(root / "ladder.json", modes=("one_to_one", "soft", "one_to_many")),
            "### Paired comparisons\n",
            "HyperDAS minus each baseline on the same test pairs and conflict pairs (pairs resampled within "
            "RAVEL's template cells, seeds per method; `hyperdas.core.intervals`).\n",
            comparisons_table(summary),
        ]
        if summary.get("budgets"):
            parts += [
                "### Does a longer budget win on val?\n",
                "Each rung minus the same run's rung at the default budget, on every val pair (`python -m "
                "hyperdas.ladder --score-only --val`) and on test. A rung of a longer run keeps that run's schedules "
                "(the sparsity penalty starts at half of the longest budget), so it is not a run of that length.\n",
                budgets_table(summary),
            ]
        if summary.get("pilots"):
            parts += [
                "## Pilots of the official code's options\n",
                "Each option alone against the plain run of the same budget and seed (`python -m hyperdas.ladder "
                "--pilot`), scored on every val pair and on test. An option becomes a default only when it wins "
                "on val in the headline one-to-one mode beyond its interval without losing faithfulness beyond its "
                "interval; test is shown, not used to choose.\n",
                pilots_table(summary),
            ]
    try:
        parts += ["## Speed\n", _markdown(plots.speed_table(results).round(3))]
    except plots.Missing:
        pass
    figures = sorted((model_dir / "figures").glob("*.png"))
    parts += ["## Figures\n", "\n".join(f"![{p.stem}](../{p.relative_to(root.parent)})" for p in figures) + "\n"]
    parts += ["## The paper's numbers\n", report.paper(root / "reference" / "llama3-8b.json")]
    return "\n".join(parts)


# --- every generated document: README's sections (`report`) and this page ---------------------------

DOCUMENTS = ("README.md",)  # hand-written, with generated sections


def whole(root: str | Path) -> dict[str, str]:
    """The documents generated whole."""
    return {"docs/results.md": document(root)}


def renders(root: str | Path, base: Path = REPO) -> dict[str, str]:
    """Every document's text as the results files under `root` make it."""
    rendered = report.sections(root)
    out = {name: report.fill((base / name).read_text(), rendered) for name in DOCUMENTS}
    return {**out, **whole(root)}


def stale_documents(root: str | Path, base: Path = REPO) -> list[str]:
    """The documents whose text differs from their render (with the differing sections of each)."""
    found = []
    rendered = report.sections(root)
    for name in DOCUMENTS:
        differ = report.stale(base / name, rendered)
        if differ:
            found.append(f"{name} (section(s) {', '.join(differ)})")
    for name, text in whole(root).items():
        path = base / name
        if not path.is_file() or path.read_text() != text:
            found.append(name)
    return found


def write(root: str | Path = REPO / "results", base: Path = REPO) -> list[Path]:
    from hyperdas.core.files import write_text

    changed = []
    for name, text in renders(root, base).items():
        path = base / name
        if not path.is_file() or path.read_text() != text:
            write_text(path, text)
            changed.append(path)
    return changed
