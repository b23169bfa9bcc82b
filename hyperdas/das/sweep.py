"""Choosing DAS/MDAS layer and k from a validation sweep (`benchmarks/das_sweep.py`)."""

from __future__ import annotations


def best_per_method(runs: list[dict]) -> dict:
    """{method: {layer, k, val_disentangle}}: the (layer, k) with the highest val Disentangle, averaged
    over the attributes each was run on."""
    by_cell: dict[tuple, list[float]] = {}
    for r in runs:
        if r["kind"] != "full_patch":
            cell = (r["kind"], r["config"]["layer"], r["config"]["k"])
            by_cell.setdefault(cell, []).append(r["val"]["disentangle"])
    best: dict[str, dict] = {}
    for (method, layer, k), scores in sorted(by_cell.items()):
        mean = sum(scores) / len(scores)
        if method not in best or mean > best[method]["val_disentangle"]:
            best[method] = {"layer": layer, "k": k, "val_disentangle": mean}
    return best
