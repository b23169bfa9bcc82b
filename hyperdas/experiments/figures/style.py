"""One look for every figure: one name and one colour per method (the HyperDAS modes as shades of
one blue), the paper's values in a style of their own (grey, dotted or hatched), readable token
labels, and a check that no text of a drawn figure overlaps another text or hides data."""

from __future__ import annotations

import matplotlib
import seaborn as sns

HYPERDAS_MODES = {
    "one_to_one": "HyperDAS (one-to-one)",
    "one_to_many": "HyperDAS (one-to-many)",
    "soft": "HyperDAS (soft)",
}
COLOURS = {
    "HyperDAS (one-to-one)": "#1f5fa8",
    "HyperDAS (one-to-many)": "#4a86c8",
    "HyperDAS (soft)": "#8db8e3",
    "MDAS": "#d95f02",
    "DAS": "#7570b3",
    "full patch": "#4d4d4d",
    "entity-span patch": "#9a9a9a",
    "random subspace": "#b3b3b3",
    "PCA subspace": "#66a61e",
}
NAMES = {
    "mdas": "MDAS",
    "das": "DAS",
    "full": "full patch",
    "full_patch": "full patch",
    "span_patch": "entity-span patch",
    "random": "random subspace",
    "pca": "PCA subspace",
}
PAPER = {"color": "#8c8c8c", "ls": ":", "marker": ".", "hatch": "//"}


def apply() -> None:
    sns.set_theme(context="paper", style="whitegrid", palette="colorblind")
    matplotlib.rcParams.update({"figure.dpi": 110, "savefig.bbox": "tight", "axes.titlesize": 10})


def method_name(name: str) -> str:
    """The one printed name of a method or mode ('one_to_one' -> 'HyperDAS (one-to-one)', 'mdas' ->
    'MDAS'); names already printed pass through."""
    return HYPERDAS_MODES.get(name) or NAMES.get(name) or name


def colour(name: str, fallback_index: int = 0) -> str:
    return COLOURS.get(method_name(name)) or sns.color_palette("colorblind")[fallback_index % 10]


def palette(names) -> dict[str, str]:
    return {n: colour(n, i) for i, n in enumerate(names)}


def token_label(token: str) -> str:
    """A tokenizer's piece as a reader writes it: the byte-level space marker 'Ġ' and newline 'Ċ'
    become a space and '\\n', and a piece that is only spaces shows as '␣'."""
    text = token.replace("Ġ", " ").replace("Ċ", "\\n").replace("▁", " ")
    return text.strip() or "␣"


def snake_to_words(name: str) -> str:
    return name.replace("_", " ")


# --- the overlap check ----------------------------------------------------------------------------


def _undrawn_tick_labels(fig) -> set[int]:
    """Tick labels outside their axis's view: matplotlib keeps them (visible, at stale places) but
    never draws them."""
    out = set()
    for ax in fig.axes:
        for axis in (ax.xaxis, ax.yaxis):
            low, high = sorted(axis.get_view_interval())
            slack = (high - low) * 1e-9
            for tick in axis.get_major_ticks() + axis.get_minor_ticks():
                if not low - slack <= tick.get_loc() <= high + slack:
                    out |= {id(tick.label1), id(tick.label2)}
    return out


def _texts(fig):
    """Every drawn, non-empty text of `fig` with its window extent."""
    renderer = fig.canvas.get_renderer()
    undrawn = _undrawn_tick_labels(fig)
    out = []
    for text in fig.findobj(matplotlib.text.Text):
        if id(text) not in undrawn and text.get_visible() and text.get_text().strip() and text.get_alpha() != 0:
            box = text.get_window_extent(renderer)
            if box.width > 0 and box.height > 0:
                out.append((text, box))
    return out


def _legend_hides(legend, renderer) -> list[str]:
    """Data that `legend`'s box covers in its own axes: bars, and line points."""
    ax = legend.axes
    box = legend.get_window_extent(renderer)
    hidden = []
    for patch in ax.patches:
        extent = patch.get_window_extent(renderer)
        if patch.get_visible() and extent.height > 1 and extent.width > 1 and box.overlaps(extent):
            hidden.append(f"a bar at {patch.get_x():.2f}")
    for line in ax.lines:
        if not line.get_visible() or not len(line.get_xdata()):
            continue
        points = line.get_transform().transform(line.get_xydata())
        if any(box.contains(x, y) for x, y in points):
            hidden.append(f"line {line.get_label()!r}")
    return hidden


