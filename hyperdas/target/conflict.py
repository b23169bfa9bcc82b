"""Scoring conflict pairs: does an intervention's output take the value of the swapped-in
activations or of the entity the instruction names (`hyperdas.experiments.leakage.conflict_rows`
builds the pairs)? Any method `evaluate` accepts can be scored, instruction-reading or not, so the
baselines and HyperDAS are measured on the same pairs the same way.
"""

from __future__ import annotations

from hyperdas.target.evaluate import encode, evaluate

OUTCOMES = ("activations", "instruction", "neither")


def conflict_outcomes(target, layer: int, method, rows: list[dict], encoder=None) -> dict:
    """Fractions of conflict rows whose output is the activations' value, the instruction's value,
    or neither (teacher-forced exact match, as everywhere), and the verdict (largest fraction).

    `encoder(rows)` encodes rows for `method` (HyperDAS needs its instructions); default `encode`."""
    encoder = encoder or (lambda r: encode(target.tokenizer, r))
    hits = [[r["correct"] for r in evaluate(target, layer, method, encoder(v))[1]] for v in conflict_variants(rows)]
    return outcome_fractions(*hits)


def conflict_variants(rows: list[dict]) -> tuple[list[dict], list[dict]]:
    """The conflict rows labelled with the activations' value, and with the instruction's value."""
    if not rows:
        raise ValueError("no conflict rows: the pairs need causal rows with at least two source values")
    return rows, [{**r, "counterfactual_target": r["instruction_target"]} for r in rows]


def outcome_fractions(activations: list[bool], instruction: list[bool]) -> dict:
    """Shares following the activations / the instruction / neither, from each label's hits."""
    outcome = ["activations" if a else "instruction" if i else "neither" for a, i in zip(activations, instruction)]
    fractions = {f"follows_{o}": outcome.count(o) / len(outcome) for o in OUTCOMES}
    verdict = max(OUTCOMES, key=lambda o: fractions[f"follows_{o}"])
    return {**fractions, "verdict": verdict, "n": len(outcome)}
