"""The faithfulness block every HyperDAS evaluation carries: conflict set, conflict shares per mode,
held-out-entity and query-blind scores, and their place in the results file and the main table."""

import pytest
import torch

from hyperdas.core.metrics import faithfulness_columns
from hyperdas.data.ravel import RavelDataError
from hyperdas.experiments import faithfulness as faith
from hyperdas.hyper.model import HyperDAS, HyperDASConfig
from hyperdas.hyper.selection import MODES

CONFIG = HyperDASConfig(layer=0, k=4, n_blocks=1, selection_heads=4)


@pytest.fixture(scope="module")
def pairs(synthetic_pairs):
    return synthetic_pairs(
        max_pairs={"train": 20, "val": 6, "test": 60}, generalisation_sets=True, query_blind_pairs=30
    )


def _row(entity, value, source, source_value, attribute="Country"):
    return {
        "domain": "city",
        "target_attribute": attribute,
        "attribute_type": "causal",
        "entity": entity,
        "target": value,
        "counterfactual_entity": source,
        "counterfactual_target": source_value,
        "counterfactual_input_prefix": f"{source} is in",
        "counterfactual_input_suffix": "",
        "source_entity_position": 1,
    }


def test_conflict_set_is_fixed_by_its_seed_and_capped(pairs):
    first, again = faith.conflict_set(pairs["test"], n=10, seed=3), faith.conflict_set(pairs["test"], n=10, seed=3)
    assert len(first) == 10 and first == again
    every = faith.conflict_set(pairs["test"], n=10**6)
    assert len(every) > 10
    assert all(r["counterfactual_target"] not in (r["instruction_target"], r["target"]) for r in every)


def test_a_conflict_set_that_cannot_be_built_is_refused_by_name():
    two_values = [_row("Paris", "France", "Rome", "Italy"), _row("Rome", "Italy", "Paris", "France")]
    with pytest.raises(RavelDataError, match="cannot build a conflict set: .* at least three values"):
        faith.conflict_set(two_values)


def test_the_block_has_every_mode_and_the_held_out_entities(synthetic_target, pairs):
    torch.manual_seed(0)
    model = HyperDAS(synthetic_target, CONFIG).eval()
    block = faith.faithfulness(synthetic_target, model, pairs, n_conflict=12)
    assert block["conflict_pairs"] == 12 and set(block["conflict"]) == set(MODES)
    for mode in MODES:
        shares = block["conflict"][mode]
        total = shares["follows_activations"] + shares["follows_instruction"] + shares["follows_neither"]
        assert shares["n"] == 12 and total == pytest.approx(1.0)
        assert set(block["test_entity"][mode]) == {"cause", "iso", "disentangle", "n"}
        assert block["test_entity"][mode]["n"] == len(pairs["test_entity"])
        columns = faithfulness_columns(block, mode)
        assert columns["follows_activations"] == shares["follows_activations"]
        assert columns["test_entity_disentangle"] == block["test_entity"][mode]["disentangle"]
        assert block["query_blind"][mode]["n"] == len(pairs["query_blind"]) == 30
        assert columns["query_blind_iso"] == block["query_blind"][mode]["iso"]
    # the store that serves the held-out split gives the scores a plain evaluation gives
    plain = faith.split_scores(synthetic_target, model, pairs["test_entity"], ("soft",), store=False)
    assert plain["soft"] == block["test_entity"]["soft"]
