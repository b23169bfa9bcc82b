"""RAVEL per domain, from the results files alone: one-to-one HyperDAS against MDAS on each domain's
test pairs, with a paired bootstrap interval (`hyperdas.core.intervals`: the same pairs for both,
resampled within RAVEL's template cells), each method's faithfulness, notebook 01's known-entity
counts and the paper's per-domain values beside; and heatmaps of a few test selections per domain.

The HyperDAS side needs notebook 03's per-pair `outcomes` (kept per group since the per-domain
protocol), the MDAS side notebook 02's per-record `outcomes`; a domain without them gets its scores
and no interval.
"""

from __future__ import annotations

import json

import matplotlib.pyplot as plt
import numpy as np

from hyperdas.core.intervals import KEYS, columns, interval, row_keys
from hyperdas.experiments.figures import style as look
from hyperdas.experiments.figures.results import METRICS, Missing, Results, faithfulness_blocks

MODE = "one_to_one"  # the headline mode: a hard edit at the selected positions
ALL = "all domains"


def _subset_keys(keys: dict, positions: list[int]) -> dict:
    cols = columns(keys)
    return row_keys([{k: cols[k][i] for k in KEYS} for i in positions])


def hyperdas_hits(hyper: dict, domain: str, mode: str = MODE) -> tuple[list[int], list[str], dict] | None:
    """(the domain's rows in the whole test split, one hit string per seed, the rows' keys) as scored
    by the HyperDAS that served the domain (its own, or the all-domain one); None without outcomes."""
    saved = hyper.get("outcomes") or {}
    group = domain if domain in saved else "all" if "all" in saved else None
    if group is None:
        return None
    entry = saved[group]
    positions = [i for i, d in enumerate(columns(entry["keys"])["domain"]) if d == domain]
    hits = [seed[mode] for _, seed in sorted(entry["seeds"].items()) if mode in seed]
    if not positions or not hits:
        return None
    rows = [entry["rows"][i] for i in positions]
    return rows, ["".join(h[i] for i in positions) for h in hits], _subset_keys(entry["keys"], positions)


def baseline_hits(records: list[dict], method: str, domain: str, rows: list[int]) -> list[str] | None:
    """Per seed, the hits of `method`'s per-attribute models on `rows` (indices in the whole test
    split); None when some row has no saved outcome."""
    by_seed: dict[int, dict[int, str]] = {}
    for r in records:
        if r["method"] == method and r.get("domain") == domain and r.get("outcomes"):
            by_seed.setdefault(r.get("seed", 0), {}).update(zip(r["outcomes"]["rows"], r["outcomes"]["hits"]))
    strings = []
    for _, placed in sorted(by_seed.items()):
        if any(i not in placed for i in rows):
            return None
        strings.append("".join(placed[i] for i in rows))
    return strings or None


def _scores(records: list[dict]) -> dict | None:
    """Cause / Iso / Disentangle as the main table takes them: mean over attributes, then seeds."""
    if not records:
        return None
    by_seed: dict[int, list[dict]] = {}
    for r in records:
        by_seed.setdefault(r.get("seed", 0), []).append(r)
    means = [{m: np.mean([r[m] for r in rs]) for m in METRICS} for rs in by_seed.values()]
    return {m: float(np.mean([x[m] for x in means])) for m in METRICS}


def _hyperdas_faithfulness(hyper: dict, domain: str, mode: str) -> dict:
    blocks = faithfulness_blocks(hyper, domain)
    out = {"follows_activations": float(np.mean([b["conflict"][mode]["follows_activations"] for b in blocks]))}
    blind = [b["query_blind"][mode]["disentangle"] for b in blocks if mode in b.get("query_blind", {})]
    if blind:
        out["query_blind_disentangle"] = float(np.mean(blind))
    return out


def _baseline_faithfulness(records: list[dict]) -> dict:
    """Conflict shares pooled over the attributes' pairs, then the mean over seeds."""
    out = {}
    by_seed: dict[int, list[dict]] = {}
    for r in records:
        if r.get("conflict"):
            by_seed.setdefault(r.get("seed", 0), []).append(r["conflict"])
    if by_seed:
        shares = [
            sum(c["follows_activations"] * c["n"] for c in cs) / sum(c["n"] for c in cs) for cs in by_seed.values()
        ]
        out["follows_activations"] = float(np.mean(shares))
    blind = [r["query_blind"]["disentangle"] for r in records if r.get("query_blind")]
    if blind:
        out["query_blind_disentangle"] = float(np.mean(blind))
    return out


