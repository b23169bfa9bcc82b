"""The numbers that README.md states about results, rendered from the committed results files.

README.md holds each generated section between ``<!-- report:NAME -->`` and ``<!-- /report:NAME -->``;
the prose around them carries no result numbers. `python -m hyperdas.report` rewrites the sections,
`--check` names every section whose text differs from its render (a test runs it), so a number can
only change with the file it comes from. docs/results.md is generated whole
(`hyperdas.experiments.results_doc`). Each section names the files it reads and, from their
records, when and on which machine (and, for newer files, at which commit) they were written.
Comparisons are stated only with a bootstrap interval (`hyperdas.core.intervals`), and called a
difference only when the interval excludes zero.
"""

from __future__ import annotations

import re
from pathlib import Path

from hyperdas.core.results import machine, read_json

MARK = re.compile(r"(<!-- report:(?P<name>[a-z_]+) -->\n)(?P<body>.*?)(<!-- /report:(?P=name) -->)", re.S)
HEADLINE = "cpu-seeds/smollm2-135m"  # the README's table: the cpu-seeds profile's folder
MODES = {"one_to_one": "one-to-one", "one_to_many": "one-to-many", "soft": "soft"}


def _num(value, digits: int = 3) -> str:
    if value is None:
        return ""
    return "NaN" if value != value else f"{value:.{digits}f}"


def _pm(mean, sd, digits: int = 3) -> str:
    """`mean ± sd`, or the mean alone when there is no sd (one seed)."""
    if mean is None or mean != mean:
        return _num(mean, digits)
    return _num(mean, digits) + (f" ± {sd:.{digits}f}" if sd is not None and sd == sd else "")


def _pct(value) -> str:
    return "" if value is None else f"{100 * value:.1f}%"


def _written(record: dict, name: str) -> str:
    commit = (record.get("environment") or {}).get("commit")
    at = f"commit {commit[:12]}" if commit else "commit not recorded"
    return f"`{name}`: written {str(record.get('written_at', '?'))[:10]} on {machine(record)}, {at}"


