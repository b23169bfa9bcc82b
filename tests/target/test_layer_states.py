"""Cached states after the layer: DAS trains and scores as when every block runs each time."""

import pytest
import torch

import hyperdas.das.training as das_training
from hyperdas.das.interventions import RotatedSpaceInterchange
from hyperdas.das.training import DASConfig, train_das
from hyperdas.target.evaluate import encode, evaluate, intervened_logits, source_vectors
from hyperdas.target.layer_states import FromStates, LayerStates

SHORT = DASConfig(target_attribute="Country", layer=1, k=8, batch_size=8, steps=6, eval_every=3, max_val_pairs=24)


@pytest.fixture(scope="module")
def pairs(synthetic_pairs):
    return synthetic_pairs(max_pairs={"train": 120, "val": 60, "test": 60})


def test_logits_and_sources_match_the_full_pass(synthetic_target, pairs):
    enc = encode(synthetic_target.tokenizer, pairs["test"])
    torch.manual_seed(0)
    rotation = RotatedSpaceInterchange(synthetic_target.hidden_size, 8)
    states = LayerStates(synthetic_target, 1)
    index = list(range(0, len(enc), 3))
    plain, labels = intervened_logits(
        synthetic_target, 1, rotation, enc, index, source_vectors(synthetic_target, 1, enc)
    )
    cached, same = intervened_logits(synthetic_target, 1, FromStates(rotation, states), enc, index, None)
    assert torch.equal(labels, same) and torch.allclose(plain, cached, atol=1e-4)
    assert torch.allclose(states.sources(enc, index), source_vectors(synthetic_target, 1, enc)[index], atol=1e-5)
    held = len(states)
    states.fill_pairs(enc.subset(index))  # already held: nothing is computed again
    assert len(states) == held
    with pytest.raises(ValueError, match="computed after layer 1, the edit is after layer 0"):
        evaluate(synthetic_target, 0, FromStates(rotation, states), enc)


def test_training_from_states_gives_the_same_run(synthetic_target, pairs, monkeypatch):
    config = SHORT.replace(method="mdas")
    cached = train_das(synthetic_target, pairs, config, progress=False)
    monkeypatch.setattr(das_training, "can_start_after", lambda target: False)
    plain = train_das(synthetic_target, pairs, config, progress=False)
    # cached states run the rows packed (no padding): the same losses to float tolerance
    assert [h["loss"] for h in cached.history] == pytest.approx([h["loss"] for h in plain.history], rel=1e-4)
    # Adam's first steps move each weight by about lr whatever the gradient's size: float-level
    # gradient differences show in R at about lr (1e-3), never beyond
    assert torch.allclose(cached.intervention.R, plain.intervention.R, atol=5e-3)
    assert cached.best_step == plain.best_step


def test_states_of_another_layer_are_refused(synthetic_target, pairs):
    with pytest.raises(ValueError, match="computed after layer 0, not the config's 1"):
        train_das(synthetic_target, pairs, SHORT, progress=False, states=LayerStates(synthetic_target, 0))
