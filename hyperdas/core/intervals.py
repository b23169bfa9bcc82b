"""Confidence intervals computed from the results files alone.

A results file keeps the keys of its scored test rows once (`row_keys`) and, for each scored model,
its per-row outcomes in the same order as one string (`hit_string`: "1" correct, "0" not; conflict
outcomes as `conflict_string`: "a" activations, "i" instruction, "n" neither). From those,
`interval` gives a score's mean over seeds with a percentile bootstrap interval, and the paired
difference of two methods scored on the same rows: each resample draws the rows (the same rows for
both methods) and, per method, the seeds, with replacement.

RAVEL's Disentangle is a nested mean (`hyperdas.core.metrics.scores`): accuracy per base template,
then per queried attribute, per instructed attribute and domain. Rows are therefore resampled within
their (domain, instructed attribute, kind, queried attribute, template) cell, so every cell keeps its
size and the score stays a fixed weighted sum of cell accuracies (`cell_weights`).
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np

KEYS = ("domain", "target_attribute", "attribute", "base_template", "attribute_type")
CONFLICT = {"activations": "a", "instruction": "i", "neither": "n"}
LEVEL, RESAMPLES = 0.95, 2000


CODES = "".join(chr(c) for c in range(48, 127) if chr(c) not in '\\"')  # one character per distinct value


def row_keys(records: list[dict]) -> dict[str, dict]:
    """The keys that place each scored row in RAVEL's aggregation, compactly: per key, its distinct
    values and one character per row naming the row's value (`columns` reads them back)."""
    out = {}
    for k in KEYS:
        values = sorted({r[k] for r in records})
        if len(values) > len(CODES):
            raise ValueError(f"{len(values)} distinct {k} values: at most {len(CODES)} can be kept")
        code = {v: CODES[i] for i, v in enumerate(values)}
        out[k] = {"values": values, "codes": "".join(code[r[k]] for r in records)}
    return out


def columns(keys: dict[str, dict]) -> dict[str, list]:
    """`row_keys` as plain columns, one value per row."""
    return {k: [keys[k]["values"][CODES.index(c)] for c in keys[k]["codes"]] for k in KEYS}


def hit_string(records: list[dict]) -> str:
    return "".join("1" if r["correct"] else "0" for r in records)


def conflict_string(outcomes: list[str]) -> str:
    return "".join(CONFLICT[o] for o in outcomes)


def cell_weights(keys: dict[str, dict]) -> tuple[list[np.ndarray], np.ndarray]:
    """(row indices of each cell, each cell's weight in overall Disentangle)."""
    keys = columns(keys)
    n = len(keys["domain"])
    cells: dict[tuple, list[int]] = defaultdict(list)
    for i in range(n):
        cells[tuple(keys[k][i] for k in KEYS)].append(i)
    names = sorted(cells)
    # nested structure: domain -> instructed attribute -> kind -> queried attribute -> templates
    tree: dict = defaultdict(lambda: defaultdict(lambda: defaultdict(lambda: defaultdict(list))))
    for c, (domain, target, attribute, _template, kind) in enumerate(names):
        tree[domain][target][kind][attribute].append(c)
    weights = np.zeros(len(names))
    for targets in tree.values():
        for kinds in targets.values():
            for queried in kinds.values():  # Disentangle = mean of Cause and Iso (either alone if one is missing)
                for templates in queried.values():
                    for c in templates:
                        weights[c] = 1 / (len(tree) * len(targets) * len(kinds) * len(queried) * len(templates))
    return [np.array(cells[c]) for c in names], weights


def _values(strings: list[str], symbol: str) -> np.ndarray:
    return np.array([[ch == symbol for ch in s] for s in strings], dtype=float)


def interval(
    a: list[str],
    b: list[str] | None = None,
    keys: dict[str, dict] | None = None,
    symbol: str = "1",
    resamples: int = RESAMPLES,
    level: float = LEVEL,
    seed: int = 0,
) -> dict:
    """Estimate and percentile interval of a score (or of `a` minus `b`).

    `a`, `b`: one outcome string per seed, over the same rows in the same order. With `keys`, the
    score is overall Disentangle (hits "1"); without, the share of rows equal to `symbol` (e.g. "a":
    follows the activations)."""
    strings = a + (b or [])
    if not a or len({len(s) for s in strings}) != 1:
        raise ValueError("interval needs at least one outcome string, all over the same rows")
    n = len(a[0])
    cells, weights = cell_weights(keys) if keys else ([np.arange(n)], np.ones(1))
    rng = np.random.default_rng(seed)
    # per resample: the same rows for both methods, drawn within each cell
    drawn = [c[rng.integers(0, len(c), size=(resamples, len(c)))] for c in cells]

    def scores(values: np.ndarray) -> tuple[float, np.ndarray]:
        observed = np.array([[v[c].mean() for c in cells] for v in values]) @ weights
        per_seed = np.stack([np.stack([v[d].mean(axis=1) for d in drawn], axis=1) @ weights for v in values])
        pick = rng.integers(0, len(values), size=(resamples, len(values)))
        return float(observed.mean()), per_seed[pick, np.arange(resamples)[:, None]].mean(axis=1)

    estimate, boot = scores(_values(a, symbol))
    if b:
        other, boot_b = scores(_values(b, symbol))
        estimate, boot = estimate - other, boot - boot_b
    low, high = np.quantile(boot, [(1 - level) / 2, (1 + level) / 2])
    out = {
        "estimate": estimate,
        "low": float(low),
        "high": float(high),
        "level": level,
        "resamples": resamples,
        "rows": n,
        "seeds": [len(a)] + ([len(b)] if b else []),
    }
    if b:
        out["distinguishable"] = bool(low > 0 or high < 0)
    return out


def placed(parts: list[tuple[list[int], str]], n: int) -> str:
    """One outcome string over `n` rows from `parts` (row indices, their outcomes) that together cover
    every row once: e.g. one baseline model per attribute, each scored on its attribute's rows."""
    out: list[str | None] = [None] * n
    for rows, outcomes in parts:
        if len(rows) != len(outcomes):
            raise ValueError(f"{len(rows)} row indices for {len(outcomes)} outcomes")
        for i, outcome in zip(rows, outcomes):
            if out[i] is not None:
                raise ValueError(f"row {i} has two outcomes")
            out[i] = outcome
    missing = out.count(None)
    if missing:
        raise ValueError(f"{missing} of {n} rows have no outcome")
    return "".join(out)  # type: ignore[arg-type]
