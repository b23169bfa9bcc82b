"""The paper's figures and tables, one function each, from results files only (notebook 05).

Every figure function takes a `Results` (the files of one results folder, read lazily) and returns
a matplotlib Figure, or raises `Missing` naming the file or record it lacks, so the notebook can
skip it with that reason. Nothing here trains or evaluates a model. The paper's Llama3-8B numbers
come from `results/reference/` and are always drawn as such ("paper, Llama3-8B"), never mixed with
ours. The figures live one family per module in `hyperdas.experiments.figures`; this module
registers them (`FIGURES`) and writes them all (`make_all`).
"""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib.pyplot as plt

from hyperdas.experiments.figures.ablation_figures import (
    blocks_cross_attention,
    householder,
    initialisation,
    leakage_controls,
    selection_example,
    sparsity_heatmaps,
)
from hyperdas.experiments.figures.domains import domain_selections
from hyperdas.experiments.figures.main_table import (
    main_bars,
    main_table,
    reference_table,
    seeds_caption,
    speed_table,
    variants_table,
    write_tables,
)
from hyperdas.experiments.figures.results import (
    METRICS,
    ORDER,
    PAPER,
    REFERENCE_DIR,
    SCHEMA,
    Missing,
    Results,
    SchemaError,
    style,
)
from hyperdas.experiments.figures.sweeps import convergence, dimension_sweep, k_tradeoff, layer_sweep

__all__ = [
    "FIGURES",
    "METRICS",
    "ORDER",
    "PAPER",
    "REFERENCE_DIR",
    "SCHEMA",
    "Missing",
    "Results",
    "SchemaError",
    "main_table",
    "make_all",
    "reference_table",
    "seeds_caption",
    "speed_table",
    "style",
    "variants_table",
    "write_tables",
]


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
    "dimension_sweep": dimension_sweep,
    "convergence": convergence,
    "blocks_cross_attention": blocks_cross_attention,
    "sparsity_heatmaps": sparsity_heatmaps,
    "selection_example": selection_example,
    "domain_selections": domain_selections,
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
