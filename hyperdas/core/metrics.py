"""RAVEL's metrics as pure functions: per-example exact match, Cause / Iso / Disentangle.

Aggregation follows RAVEL: accuracy per base template, averaged over templates, then over
(queried) attributes, then over domains. Cause for an instructed attribute A reads its causal rows;
Iso for A reads its isolate rows, whose queried attributes are the others.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from statistics import mean

MAX_ANSWER_TOKENS = 3


def exact_match(predicted: list[int], expected: list[int], max_tokens: int = MAX_ANSWER_TOKENS) -> bool:
    """Argmax tokens equal the expected answer's tokens at each of its first <= max_tokens positions."""
    expected = list(expected)[:max_tokens]
    return bool(expected) and list(predicted)[: len(expected)] == expected


def _macro(rows: list[Mapping]) -> float | None:
    """Mean over queried attributes of the mean over base templates of accuracy."""
    if not rows:
        return None
    by_attribute: dict[str, dict[str, list[bool]]] = defaultdict(lambda: defaultdict(list))
    for row in rows:
        by_attribute[row["attribute"]][row["base_template"]].append(bool(row["correct"]))
    return mean(mean(mean(hits) for hits in per_template.values()) for per_template in by_attribute.values())


def disentangle(cause: float | None, iso: float | None) -> float | None:
    if cause is None or iso is None:
        return cause if iso is None else iso
    return 0.5 * (cause + iso)


def scores(rows: Iterable[Mapping]) -> dict:
    """Cause / Iso / Disentangle per (domain, instructed attribute), per domain and overall.

    Each row needs: domain, target_attribute, attribute (queried), base_template, attribute_type
    ("causal" | "isolate") and correct (bool).
    """
    grouped: dict[str, dict[str, dict[str, list]]] = defaultdict(lambda: defaultdict(lambda: defaultdict(list)))
    for row in rows:
        kind = row["attribute_type"]
        if kind not in ("causal", "isolate"):
            raise ValueError(f"attribute_type must be causal or isolate, got {kind!r}")
        grouped[row["domain"]][row["target_attribute"]][kind].append(row)
    per_attribute, per_domain = {}, {}
    for domain, attributes in sorted(grouped.items()):
        per_attribute[domain] = {}
        for attribute, kinds in sorted(attributes.items()):
            cause, iso = _macro(kinds["causal"]), _macro(kinds["isolate"])
            per_attribute[domain][attribute] = {
                "cause": cause,
                "iso": iso,
                "disentangle": disentangle(cause, iso),
                "n_causal": len(kinds["causal"]),
                "n_isolate": len(kinds["isolate"]),
            }
        per_domain[domain] = _mean_scores(per_attribute[domain].values())
    return {"per_attribute": per_attribute, "per_domain": per_domain, "overall": _mean_scores(per_domain.values())}


def _mean_scores(items) -> dict:
    items = list(items)
    out = {}
    for key in ("cause", "iso", "disentangle"):
        values = [i[key] for i in items if i[key] is not None]
        out[key] = mean(values) if values else None
    return out


def faithfulness_columns(block: dict, mode: str) -> dict:
    """One inference mode's faithfulness as flat table columns, from a results file's `faithfulness`
    block (`hyperdas.experiments.faithfulness`): the conflict shares, held-out-entity Disentangle and
    the query-blind control's Cause / Iso / Disentangle (when the block has them)."""
    conflict = block["conflict"][mode]
    row = {
        "follows_activations": conflict["follows_activations"],
        "follows_instruction": conflict["follows_instruction"],
    }
    if "test_entity" in block:
        row["test_entity_disentangle"] = block["test_entity"][mode]["disentangle"]
    if "query_blind" in block:
        row.update({f"query_blind_{m}": block["query_blind"][mode][m] for m in ("cause", "iso", "disentangle")})
    return row