def _support(results: Results) -> dict[str, list[dict]]:
    try:
        rows = results.json("data_summary.json").get("support", [])
    except Missing:
        return {}
    out: dict[str, list[dict]] = {}
    for r in rows:
        out.setdefault(r["domain"], []).append(r)
    return out


def _known(support_row: dict) -> int:
    """Known entities, beyond chance where notebook 01 measured chance."""
    return support_row.get("known_beyond_chance", support_row["known_entities"])


def support_markdown(rows: list[dict]) -> str:
    """Notebook 01's known-entity rule (`data_summary.json → support`), one line per (domain, attribute):
    its counts, the chance check where measured, and whether it was kept or why not."""
    chance = any("wrong_pass" in r for r in rows)
    head = ["domain", "attribute", "known entities", "under a val / test template"]
    head += ["beyond chance", "passes: own / wrong value"] if chance else []
    lines = ["| " + " | ".join([*head, "training pairs", "kept"]) + " |", "|---" * (len(head) + 2) + "|"]
    for r in rows:
        cells = [r["domain"], r["attribute"], str(r["known_entities"]), f"{r['known_val']} / {r['known_test']}"]
        if chance:
            measured = "wrong_pass" in r
            cells += [str(r["known_beyond_chance"]) if measured else ""]
            cells += [f"{r['own_pass']:.0%} / {r['wrong_pass']:.0%}" if measured else ""]
        cells += [str(r.get("train_pairs") or ""), "yes" if r["kept"] else f"no: {r.get('why', '')}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _paper(results: Results) -> dict[tuple[str, str], float]:
    try:
        main = results.reference().get("main", [])
    except Missing:
        return {}
    return {(e["domain"], e["method"]): e["disentangle"] for e in main}


def _paper_row(paper: dict, domain: str, baseline: str) -> dict:
    return {"hyperdas": paper.get((domain, "HyperDAS (soft)")), baseline: paper.get((domain, baseline.upper()))}


def domain_comparisons(results: Results, mode: str = MODE, baseline: str = "mdas") -> list[dict]:
    """One row per domain (and one over all domains, the mean over domains as the paper takes it):
    HyperDAS in `mode` and `baseline` at HyperDAS's layer, their difference with its interval when
    both kept per-pair outcomes, faithfulness, known-entity counts, the paper's Disentangle."""
    hyper = results.json("hyperdas.json")
    layer = hyper["records"][0]["layer"]
    try:
        base = [r for r in results.records("baselines.json") if r["layer"] == layer]
    except Missing:
        base = []
    support, paper = _support(results), _paper(results)
    out, pooled = [], {"hits": [], "theirs": [], "keys": []}
    for domain in dict.fromkeys(r["domain"] for r in hyper["records"]):
        mine = [r for r in hyper["records"] if r["domain"] == domain and r["mode"] == mode]
        theirs = [r for r in base if r["method"] == baseline and r.get("domain") == domain]
        kept = [s for s in support.get(domain, []) if s["kept"]]
        row = {
            "domain": domain,
            "attributes": sorted({r["attribute"] for r in mine}),
            "known_entities": [min(map(_known, kept)), max(map(_known, kept))] if kept else None,
            "left_out": [s["attribute"] for s in support.get(domain, []) if not s["kept"]],
            "hyperdas": {**_scores(mine), **_hyperdas_faithfulness(hyper, domain, mode)},
            baseline: {**_scores(theirs), **_baseline_faithfulness(theirs)} if theirs else None,
            "paper": _paper_row(paper, domain, baseline),
        }
        found = hyperdas_hits(hyper, domain, mode)
        other = baseline_hits(theirs, baseline, domain, found[0]) if found else None
        if found and other:
            row["difference"] = interval(found[1], other, keys=found[2])
            pooled["hits"].append(found[1])
            pooled["theirs"].append(other)
            pooled["keys"].append(found[2])
        out.append(row)
    if len(out) > 1:
        out.append(_over_domains(out, baseline, pooled, paper))
    return out


def _over_domains(rows: list[dict], baseline: str, pooled: dict, paper: dict) -> dict:
    """The mean over domains, and its interval when every domain kept outcomes for the same seeds
    (the keys name each row's domain, so the nested mean stays a mean over domains)."""

    def mean(side: str, key: str):
        values = [r[side][key] for r in rows if r[side] and key in r[side]]
        return float(np.mean(values)) if len(values) == len(rows) else None

    row = {
        "domain": ALL,
        "hyperdas": {k: mean("hyperdas", k) for k in (*METRICS, "follows_activations")},
        baseline: {k: mean(baseline, k) for k in (*METRICS, "follows_activations")},
        "paper": _paper_row(paper, "all", baseline),
    }
    seeds = {(len(h), len(t)) for h, t in zip(pooled["hits"], pooled["theirs"])}
    if len(pooled["hits"]) == len(rows) and len(seeds) == 1:
        cols = [columns(k) for k in pooled["keys"]]
        keys = row_keys([{k: c[k][i] for k in KEYS} for c in cols for i in range(len(c["domain"]))])
        joined = [["".join(parts) for parts in zip(*side)] for side in (pooled["hits"], pooled["theirs"])]
        row["difference"] = interval(joined[0], joined[1], keys=keys)
    return row


def verdict(row: dict, baseline: str = "mdas") -> str:
    """One sentence: whether HyperDAS beats the baseline on this domain, by how much, how faithfully."""
    h, b, d = row["hyperdas"], row.get(baseline), row.get("difference")
    name = row["domain"]
    if b is None or b.get("disentangle") is None:
        return f"{name}: one-to-one HyperDAS Disentangle {h['disentangle']:.3f}; no {baseline.upper()} to compare."
    gap = h["disentangle"] - b["disentangle"]
    if d is None:
        call = f"{gap:+.3f} (no per-pair outcomes, no interval)"
    else:
        word = "beats" if d["low"] > 0 else "trails" if d["high"] < 0 else "is indistinguishable from"
        call = f"{d['estimate']:+.3f} [{d['low']:+.3f}, {d['high']:+.3f}]: HyperDAS {word} {baseline.upper()}"
    faithful = ""
    if h.get("follows_activations") is not None and b.get("follows_activations") is not None:
        faithful = (
            f"; the output follows the swapped-in activations in {h['follows_activations']:.0%} of conflict pairs "
            f"({baseline.upper()} {b['follows_activations']:.0%})"
        )
        if d is not None and d["low"] > 0 and h["follows_activations"] < b["follows_activations"]:
            faithful += ", less often than the baseline: not a faithful win"
    return (
        f"{name}: one-to-one HyperDAS {h['disentangle']:.3f} vs {baseline.upper()} {b['disentangle']:.3f}, "
        f"difference {call}{faithful}."
    )


def _cell(side: dict | None, key: str, pct: bool = False) -> str:
    value = (side or {}).get(key)
    return "" if value is None else f"{value:.0%}" if pct else f"{value:.3f}"


def domain_markdown(rows: list[dict], baseline: str = "mdas") -> str:
    """The per-domain table with the paper's Disentangle beside (Llama3-8B; its HyperDAS is soft)."""
    b = baseline.upper()
    lines = [
        f"| domain | attributes (known entities) | HyperDAS 1-1 Cause / Iso / Dis. | {b} Cause / Iso / Dis. | "
        f"difference [95%] | follows activations, HyperDAS / {b} | query-blind Dis., HyperDAS / {b} | "
        f"paper: HyperDAS soft / {b} Dis. |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        h, o, d = r["hyperdas"], r.get(baseline), r.get("difference")
        known = f" ({r['known_entities'][0]}-{r['known_entities'][1]})" if r.get("known_entities") else ""
        attrs = ", ".join(r.get("attributes", [])) + known
        if r.get("left_out"):
            attrs += f"; left out: {', '.join(r['left_out'])}"
        scores = [" / ".join(_cell(side, m) for m in METRICS) if side else "" for side in (h, o)]
        diff = f"{d['estimate']:+.3f} [{d['low']:+.3f}, {d['high']:+.3f}]" if d else ""
        follows = f"{_cell(h, 'follows_activations', True)} / {_cell(o, 'follows_activations', True)}"
        blind = f"{_cell(h, 'query_blind_disentangle')} / {_cell(o, 'query_blind_disentangle')}"
        paper = " / ".join(_cell(r["paper"], m) for m in ("hyperdas", baseline))
        cells = (r["domain"], attrs, *scores, diff, follows, blind, paper)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def domains_text(results: Results, baseline: str = "mdas") -> str:
    """domains.md: the per-domain table and one sentence per domain."""
    rows = domain_comparisons(results, baseline=baseline)
    return (
        f"Per domain ({results.model_name()}, test pairs; one-to-one HyperDAS minus {baseline.upper()} on the same "
        "pairs, 95% bootstrap interval; known entities: fewest-most over the kept attributes, "
        "beyond chance where notebook 01 measured it)\n\n"
        + domain_markdown(rows, baseline)
        + "\n"
        + "\n".join(f"- {verdict(r, baseline)}" for r in rows)
        + "\n"
    )


BASELINE_NAMES = {"das": "DAS", "mdas": "MDAS", "full": "full patch", "pca": "PCA", "random": "random"}


def baseline_domain_rows(results: Results) -> list[dict]:
    """Notebook 02 alone, per domain (and over domains): each method at the main layer, mean over the
    domain's attributes then seeds, with its faithfulness; the paper's MDAS (Llama3-8B) beside, as the
    mean over the same attributes (its per-attribute values) and over all of the domain's (its table)."""
    data = results.json("baselines.json")
    layer = data.get("main_layer", data["records"][0]["layer"])
    records = [r for r in data["records"] if r["layer"] == layer and r.get("domain")]
    reference = results.reference()
    per_attribute = {(e["domain"], e["attribute"]): e for e in reference.get("mdas_per_attribute", [])}
    per_domain = {e["domain"]: e for e in reference.get("main", []) if e["method"] == "MDAS"}
    rows = []
    for domain in dict.fromkeys(r["domain"] for r in records):
        mine = [r for r in records if r["domain"] == domain]
        attributes = sorted({r["attribute"] for r in mine})
        methods = {}
        for method in dict.fromkeys(r["method"] for r in mine):
            theirs = [r for r in mine if r["method"] == method]
            methods[method] = {**_scores(theirs), **_baseline_faithfulness(theirs)}
        same = [per_attribute.get((domain, a)) for a in attributes]
        paper = {
            "same_attributes": {m: float(np.mean([e[m] for e in same])) for m in METRICS} if all(same) else None,
            "domain": {m: per_domain[domain][m] for m in METRICS} if domain in per_domain else None,
        }
        rows.append({"domain": domain, "attributes": attributes, "layer": layer, "methods": methods, "paper": paper})
    if len(rows) > 1:  # a method's mean over domains where every domain has it
        shared = [m for m in rows[0]["methods"] if all(m in r["methods"] for r in rows)]
        over = {m: {k: float(np.mean([r["methods"][m][k] for r in rows])) for k in METRICS} for m in shared}
        rows.append({"domain": ALL, "attributes": [], "layer": layer, "methods": over, "paper": {}})
    return rows


def baseline_domain_markdown(rows: list[dict]) -> str:
    """One line per (domain, method), the paper's MDAS rows after each domain's."""
    lines = [
        "| domain | method | Cause | Iso | Disentangle | follows activations | query-blind Dis. |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        name = r["domain"] + (f" ({', '.join(r['attributes'])})" if r["attributes"] else "")
        for method, side in r["methods"].items():
            scores = [_cell(side, m) for m in METRICS]
            extra = [_cell(side, "follows_activations", True), _cell(side, "query_blind_disentangle")]
            lines.append("| " + " | ".join([name, BASELINE_NAMES.get(method, method), *scores, *extra]) + " |")
            name = ""
        for key, label in (("same_attributes", "these attributes"), ("domain", "all its attributes")):
            if r["paper"].get(key):
                cells = [_cell(r["paper"][key], m) for m in METRICS]
                lines.append("| " + " | ".join(["", f"paper MDAS, Llama3-8B ({label})", *cells, "", ""]) + " |")
    return "\n".join(lines) + "\n"


def domain_selections(results: Results, mode: str = MODE, n: int = 3):
    """Selection matrices of the first `n` saved test examples of every domain (notebook 03 saves them
    under selections/<domain>/ when the domains were trained apart), one row of panels per domain."""
    folders = sorted(p.parent for p in (results.folder / "selections").glob("*/test_examples.json"))
    if not folders:
        raise Missing(f"no {results.folder / 'selections'}/<domain>/test_examples.json (notebook 03, several domains)")
    saved = {f.name: json.loads((f / "test_examples.json").read_text()) for f in folders}
    saved = {domain: [s for s in entries if s["mode"] == mode] for domain, entries in saved.items()}
    width = min(n, max(len(v) for v in saved.values()))
    fig, axes = plt.subplots(len(saved), width, figsize=(4.6 * width, 3.9 * len(saved)), squeeze=False)
    for row, (domain, entries) in enumerate(saved.items()):
        for col in range(width):
            ax = axes[row, col]
            if col >= len(entries):
                ax.set_axis_off()
                continue
            e = entries[col]
            look.selection_heatmap(ax, e)
            ax.set_title(f"{look.snake_to_words(domain)}: {e.get('instruction', '')}", fontsize=8)
            ax.set(xlabel="base token", ylabel="source token" if col == 0 else "")
            ax.tick_params(labelsize=6)
    fig.tight_layout()
    return fig
