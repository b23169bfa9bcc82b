"""The budget ladder figure: test Disentangle against training examples seen, one panel per model:
one-to-one and soft HyperDAS at each rung of the ladder, DAS and MDAS where their early stopping on
val left them and, hollow, trained to a fixed budget (examples summed over the attributes, one model
each), and the paper's one-to-one
convergence on Llama3-8B (its steps x batch 16) in a style of its own."""

from __future__ import annotations

import matplotlib.pyplot as plt

from hyperdas.experiments.figures import style

MARKERS = {"one_to_one": "o", "soft": "^", "mdas": "s", "das": "D"}
HYPERDAS_MODES = {m: (style.method_name(m), style.colour(m), MARKERS[m]) for m in ("one_to_one", "soft")}
BASELINES = {m: (style.method_name(m), style.colour(m), MARKERS[m]) for m in ("mdas", "das")}
PAPER_BATCH = 16


def _errorbar(ax, rows: list[dict], label: str, colour: str, marker: str, line: bool, hollow: bool = False) -> None:
    xs = [r["examples_seen"] for r in rows]
    ys = [r["disentangle"]["mean"] for r in rows]
    errors = [r["disentangle"]["sd"] or 0.0 for r in rows]
    face = "white" if hollow else colour
    ax.errorbar(
        xs, ys, yerr=errors, label=label, color=colour, marker=marker, mfc=face, capsize=3, ls="-" if line else "none"
    )


def ladder_figure(summary: dict, paper: list[dict] | None = None):
    """`summary`: `results/ladder.json`; `paper`: [{"step", "disentangle"}] of the paper's curve."""
    rows = summary["rows"]
    models = sorted({r["model"] for r in rows if r["method"] == "hyperdas"})
    fig, axes = plt.subplots(1, len(models), figsize=(5.2 * len(models), 3.8), squeeze=False)
    for ax, model in zip(axes[0], models):
        mine = [r for r in rows if r["model"] == model]
        for mode, (label, colour, marker) in HYPERDAS_MODES.items():
            line = sorted((r for r in mine if r["mode"] == mode), key=lambda r: r["examples_seen"])
            if line:
                _errorbar(ax, line, label, colour, marker, line=True)
        for method, (label, colour, marker) in BASELINES.items():
            for early, how in ((True, "early-stopped"), (False, "fixed budget")):
                points = [r for r in mine if r["method"] == method and r.get("early_stopped", True) == early]
                if points:
                    _errorbar(ax, points, f"{label} ({how})", colour, marker, line=False, hollow=not early)
        if paper:
            ax.plot(
                [max(p["step"], 1) * PAPER_BATCH for p in paper],
                [p["disentangle"] for p in paper],
                color=style.PAPER["color"],
                ls=style.PAPER["ls"],
                marker=style.PAPER["marker"],
                label="paper, Llama3-8B, one-to-one",
            )
        layer = mine[0]["layer"]
        ax.set(xscale="log", ylim=(0, 1), xlabel="training examples seen", ylabel="test Disentangle")
        ax.set_title(f"{model}, layer {layer}")
    style.legend_below(fig, axes[0], ncol=3)
    return fig
