"""Layer and dimension sweeps and the convergence curve, from results files only."""

from __future__ import annotations

import matplotlib
import matplotlib.pyplot as plt
import matplotlib.ticker
import pandas as pd
import seaborn as sns

from hyperdas.experiments.figures import style as look
from hyperdas.experiments.figures.results import METRICS, Missing, Results


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


def _dimension_points(results: Results) -> pd.DataFrame:
    """(method, k, cause, iso) on test, mean over attributes and seeds: the sweep's sections of
    `dimension_sweep.json` and the main runs at their own k (MDAS on the sweep's attributes)."""
    sweep = results.json("dimension_sweep.json")
    rows = [
        {"method": look.method_name(r["mode"]), "k": r["k"], **{m: r[m] for m in METRICS}, "attribute": r["attribute"]}
        for key, section in sweep.items()
        if key.startswith("hyperdas-k")
        for r in section["records"]
        if r["mode"] == "one_to_one"
    ]
    mdas = [r for key, section in sweep.items() if key.startswith("mdas-k") for r in section["records"]]
    rows += [{"method": "MDAS", "k": r["k"], **{m: r[m] for m in METRICS}, "attribute": r["attribute"]} for r in mdas]
    main = results.json("hyperdas.json")
    k = main["config"]["hyperdas"]["k"]
    rows += [
        {"method": look.method_name(r["mode"]), "k": k, **{m: r[m] for m in METRICS}, "attribute": r["attribute"]}
        for r in main["records"]
        if r["mode"] == "one_to_one"
    ]
    swept = {r["attribute"] for r in mdas}
    try:
        layer = main["records"][0]["layer"]
        rows += [
            {"method": "MDAS", "k": r["k"], **{m: r[m] for m in METRICS}, "attribute": r["attribute"]}
            for r in results.records("baselines.json")
            if r["method"] == "mdas" and r["layer"] == layer and r["attribute"] in swept
        ]
    except Missing:
        pass
    return pd.DataFrame(rows).groupby(["method", "k"], as_index=False)[list(METRICS)].mean()


def dimension_sweep(results: Results):
    """Cause against Iso as the subspace rank k grows (test), one-to-one HyperDAS and MDAS, from the
    dimension sweep of notebooks 02 and 03 (`sweep_ks`) and their main runs."""
    frame = _dimension_points(results)
    if frame.groupby("method")["k"].nunique().max() < 2:
        raise Missing("dimension_sweep.json holds no rank beside the main runs' (notebooks 02 / 03 sweep_ks)")
    fig, ax = plt.subplots(figsize=(5.5, 4.4))
    for n, (method, part) in enumerate(frame.groupby("method", sort=False)):
        part = part.sort_values("k")
        ax.plot(part["iso"], part["cause"], marker="o", ms=4, color=look.colour(method, n), label=method)
        for r in part.to_dict("records"):
            ax.annotate(f"k={r['k']}", (r["iso"], r["cause"]), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.set(title="Cause vs Iso across k (test)", xlabel="Iso (fraction)", ylabel="Cause (fraction)", xlim=(0, 1))
    ax.set_ylim(0, 1)
    look.legend_below(fig, [ax], ncol=2)
    return fig
