"""The written-entity reference of the conflict control: the activations' entity written into the
base prompt, no edit."""

import pytest

from hyperdas.data.ravel import RavelDataError
from hyperdas.experiments.leakage import conflict_rows
from hyperdas.target.conflict import written_entity_outcomes, written_entity_rows


@pytest.fixture(scope="module")
def conflict(synthetic_pairs):
    return conflict_rows(synthetic_pairs(max_pairs={"train": 4, "val": 4, "test": 60})["test"])[:24]


def test_the_activations_entity_replaces_the_base_entity(synthetic_target, conflict):
    for row, written in zip(conflict, written_entity_rows(synthetic_target.tokenizer, conflict)):
        assert written["input_prefix"].endswith(row["activation_entity"])
        assert written["input_prefix"][: -len(row["activation_entity"])] == row["input_prefix"][: -len(row["entity"])]
        ids = synthetic_target.tokenizer(written["input_prefix"] + written["input_suffix"])["input_ids"]
        last = synthetic_target.tokenizer.decode(ids[written["base_entity_position"]]).strip()
        assert row["activation_entity"].endswith(last)


def test_a_target_that_knows_every_entity_follows_the_written_one(synthetic_target, conflict):
    found = written_entity_outcomes(synthetic_target, conflict)
    assert found["n"] == len(conflict) and found["follows_activations"] == 1.0


def test_rows_that_are_not_conflict_rows_are_refused_by_name(synthetic_target, conflict):
    plain = [{k: v for k, v in conflict[0].items() if k != "activation_entity"}]
    with pytest.raises(RavelDataError, match="written_entity_rows needs conflict rows"):
        written_entity_rows(synthetic_target.tokenizer, plain)
