"""The paper-layout main table: its LaTeX escapes every cell and compiles where pdflatex exists."""

import shutil
import subprocess

import pandas as pd
import pytest

from hyperdas.experiments import tables


def _frame():
    rows = []
    for method in ("HyperDAS (one-to-one)", "HyperDAS (soft)", "MDAS", "full patch"):
        for attribute in ("Country_x", "mean"):
            rows.append(
                {
                    "domain": "city & co",
                    "attribute": attribute,
                    "method": method,
                    "cause": 0.5,
                    "iso": 0.25,
                    "disentangle": 0.375,
                    "cause_sd": 0.01 if method != "full patch" else float("nan"),
                    "follows_activations": 0.6 if attribute == "mean" else float("nan"),
                }
            )
    return pd.DataFrame(rows).set_index(["domain", "attribute", "method"])


def test_latex_special_characters_are_escaped():
    assert tables.latex_escape("a_b%c&d#e$f{g}h~i^j\\k") == (
        r"a\_b\%c\&d\#e\$f\{g\}h\textasciitilde{}i\textasciicircum{}j\textbackslash{}k"
    )
    reference = [{"domain": "all", "method": "MDAS", "cause": 0.645, "iso": 0.874, "disentangle": 0.76}]
    text = tables.latex(tables.paper_layout(_frame(), reference), "ours_and 50% of theirs")
    assert r"city \& co & Country\_x & 0.500 $\pm$ 0.010" in text and r"ours\_and 50\% of theirs" in text
    body = text.replace("\\_", "").replace("\\%", "").replace("\\&", "")
    assert "_" not in body and "%" not in body and "&" in text
    assert r"\multicolumn{3}{c}{MDAS}" in text and r"\emph{paper (Llama3-8B)}" in text


def test_rows_follow_the_papers_layout_with_the_papers_values_apart():
    reference = [
        {"domain": "all", "method": "MDAS", "cause": 0.645, "iso": 0.874, "disentangle": 0.76},
        {"domain": "all", "method": "HyperDAS (soft)", "cause": 0.815, "iso": 0.952, "disentangle": 0.884},
    ]
    rows = tables.paper_layout(_frame(), reference)
    assert [(r["group"], r["attribute"]) for r in rows] == [
        ("ours", "Country_x"),
        ("ours", "mean"),
        ("paper (Llama3-8B)", "mean"),
    ]
    assert rows[0][("HyperDAS (one-to-one)", "cause")] == "0.500 ± 0.010"
    assert rows[0][("full patch", "cause")] == "0.500" and rows[0][("DAS", "cause")] == ""
    assert rows[2][("HyperDAS (soft)", "disentangle")] == "0.884" and rows[2][("MDAS", "iso")] == "0.874"
    faithful = tables.faithfulness_rows(_frame())
    assert {r["method"]: r["follows_activations"] for r in faithful}["MDAS"] == "0.600"


@pytest.mark.skipif(shutil.which("pdflatex") is None, reason="pdflatex is not installed on this machine")
def test_the_latex_table_compiles(tmp_path):
    table = tables.latex(tables.paper_layout(_frame()), "a caption")
    document = (
        "\\documentclass{article}\\usepackage{booktabs}\\usepackage[utf8]{inputenc}\\begin{document}\n"
        + table
        + "\\end{document}\n"
    )
    (tmp_path / "t.tex").write_text(document)
    done = subprocess.run(["pdflatex", "-interaction=nonstopmode", "t.tex"], cwd=tmp_path, capture_output=True)
    assert done.returncode == 0, done.stdout[-2000:]


def test_the_papers_per_attribute_rows_appear_only_for_domains_measured_here():
    reference = [
        {"domain": "city & co", "method": "MDAS", "cause": 0.563, "iso": 0.779, "disentangle": 0.671},
        {"domain": "verb", "method": "MDAS", "cause": 0.743, "iso": 0.796, "disentangle": 0.77},
        {"domain": "city & co", "attribute": "Country_x", "method": "MDAS", "cause": 0.808, "iso": 0.665},
        {"domain": "verb", "attribute": "Singular", "method": "MDAS", "cause": 0.769, "iso": 0.811},
    ]
    paper = [(r["domain"], r["attribute"]) for r in tables.paper_layout(_frame(), reference) if r["group"] != "ours"]
    assert paper == [("city & co", "Country_x"), ("city & co", "mean"), ("verb", "mean")]


def test_a_method_without_any_value_gets_no_column_group():
    text = tables.markdown(tables.paper_layout(_frame(), []))
    assert "MDAS Cause" in text and "Patching Cause" in text
    assert "DAS Cause" not in text.replace("MDAS Cause", "") and "PCA" not in text and "Random" not in text