def overlaps(fig, pad: float = 0.5) -> list[str]:
    """What overlaps in the drawn `fig`: pairs of texts whose boxes intersect (by more than `pad`
    pixels each way), and legends that cover data of their axes. Nothing can leave the canvas: the
    figures are saved with a tight bounding box, which grows to every artist."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    texts = _texts(fig)
    found = []
    for i, (a, box_a) in enumerate(texts):
        for b, box_b in texts[i + 1 :]:
            if box_a.padded(-pad).overlaps(box_b.padded(-pad)):
                found.append(f"text {a.get_text()!r} overlaps {b.get_text()!r}")
    owners = {id(t): ax for ax in fig.axes for t in ax.findobj(matplotlib.text.Text)}
    for text, box in texts:  # a panel's labels drawn over a neighbouring panel
        owner = owners.get(id(text))
        for ax in fig.axes:
            if ax is owner or owner is None or not ax.get_visible() or not ax.axison:
                continue
            if box.padded(-pad).overlaps(ax.patch.get_window_extent(renderer)):
                found.append(f"text {text.get_text()!r} lies over the panel {ax.get_title() or ax.get_label()!r}")
    for ax in fig.axes:
        legend = ax.get_legend()
        if legend is not None and legend.get_visible():
            found += [f"the legend of {ax.get_title()!r} hides {what}" for what in _legend_hides(legend, renderer)]
    return found


# --- shared drawing -------------------------------------------------------------------------------


def grouped_bars(ax, rows: list[dict], groups: list[str], methods: list[str], hatch: str | None = None) -> None:
    """Bars of `rows` ({group, method, value, sd}) side by side per group, each method in its colour,
    with its sd as an error bar where one exists."""
    width = 0.8 / max(len(methods), 1)
    at = {(r["group"], r["method"]): r for r in rows}
    for m, method in enumerate(methods):
        xs, ys, errors = [], [], []
        for g, group in enumerate(groups):
            row = at.get((group, method))
            if row is not None:
                xs.append(g - 0.4 + width * (m + 0.5))
                ys.append(row["value"])
                errors.append(row.get("sd") or 0.0)
        if xs:
            ax.bar(xs, ys, width, color=colour(method, m), label=method, hatch=hatch, edgecolor="white", lw=0.5)
            if any(errors):
                ax.errorbar(xs, ys, yerr=errors, fmt="none", ecolor="#222222", capsize=2, lw=0.8)
    ax.set_xticks(range(len(groups)), [wrapped(g) for g in groups])


def wrapped(label: str, width: int = 11) -> str:
    """A category label on as many lines as it needs ('nobel_prize_winner' -> 'nobel prize\\nwinner')."""
    words, lines = snake_to_words(label).split(), [""]
    for word in words:
        if lines[-1] and len(lines[-1]) + 1 + len(word) > width:
            lines.append(word)
        else:
            lines[-1] = f"{lines[-1]} {word}".strip()
    return "\n".join(lines)


def legend_below(fig, axes, ncol: int = 4) -> None:
    """One legend for the whole figure, under its panels (so that it hides no data), without repeats."""
    seen = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            seen.setdefault(label, handle)
        if ax.get_legend() is not None:
            ax.get_legend().remove()
    fig.tight_layout()
    fig.legend(seen.values(), seen.keys(), loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=ncol, frameon=False)


def selection_heatmap(ax, entry: dict, source_labels: bool = True, colour_bar: bool = False) -> None:
    """One saved selection matrix (source tokens x base tokens, weights in [0, 1]) on `ax`."""
    sns.heatmap(
        entry["A"],
        ax=ax,
        cmap="viridis",
        vmin=0,
        vmax=1,
        xticklabels=[token_label(t) for t in entry["base_tokens"]],
        yticklabels=[token_label(t) for t in entry["source_tokens"]] if source_labels else False,
        cbar=colour_bar,
        cbar_kws={"label": "selection weight"} if colour_bar else None,
    )
