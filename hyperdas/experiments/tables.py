"""The main table in the paper's layout: rows domain / attribute, columns each method's Cause / Iso /
Disentangle (mean ± sd over seeds), the paper's values as their own group of rows (its HyperDAS is
the soft mode: compare soft with soft), and the faithfulness columns in a compact table of their
own. Written as Markdown and as LaTeX with booktabs (`\\usepackage{booktabs}`), every cell escaped.
"""

from __future__ import annotations

import math

import pandas as pd

METHODS = (
    ("HyperDAS (one-to-one)", "HyperDAS one-to-one"),
    ("HyperDAS (soft)", "HyperDAS soft"),
    ("HyperDAS (one-to-many)", "HyperDAS one-to-many"),
    ("MDAS", "MDAS"),
    ("DAS", "DAS"),
    ("full patch", "Patching"),
    ("PCA subspace", "PCA"),
    ("random subspace", "Random"),
)
METRICS = (("cause", "Cause"), ("iso", "Iso"), ("disentangle", "Dis."))
FAITHFUL = (
    ("follows_activations", "follows activations"),
    ("follows_instruction", "follows instruction"),
    ("test_entity_disentangle", "held-out Dis."),
    ("query_blind_cause", "query-blind Cause"),
    ("query_blind_iso", "query-blind Iso"),
)
LATEX_SPECIAL = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
}


def latex_escape(text: str) -> str:
    return "".join(LATEX_SPECIAL.get(ch, ch) for ch in str(text))


def _cell(value, sd=None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if sd is None or (isinstance(sd, float) and math.isnan(sd)):
        return f"{value:.3f}"
    return f"{value:.3f} ± {sd:.3f}"


def paper_layout(table: pd.DataFrame, reference: list[dict] | None = None) -> list[dict]:
    """Rows {group, domain, attribute, (method, metric): cell} from `plots.main_table`'s frame, then
    the paper's values (`reference`: `results/reference/llama3-8b.json` → main, per domain, and
    mdas_per_attribute, whose rows are kept for the domains measured here)."""
    frame = table.reset_index()
    rows = []
    for (domain, attribute), part in frame.groupby(["domain", "attribute"], sort=False):
        row = {"group": "ours", "domain": domain, "attribute": attribute}
        for method, _ in METHODS:
            found = part[part["method"] == method]
            for metric, _ in METRICS:
                r = found.iloc[0].to_dict() if len(found) else {}
                row[(method, metric)] = _cell(r.get(metric), r.get(f"{metric}_sd"))
        rows.append(row)
    rows.sort(key=lambda r: (r["domain"], r["attribute"] == "mean", r["attribute"]))
    ours = {r["domain"] for r in rows}
    by_row: dict[tuple[str, str], dict[str, dict]] = {}
    for entry in reference or []:  # per-attribute values only for the domains measured here
        attribute = entry.get("attribute", "mean")
        if attribute == "mean" or entry["domain"] in ours:
            by_row.setdefault((entry["domain"], attribute), {})[entry["method"]] = entry
    order = sorted(by_row, key=lambda key: (key[0] == "all", key[0], key[1] == "mean", key[1]))
    for domain, attribute in order:
        entries = by_row[(domain, attribute)]
        row = {"group": "paper (Llama3-8B)", "domain": domain, "attribute": attribute}
        for method, _ in METHODS:
            for metric, _ in METRICS:
                row[(method, metric)] = _cell(entries[method].get(metric)) if method in entries else ""
        rows.append(row)
    return rows


def faithfulness_rows(table: pd.DataFrame) -> list[dict]:
    """The mean rows' faithfulness columns, one row per (domain, method)."""
    frame = table.reset_index()
    mean = frame[frame["attribute"] == "mean"]
    rows = []
    for _, r in mean.iterrows():
        row = {"domain": r["domain"], "method": r["method"]}
        for column, _ in FAITHFUL:
            row[column] = _cell(r.get(column), r.get(f"{column}_sd"))
        rows.append(row)
    return rows


def present(rows: list[dict]) -> list[tuple[str, str]]:
    """The METHODS with at least one value in `rows`: a method no run and no paper row has gets no
    empty column group."""
    return [(m, short) for m, short in METHODS if any(r[(m, k)] for r in rows for k, _ in METRICS)]


def markdown(rows: list[dict]) -> str:
    methods = present(rows)
    header = ["", "domain", "attribute"] + [f"{short} {label}" for _, short in methods for _, label in METRICS]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        cells = [r["group"], r["domain"], r["attribute"]] + [r[(m, k)] for m, _ in methods for k, _ in METRICS]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def faithfulness_markdown(rows: list[dict]) -> str:
    header = ["domain", "method"] + [label for _, label in FAITHFUL]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join([r["domain"], r["method"]] + [r[c] for c, _ in FAITHFUL]) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def latex(rows: list[dict], caption: str) -> str:
    """A booktabs table: a method per column group (Cause / Iso / Dis.), a rule between groups."""
    methods = present(rows)
    n = len(methods) * len(METRICS)
    lines = [
        r"\begin{table}[t]",
        r"\centering\small",
        r"\setlength{\tabcolsep}{3pt}",
        r"\begin{tabular}{ll" + "c" * n + "}",
        r"\toprule",
        " & ".join(["", ""] + [rf"\multicolumn{{3}}{{c}}{{{latex_escape(short)}}}" for _, short in methods]) + r" \\",
        " ".join(rf"\cmidrule(lr){{{3 + 3 * i}-{5 + 3 * i}}}" for i in range(len(methods))),
        " & ".join(["Domain", "Attribute"] + [label for _ in methods for _, label in METRICS]) + r" \\",
        r"\midrule",
    ]
    group = None
    for r in rows:
        if r["group"] != group:
            if group is not None:
                lines.append(r"\midrule")
            lines.append(rf"\multicolumn{{{n + 2}}}{{l}}{{\emph{{{latex_escape(r['group'])}}}}} \\")
            group = r["group"]
        cells = [latex_escape(r["domain"]), latex_escape(r["attribute"])]
        cells += [latex_escape(r[(m, k)]).replace("±", r"$\pm$") for m, _ in methods for k, _ in METRICS]
        lines.append(" & ".join(cells) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}", rf"\caption{{{latex_escape(caption)}}}", r"\end{table}"]
    return "\n".join(lines) + "\n"
