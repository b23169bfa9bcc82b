"""Choosing DAS/MDAS layer and k from a validation sweep (`benchmarks/das_sweep.py`)."""

from __future__ import annotations

PATCHES = ("full_patch", "span_patch")  # reference rows of a sweep: nothing trained, nothing chosen


def best_per_method(runs: list[dict]) -> dict:
    """{method: {layer, k, val_disentangle}}: the (layer, k) with the highest val Disentangle, averaged
    over the attributes each was run on."""
    by_cell: dict[tuple, list[float]] = {}
    for r in runs:
        if r["kind"] not in PATCHES:
            cell = (r["kind"], r["config"]["layer"], r["config"]["k"])
            by_cell.setdefault(cell, []).append(r["val"]["disentangle"])
    best: dict[str, dict] = {}
    for (method, layer, k), scores in sorted(by_cell.items()):
        mean = sum(scores) / len(scores)
        if method not in best or mean > best[method]["val_disentangle"]:
            best[method] = {"layer": layer, "k": k, "val_disentangle": mean}
    return best


def conflict_by_layer(runs: list[dict]) -> dict:
    """{kind: {layer: share}}: per method (full patch included) and layer, the mean share of conflict
    pairs whose output follows the swapped-in activations, over the attributes and k; runs without a
    conflict score are left out."""
    by_cell: dict[tuple, list[float]] = {}
    for r in runs:
        if r.get("conflict"):
            by_cell.setdefault((r["kind"], r["config"]["layer"]), []).append(r["conflict"]["follows_activations"])
    out: dict[str, dict] = {}
    for (kind, layer), shares in sorted(by_cell.items()):
        out.setdefault(kind, {})[str(layer)] = sum(shares) / len(shares)
    return out
