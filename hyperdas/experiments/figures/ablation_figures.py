"""The ablations' figures (blocks x cross-attention, sparsity, selections, Householder vectors,
initialisation, leakage controls), from `ablations.json` and the saved selections only."""

from __future__ import annotations

import json

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from hyperdas.experiments.figures import style as look
from hyperdas.experiments.figures.results import METRICS, PAPER, Missing, Results


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
        look.selection_heatmap(ax, e, source_labels=n == 0 or not same_rows, colour_bar=last)
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


def _saved(results: Results, name: str, needs: str = "notebook 03"):
    """A file notebook 03 saved under selections/, or, when it trained the domains apart, the first
    domain's (selections/<domain>/, in the order the domains were trained)."""
    folder = results.folder / "selections"
    if (folder / name).is_file():
        return folder / name
    order = {d: i for i, d in enumerate(results.json("hyperdas.json").get("outcomes", {}))}
    found = sorted(folder.glob(f"*/{name}"), key=lambda p: (order.get(p.parent.name, len(order)), p.parent.name))
    if not found:
        raise Missing(f"{folder / name} is missing ({needs})")
    return found[0]


def selection_example(results: Results):
    path = _saved(results, "test_examples.json")
    saved = json.loads(path.read_text())
    first = min(s["example"] for s in saved)
    return _heatmaps([(s["mode"], s) for s in saved if s["example"] == first])


def householder(results: Results):
    path = _saved(results, "householder.json", "notebook 03 with subspace='householder'")
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
