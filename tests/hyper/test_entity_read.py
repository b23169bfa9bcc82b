"""The entity read (`base_read="entity"`): the hypernetwork reads the base entity alone, so the plan
is the same whichever question the base prompt asks; only the entity's tokens are edited; the
activation store serves it; bad settings are refused in one line."""

import pytest
import torch

from hyperdas.core.config import ConfigError
from hyperdas.core.errors import CheckpointError
from hyperdas.data.pairs import first_entity_token, last_entity_token
from hyperdas.data.ravel import RavelDataError
from hyperdas.hyper.model import HyperDAS, HyperDASConfig, Inference
from hyperdas.hyper.store import ActivationStore
from hyperdas.hyper.training import (
    HyperTrainConfig,
    encoded_pairs,
    load_hyperdas,
    save_hyperdas,
    train_hyperdas,
)
from hyperdas.target.evaluate import intervened_logits, states_after

ENTITY = HyperDASConfig(layer=1, k=4, n_blocks=1, selection_heads=4, base_read="entity")


@pytest.fixture(scope="module")
def rows(synthetic_pairs):
    return synthetic_pairs(max_pairs={"train": 40, "val": 8, "test": 16})["test"]


def _retemplated(rows, tokenizer, prefix: str) -> list[dict]:
    """The same pairs with every base prompt's text before the entity replaced by `prefix`."""
    out = []
    for row in rows:
        row = dict(row)
        row["input_prefix"] = prefix + row["entity"]
        row["base_entity_position"] = last_entity_token(tokenizer, row["input_prefix"], row["input_suffix"])
        out.append(row)
    return out


def _jostled(target, config):
    """A model whose weights are all moved off their initial values (at initialisation the
    cross-attention adds nothing, so nothing read of the base would show in W)."""
    torch.manual_seed(0)
    model = HyperDAS(target, config).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model


def _plans(target, model, enc, index):
    model.edit_for(target, model.config.layer, enc, index, [enc.base[i] for i in index], [0] * len(index), "soft")
    return model.last_plan


def test_entity_start_is_the_first_token_of_the_entity(synthetic_target, rows):
    tokenizer = synthetic_target.tokenizer
    enc = encoded_pairs(synthetic_target, rows)
    for i, row in enumerate(rows):
        entity_ids = enc.base[i][enc.base_start[i] : enc.base_pos[i] + 1]
        assert tokenizer.decode(entity_ids).strip() == row["entity"]
    with pytest.raises(RavelDataError, match="does not end with its entity"):
        first_entity_token(tokenizer, "Postcard from Paris ,", " in", "Paris")


def test_the_plan_does_not_depend_on_the_base_template(synthetic_target, rows):
    """Same pairs, other text before the base entity: an entity read gives the same W and the same
    selection over the entity's tokens (wherever they sit), and edits nothing else; the paper's
    prompt read gives another W."""
    index = list(range(8))
    plain = list(rows)[:8]
    other = _retemplated(plain, synthetic_target.tokenizer, "Q : Which language is spoken in the town of ")
    entity, prompt = (_jostled(synthetic_target, ENTITY.replace(base_read=read)) for read in ("entity", "prompt"))
    encs = [encoded_pairs(synthetic_target, r) for r in (plain, other)]
    assert any(a.base_pos[i] != b.base_pos[i] for i in index for a, b in [encs])  # the entity moved
    with torch.no_grad():
        (A1, W1), (A2, W2) = [[t.clone() for t in _plans(synthetic_target, entity, e, index)] for e in encs]
        Wp1, Wp2 = [_plans(synthetic_target, prompt, e, index)[1].clone() for e in encs]
    assert torch.allclose(W1, W2, atol=1e-5)
    assert not torch.allclose(Wp1, Wp2, atol=1e-3)
    for b, i in enumerate(index):
        spans = [(e.base_start[i], e.base_pos[i] + 1) for e in encs]
        assert torch.allclose(A1[b, :, slice(*spans[0])], A2[b, :, slice(*spans[1])], atol=1e-5)
        for A, (lo, hi) in ((A1, spans[0]), (A2, spans[1])):
            outside = torch.cat([A[b, :, :lo], A[b, :, hi:]], dim=1)
            assert (outside[:-1] == 0).all() and (outside[-1] == 1).all()  # other tokens keep base
        assert A1[b, :-1, slice(*spans[0])].sum() > 0  # the entity's tokens do take source states


