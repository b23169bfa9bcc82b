"""Scoring conflict pairs: does an intervention's output take the value of the swapped-in
activations or of the entity the instruction names (`hyperdas.experiments.leakage.conflict_rows`
builds the pairs)? Any method `evaluate` accepts can be scored, instruction-reading or not, so the
baselines and HyperDAS are measured on the same pairs the same way.
"""

from __future__ import annotations

from hyperdas.core.intervals import conflict_string
from hyperdas.data.pairs import last_entity_token
from hyperdas.data.ravel import RavelDataError
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
    """Shares following the activations / the instruction / neither, from each label's hits, and
    each row's outcome (`hyperdas.core.intervals.conflict_string`) for intervals."""
    outcome = ["activations" if a else "instruction" if i else "neither" for a, i in zip(activations, instruction)]
    fractions = {f"follows_{o}": outcome.count(o) / len(outcome) for o in OUTCOMES}
    verdict = max(OUTCOMES, key=lambda o: fractions[f"follows_{o}"])
    return {**fractions, "verdict": verdict, "n": len(outcome), "outcomes": conflict_string(outcome)}


class _Unedited:
    """No edit; brings its own ``edit_for`` so that `evaluate` computes no source states."""

    def edit_for(self, target, layer, enc, index, rows, offsets):
        return lambda hidden: hidden


def written_entity_rows(tokenizer, rows: list[dict]) -> list[dict]:
    """Conflict rows with the activations' entity written into the base prompt in place of the base
    entity: what a perfect edit of the entity would make the target read."""
    out = []
    for r in rows:
        prefix, entity = r["input_prefix"], r.get("entity")
        if not entity or not prefix.endswith(entity) or "activation_entity" not in r:
            raise RavelDataError(
                "written_entity_rows needs conflict rows (activation_entity) whose prefix ends with their entity"
            )
        written = prefix[: len(prefix) - len(entity)] + r["activation_entity"]
        position = last_entity_token(tokenizer, written, r["input_suffix"])
        out.append({**r, "input_prefix": written, "entity": r["activation_entity"], "base_entity_position": position})
    return out


def written_entity_outcomes(target, rows: list[dict]) -> dict:
    """The conflict outcome of no edit on `written_entity_rows`: how often the target gives the
    activations' value when their entity is written in the prompt. No intervention on the entity can
    be expected to follow the activations more often than this."""
    return conflict_outcomes(target, 0, _Unedited(), written_entity_rows(target.tokenizer, rows))
