"""Faithfulness scores that go with every HyperDAS number.

1. Conflict: on a fixed set of causal test pairs, the source activations come from another entity
   than the one the instruction names, with a value that differs from both the instructed entity's
   and the base's (`hyperdas.experiments.leakage.conflict_rows`). `follows_activations` is the share
   of pairs whose output is the activations' value, `follows_instruction` the instructed one's.
   A faithful intervention follows the activations.
2. Held-out entities: Cause / Iso / Disentangle on the `test_entity` split, whose entities never
   appear in training, so a model that memorised entity names shows.
3. Query-blind control: the same scores on the `query_blind` split, whose base prompts read the same
   up to the entity whichever attribute they ask (`hyperdas.data.filter.query_blind_templates`). A
   model whose Iso there falls far below its plain Iso was abstaining on the question it read, not
   isolating the attribute.
"""

from __future__ import annotations

import random

from hyperdas.core.metrics import faithfulness_columns as headline  # noqa: F401  (notebook 03's table)
from hyperdas.data.pairs import QUERY_BLIND
from hyperdas.data.ravel import RavelDataError
from hyperdas.experiments.leakage import conflict_rows, conflict_variants, outcome_fractions
from hyperdas.hyper.model import Inference
from hyperdas.hyper.selection import MODES
from hyperdas.hyper.store import store_if_it_fits
from hyperdas.target.evaluate import evaluate

CONFLICT_PAIRS = 200
SPLITS = ("test_entity", QUERY_BLIND)  # scored per mode when the pairs have them
METRICS = ("cause", "iso", "disentangle")


def conflict_set(rows, n: int = CONFLICT_PAIRS, seed: int = 0) -> list[dict]:
    """Up to `n` conflict pairs built from `rows` (a test split), the same for a given seed."""
    built = conflict_rows(rows, seed)
    if not built:
        raise RavelDataError(
            "cannot build a conflict set: no causal pair has another source entity whose value differs from "
            "both the instructed one's and the base's (each attribute needs at least three values)"
        )
    if len(built) > n:
        built = [built[i] for i in sorted(random.Random(seed).sample(range(len(built)), n))]
    return built


def conflict_scores(target, model, rows: list[dict], modes=MODES) -> dict:
    """{mode: {follows_activations, follows_instruction, follows_neither, verdict, n}} on conflict `rows`."""
    from hyperdas.hyper.training import encoded_pairs

    config = model.config
    variants = [encoded_pairs(target, v, config.instruction) for v in conflict_variants(rows)]
    # the read passes do not depend on the mode: computed once per label variant (when they fit)
    stores = [store_if_it_fits(target, enc, config.layer, model.read_rule) for enc in variants]
    out = {}
    for mode in modes:
        hits = [
            [r["correct"] for r in evaluate(target, config.layer, Inference(model, mode, store=store), enc)[1]]
            for enc, store in zip(variants, stores)
        ]
        out[mode] = outcome_fractions(*hits)
    return out


def split_scores(target, model, rows, modes=MODES, store: bool = True) -> dict:
    """{mode: {cause, iso, disentangle, n}} over a whole split (e.g. `test_entity`); the read passes
    are computed once for all modes when `store` (and the store fits)."""
    from hyperdas.hyper.training import encoded_pairs

    enc = encoded_pairs(target, rows, model.config.instruction)
    held = store_if_it_fits(target, enc, model.config.layer, model.read_rule) if store else None
    out = {}
    for mode in modes:
        found, records = evaluate(target, model.config.layer, Inference(model, mode, store=held), enc)
        out[mode] = {**{m: found["overall"][m] for m in METRICS}, "n": len(records)}
    return out


def faithfulness(target, model, pairs, modes=MODES, n_conflict: int = CONFLICT_PAIRS, seed: int = 0) -> dict:
    """The faithfulness block of a results file: conflict outcomes per mode on `n_conflict` test
    pairs, and the held-out-entity and query-blind scores per mode (for the splits the pairs have)."""
    rows = conflict_set(pairs["test"], n_conflict, seed)
    out = {"conflict": conflict_scores(target, model, rows, modes), "conflict_pairs": len(rows)}
    for split in SPLITS:
        if split in pairs and len(pairs[split]):
            out[split] = split_scores(target, model, pairs[split], modes)
    return out
