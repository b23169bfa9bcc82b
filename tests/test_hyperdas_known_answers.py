"""HyperDAS on the synthetic world, whose block 0 is local: after it, only the entity's own token
carries what the question will read about the entity, so a working selection must route the source
entity's token into the base entity's position, and that swap must carry the instructed value.

Measured here and not asserted (see the README's HyperDAS section): Iso stays low when the loss
weights favour causal rows (as the official 3.5 / 0.5 do); equal weights trade Cause for Iso
without reaching MDAS on this model, and N=0 blocks does not do worse than N=1."""
import pytest
import torch

from hyperdas.data.filter import FilterConfig, filter_domain
from hyperdas.data.pairs import PairConfig, build_pairs
from hyperdas.data.synthetic import ATTRIBUTES
from hyperdas.editor import HyperDASConfig, Inference
from hyperdas.evaluate import evaluate, intervened_logits
from hyperdas.hypertrain import HyperTrainConfig, encoded_pairs, train_hyperdas

MODEL = HyperDASConfig(layer=0, k=8, n_blocks=1, selection_heads=4)
TRAIN = HyperTrainConfig(steps=400, batch_size=16, lr=1e-3, lr_rotation=1e-2, eval_every=10**6, max_val_pairs=30,
                         eval_modes=("soft",))


@pytest.fixture(scope="module")
def pairs(synthetic_target, synthetic_data):
    known = filter_domain(synthetic_target, synthetic_data,
                          FilterConfig(attributes=ATTRIBUTES, templates_per_attribute=None, max_entities=None),
                          progress=False)
    return build_pairs(synthetic_data, known, synthetic_target.tokenizer,
                       PairConfig(target_attributes=ATTRIBUTES, max_pairs={"train": 1200, "val": 60, "test": 240}))


@pytest.fixture(scope="module")
def trained(synthetic_target, pairs):
    torch.manual_seed(0)
    return train_hyperdas(synthetic_target, pairs, MODEL, TRAIN, progress=False).model


@pytest.fixture(scope="module")
def test_enc(synthetic_target, pairs):
    return encoded_pairs(synthetic_target, pairs["test"])


def test_hyperdas_learns_to_carry_the_instructed_value(synthetic_target, trained, test_enc):
    overall = evaluate(synthetic_target, 0, Inference(trained, "one_to_one"), test_enc)[0]["overall"]
    assert overall["cause"] >= 0.7  # measured 0.76 (soft 0.73); Iso 0.08


def test_selection_routes_the_source_entity_token_into_the_base_entity(synthetic_target, trained, test_enc):
    index = list(range(len(test_enc)))
    hits = 0
    with torch.no_grad():
        for start in range(0, len(index), 32):
            batch = index[start : start + 32]
            intervened_logits(synthetic_target, 0, Inference(trained, "one_to_many"), test_enc, batch, None)
            A = trained.last_plan[0]
            for b, i in enumerate(batch):
                hits += int(A[b, :, test_enc.base_pos[i]].argmax()) == test_enc.source_pos[i]
    assert hits / len(index) >= 0.8  # measured 0.88; most misses pick the token two before the entity