def headline(model_dir: Path, label: str | None = None) -> str:
    """The main table's mean rows: HyperDAS in each mode, DAS, MDAS and the full patch."""
    from hyperdas.experiments import plots

    results = plots.Results(model_dir)
    table = plots.main_table(results).reset_index()
    mean = table[table["attribute"] == "mean"]
    hyper = results.json("hyperdas.json")
    config = hyper["config"]
    seeds = sorted({r.get("seed", hyper.get("seed", 0)) for r in hyper["records"]})
    lines = [
        f"{hyper['model']}, layer {config['hyperdas']['layer']}, k {config['hyperdas']['k']}, city test pairs "
        f"(teacher-forced; mean over the attributes, then mean ± sd over seeds {', '.join(map(str, seeds))}); "
        f"HyperDAS trained {config['train']['steps']} steps in the "
        f"{MODES.get(config['train'].get('train_selection'), config['train'].get('train_selection'))} mode.",
        "",
        "| method | Cause | Iso | Disentangle | follows activations | follows instruction | "
        "Disentangle, held-out entities | query-blind Cause / Iso | seeds |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    order = ["HyperDAS (one-to-one)", "HyperDAS (soft)", "HyperDAS (one-to-many)", "DAS", "MDAS", "full patch"]
    for method in order:
        found = mean[mean["method"] == method]
        if found.empty:
            continue
        r = found.iloc[0].to_dict()

        def get(key, r=r):
            value = r.get(key)
            return None if value is None or value != value else float(value)

        blind = (
            f"{_num(get('query_blind_cause'))} / {_num(get('query_blind_iso'))}"
            if get("query_blind_cause") is not None
            else ""
        )
        lines.append(
            f"| {method} | {_pm(get('cause'), get('cause_sd'))} | {_pm(get('iso'), get('iso_sd'))} | "
            f"{_pm(get('disentangle'), get('disentangle_sd'))} | "
            f"{_pm(get('follows_activations'), get('follows_activations_sd'))} | "
            f"{_num(get('follows_instruction'))} | {_num(get('test_entity_disentangle'))} | {blind} | "
            f"{int(get('n_seeds') or 1)} |"
        )
    where = f"results/{label or model_dir.name}"
    sources = [_written(hyper, f"{where}/hyperdas.json")]
    if (model_dir / "baselines.json").is_file():
        sources.append(_written(read_json(model_dir / "baselines.json"), f"{where}/baselines.json"))
    lines += ["", "Sources: " + "; ".join(sources) + "."]
    return "\n".join(lines) + "\n"


def _rung_label(row: dict) -> str:
    if row["method"] == "hyperdas":
        return f"HyperDAS {MODES[row['mode']]}, step {row['steps']:,} of {row['run_steps']:,}"
    how = "early-stopped" if row.get("early_stopped", True) else f"{row['examples_budget']:,}-example budget"
    return f"{row['method'].upper()}, {how}"


def _interval(found: dict | None) -> str:
    return "" if not found else f"[{found['low']:.3f}, {found['high']:.3f}]"


def _row_interval(row: dict) -> str:
    """A row's Disentangle interval, saying how many of its seeds kept the per-pair outcomes behind it."""
    found = row.get("disentangle_interval")
    if not found:
        return ""
    kept = found["seeds"][0]
    return _interval(found) + ("" if kept == len(row["seeds"]) else f" ({kept} of {len(row['seeds'])} seeds)")


def ladder(summary_path: Path, modes: tuple[str, ...] = ("one_to_one",)) -> str:
    """The budget ladder's table (HyperDAS in `modes` at each rung, the baselines) and two sentences
    on where one-to-one HyperDAS beats MDAS with faithful edits, from `results/ladder.json`."""
    summary = read_json(summary_path)
    lines = []
    for model in sorted({r["model"] for r in summary["rows"]}):
        rows = [r for r in summary["rows"] if r["model"] == model and r.get("mode") in (None, *modes)]
        ceilings = next((r["ceilings"] for r in rows if r.get("ceilings")), None)
        lines += [
            f"**{model}**, layer {rows[0]['layer']}, test pairs (mean over attributes; ± sd over seeds; 95% "
            f"bootstrap interval where the run kept per-pair outcomes):",
            "",
            "| run | examples seen | seeds | Cause | Iso | Disentangle | interval | follows activations | val Dis. |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for r in sorted(rows, key=lambda r: (r["method"] != "hyperdas", r.get("mode") or "", r["examples_seen"])):
            fa = r.get("follows_activations") or {}
            val = (r.get("val_disentangle") or {}).get("mean")
            lines.append(
                f"| {_rung_label(r)} | {round(r['examples_seen']):,} | {len(r['seeds'])} | "
                f"{_pm(r['cause']['mean'], r['cause']['sd'])} | {_pm(r['iso']['mean'], r['iso']['sd'])} | "
                f"{_pm(r['disentangle']['mean'], r['disentangle']['sd'])} | "
                f"{_row_interval(r)} | {_pct(fa.get('mean'))} | {_num(val)} |"
            )
        if ceilings:
            lines += [
                "",
                f"Patching ceilings at layer {rows[0]['layer']} ({ceilings['split']} conflict pairs): the full "
                f"residual at the last entity token carries the source's value in "
                f"{_pct(ceilings.get('full_patch'))}, at every entity token in {_pct(ceilings.get('span_patch'))}.",
            ]
        lines += ["", verdict([c for c in summary.get("comparisons", []) if c["model"] == model]), ""]
    lines.append("Sources: " + ", ".join(f"`results/{s}`" for s in summary["sources"]) + ".")
    return "\n".join(lines) + "\n"


def ladder_brief(summary_path: Path) -> str:
    """README's form of the ladder: per model, one-to-one HyperDAS at each rung and the baselines in a
    line, the ceilings, and the verdict (the tables: docs/results.md)."""
    summary = read_json(summary_path)
    lines = []
    for model in sorted({r["model"] for r in summary["rows"]}):
        rows = [r for r in summary["rows"] if r["model"] == model]
        rungs = sorted((r for r in rows if r.get("mode") == "one_to_one"), key=lambda r: r["steps"])
        base = [r for r in rows if r["method"] != "hyperdas" and r.get("early_stopped", True)]

        def scored(r):
            fa = (r.get("follows_activations") or {}).get("mean")
            return f"{_pm(r['disentangle']['mean'], r['disentangle']['sd'])}" + (f" ({_pct(fa)})" if fa else "")

        hyper = "; ".join(f"{r['steps']:,} steps {scored(r)}" for r in rungs)
        others = "; ".join(f"{r['method'].upper()} {scored(r)}" for r in sorted(base, key=lambda r: r["method"]))
        ceilings = next((r["ceilings"] for r in rows if r.get("ceilings")), None)
        reach = (
            f" Patching reaches {_pct(ceilings.get('full_patch'))} (last entity token) and "
            f"{_pct(ceilings.get('span_patch'))} (every entity token) of the {ceilings['split']} conflict pairs."
            if ceilings
            else ""
        )
        lines += [
            f"**{model}**, layer {rows[0]['layer']}, test Disentangle (mean ± sd over seeds; in brackets, how "
            f"often the edit's output follows the swapped-in activations): one-to-one HyperDAS {hyper}; "
            f"early-stopped {others or 'baselines not run'}.{reach}",
            "",
            verdict([c for c in summary.get("comparisons", []) if c["model"] == model]),
            "",
        ]
        budgets = [c for c in summary.get("budgets", []) if c["model"] == model and c["mode"] == "one_to_one"]
        if budgets:
            lines += [budget_verdict(budgets), ""]
    lines.append("Sources: " + ", ".join(f"`results/{s}`" for s in summary["sources"]) + ".")
    return "\n".join(lines) + "\n"


def budget_verdict(budgets: list[dict]) -> str:
    """One sentence: does a rung beat the default budget's rung of the same run on val (one-to-one,
    beyond its interval, as faithful), i.e. should the default budget change."""
    reference = budgets[0]["reference_steps"]
    seeds = max(c["val_difference"]["seeds"][0] for c in budgets)  # how many seeds were scored on val
    each = "; ".join(
        f"{c['steps']:,} steps {c['val_difference']['estimate']:+.3f} {_interval(c['val_difference'])}"
        for c in sorted(budgets, key=lambda c: c["steps"])
    )
    wins = [f"{c['steps']:,}" for c in budgets if c["keep"]]
    head = (
        f"On val, one-to-one HyperDAS at {', '.join(wins)} steps beats the default {reference:,} beyond its interval"
        if wins
        else f"On val, no rung beats the default {reference:,} steps beyond its interval, so the profiles keep "
        f"{reference:,}"
    )
    return (
        f"{head} (one-to-one, each rung minus the {reference:,}-step rung of the same run on every val pair, "
        f"{seeds} seed(s): {each})."
    )


def verdict(comparisons: list[dict]) -> str:
    """Two sentences: where one-to-one HyperDAS beats early-stopped MDAS with faithful edits (the
    Disentangle difference's interval above zero, and following the activations no less often:
    that difference's interval not below zero), and where it does not."""
    mine = [
        c
        for c in comparisons
        if c["hyperdas"]["mode"] == "one_to_one"
        and c["baseline"]["method"] == "mdas"
        and c["baseline"]["early_stopped"]
    ]
    if not mine:
        return (
            "No ladder run and MDAS run here kept per-pair outcomes on the same pairs, so no comparison is stated "
            "(`python -m hyperdas.ladder --baselines` writes MDAS's)."
        )

    def step(c):
        return f"step {c['hyperdas']['steps']:,}"

    def faithful(c):
        found = c.get("follows_activations_difference")
        return found is not None and found["low"] >= 0

    wins = [c for c in mine if c["disentangle_difference"]["low"] > 0 and faithful(c)]
    rest = [c for c in mine if c not in wins]

    def described(c):
        d = c["disentangle_difference"]
        kind = "above" if d["low"] > 0 else "below" if d["high"] < 0 else "not distinguishable"
        extra = "" if kind != "above" else ", but following the activations less often"
        return f"{step(c)} {d['estimate']:+.3f} {_interval(d)}, {kind}{extra}"

    first = (
        "One-to-one HyperDAS beats early-stopped MDAS with faithful edits at "
        + ", ".join(
            f"{step(c)} (Disentangle {c['disentangle_difference']['estimate']:+.3f} "
            f"{_interval(c['disentangle_difference'])})"
            for c in wins
        )
        + "."
        if wins
        else "At no rung does one-to-one HyperDAS beat early-stopped MDAS with an interval excluding zero and "
        "edits that follow the activations at least as often."
    )
    second = (
        ("Elsewhere (HyperDAS minus MDAS, Disentangle): " + "; ".join(described(c) for c in rest) + ".") if rest else ""
    )
    seeds = sorted({tuple(c["disentangle_difference"]["seeds"]) for c in mine})
    counts = "; ".join(f"HyperDAS {a} seed(s), MDAS {b}" for a, b in seeds)
    note = f"(95% paired bootstrap intervals over the seeds that kept per-pair outcomes: {counts}.)"
    return " ".join(part for part in (first, second, note) if part)


def paper(reference: Path) -> str:
    """The paper's overall numbers, labelled as the paper's."""
    ref = read_json(reference)
    overall = {e["method"]: e for e in ref.get("main", []) if e["domain"] == "all"}
    parts = [f"{method} Disentangle {_num(e['disentangle'])}" for method, e in sorted(overall.items())]
    return (
        f"The paper's numbers, for comparison only ({ref['model']}, all five RAVEL domains; not produced here; "
        f"`results/reference/{reference.name}`): " + ", ".join(parts) + ".\n"
    )


def sections(root: str | Path) -> dict[str, str]:
    root = Path(root)
    out = {
        "headline": headline(root / HEADLINE, HEADLINE),
        "paper": paper(root / "reference" / "llama3-8b.json"),
    }
    if (root / "ladder.json").is_file():
        out["ladder"] = ladder_brief(root / "ladder.json")
    return out


def fill(text: str, rendered: dict[str, str]) -> str:
    """`text` with every marked section's body replaced by its render; an unknown name is refused."""

    def body(match: re.Match) -> str:
        name = match["name"]
        if name not in rendered:
            raise KeyError(f"no generated section {name!r} (known: {sorted(rendered)})")
        return match.group(1) + rendered[name] + match.group(4)

    return MARK.sub(body, text)


def stale(path: str | Path, rendered: dict[str, str]) -> list[str]:
    """Names of the sections of `path` whose text differs from their render."""
    text = Path(path).read_text()
    return [m["name"] for m in MARK.finditer(text) if m["body"] != rendered.get(m["name"])]