def test_an_example_does_not_depend_on_its_batch_or_the_store(synthetic_target, rows):
    enc = encoded_pairs(synthetic_target, rows)
    torch.manual_seed(0)
    model = HyperDAS(synthetic_target, ENTITY).eval()
    store = ActivationStore(synthetic_target, enc, 1, model.read_rule, progress=False)
    index = list(range(10))
    assert store.serves(enc, 1, model.read_rule, [enc.base[i] for i in index], index, [0] * 10)
    assert not store.serves(enc, 1, False, [enc.base[i] for i in index], index, [0] * 10)  # a prompt read
    prompt_store = ActivationStore(synthetic_target, enc, 1, progress=False)
    with pytest.raises(ValueError, match="built for the 'prompt' read, this model reads 'entity'"):
        intervened_logits(synthetic_target, 1, Inference(model, store=prompt_store), enc, index, None)
    plain, stored = Inference(model, "one_to_one"), Inference(model, "one_to_one", store=store)
    with torch.no_grad():
        together, _ = intervened_logits(synthetic_target, 1, plain, enc, index, None)
        served, _ = intervened_logits(synthetic_target, 1, stored, enc, index, None)
        alone = torch.cat([intervened_logits(synthetic_target, 1, plain, enc, [i], None)[0] for i in index])
    assert torch.allclose(together, alone, atol=1e-4) and torch.allclose(together, served, atol=1e-4)


def test_the_store_starts_the_edited_run_above_the_layer(synthetic_target, rows):
    enc = encoded_pairs(synthetic_target, rows)
    model = _jostled(synthetic_target, ENTITY)
    store = ActivationStore(synthetic_target, enc, 1, model.read_rule, progress=False)
    index = [3, 0, 7]
    laid_out = [enc.base[i] for i in index]
    plain = model.edit_for(synthetic_target, 1, enc, index, laid_out, [0] * 3, "one_to_one")
    stored = model.edit_for(synthetic_target, 1, enc, index, laid_out, [0] * 3, "one_to_one", store=store)
    assert getattr(plain, "start", None) is None  # without a store, blocks 0..layer run in the edited pass
    expected = states_after(synthetic_target, 1, laid_out)
    assert stored.start.shape == expected.shape
    for b, row in enumerate(laid_out):
        assert torch.allclose(stored.start[b, : len(row)], expected[b, : len(row)], atol=1e-5)
    calls = []
    handle = synthetic_target.layers[0].register_forward_hook(lambda *_: calls.append(1))
    try:
        with torch.no_grad():
            intervened_logits(synthetic_target, 1, Inference(model, "one_to_one", store=store), enc, index, None)
            assert not calls  # the stored start replaced the blocks below the edit
            intervened_logits(synthetic_target, 1, Inference(model, "one_to_one"), enc, index, None)
    finally:
        handle.remove()
    assert calls


def test_training_with_and_without_the_store_agree(synthetic_pairs, synthetic_target):
    pairs = synthetic_pairs(max_pairs={"train": 40, "val": 12, "test": 12})
    train = HyperTrainConfig(steps=4, batch_size=8, lr=1e-3, eval_every=4, max_val_pairs=12, eval_modes=("soft",))
    found = []
    for store in ("none", "memory"):
        torch.manual_seed(0)
        result = train_hyperdas(synthetic_target, pairs, ENTITY, train.replace(activation_store=store), progress=False)
        found.append([h["loss"] for h in result.history])
    assert found[0] == pytest.approx(found[1], rel=1e-5) and all(loss == loss for loss in found[0])


def test_bad_base_reads_are_refused(synthetic_target, tmp_path):
    with pytest.raises(ConfigError, match="base_read='template'"):
        HyperDASConfig(base_read="template")
    with pytest.raises(ConfigError, match="include_suffix must be False"):
        HyperDAS(synthetic_target, ENTITY.replace(include_suffix=True))
    torch.manual_seed(0)
    save_hyperdas(tmp_path / "ckpt", HyperDAS(synthetic_target, ENTITY))
    with pytest.raises(CheckpointError, match="base_read"):
        load_hyperdas(tmp_path / "ckpt", synthetic_target, expect=ENTITY.replace(base_read="prompt"))


def test_a_checkpoint_from_before_the_entity_read_loads_as_a_prompt_read(synthetic_target, tmp_path):
    import json

    torch.manual_seed(0)
    folder = save_hyperdas(tmp_path / "old", HyperDAS(synthetic_target, ENTITY.replace(base_read="prompt")))
    config = json.loads((folder / "config.json").read_text())
    del config["model"]["base_read"]  # as saved before the field existed
    (folder / "config.json").write_text(json.dumps(config))
    model, _ = load_hyperdas(folder, synthetic_target)
    assert model.config.base_read == "prompt" and model.read_rule.reads_prompt
    with pytest.raises(CheckpointError, match="base_read"):
        load_hyperdas(folder, synthetic_target, expect=ENTITY)
