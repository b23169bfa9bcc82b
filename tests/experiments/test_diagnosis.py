"""The diagnosis parts on the synthetic world: cross-wiring reproduces the plain model where both
parts come from one instruction, the sink rule is put back, and the records say what they measured."""

import pytest
import torch

from hyperdas.experiments import diagnosis
from hyperdas.experiments.leakage import conflict_outcomes, conflict_rows
from hyperdas.hyper.model import HyperDAS, HyperDASConfig, Inference
from hyperdas.hyper.training import encoded_pairs

# "scratch": the synthetic model's first block attends so locally that a copy of it reads the last instruction
# token alone, and the plan would not depend on the entities the instruction names
CONFIG = HyperDASConfig(layer=0, k=4, n_blocks=1, selection_heads=4, init="scratch")


@pytest.fixture(scope="module")
def setup(synthetic_target, synthetic_pairs):
    pairs = synthetic_pairs(max_pairs={"train": 20, "val": 6, "test": 60})
    torch.manual_seed(0)
    model = HyperDAS(synthetic_target, CONFIG).eval()
    with torch.no_grad():  # at initialisation W does not depend on the instruction yet
        for p in model.subspace.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return model, conflict_rows(pairs["test"])[:12]


def test_one_instruction_for_both_parts_is_the_plain_model(synthetic_target, setup):
    model, rows = setup
    wired = diagnosis.cross_wiring(synthetic_target, model, rows, "soft")
    assert set(wired) == set(diagnosis.WIRINGS) and all(w["n"] == len(rows) for w in wired.values())
    encoder = lambda r: encoded_pairs(synthetic_target, r, CONFIG.instruction)  # noqa: E731
    plain = conflict_outcomes(synthetic_target, 0, Inference(model, "soft"), rows, encoder)
    assert wired["instructed"] == plain
    # "faithful": the instruction names the activations' entity, so its value is what "activations" reads
    renamed = [{**r, "counterfactual_entity": r["activation_entity"]} for r in rows]
    faithful = conflict_outcomes(synthetic_target, 0, Inference(model, "soft"), renamed, encoder)
    assert wired["faithful"] == faithful


def test_a_crossed_plan_takes_each_part_from_its_instruction(synthetic_target, setup):
    model, rows = setup
    enc = encoded_pairs(synthetic_target, rows, CONFIG.instruction)
    other = encoded_pairs(
        synthetic_target, [{**r, "counterfactual_entity": r["activation_entity"]} for r in rows], CONFIG.instruction
    )
    index = list(range(4))
    plans = {}
    for name, wiring in diagnosis.WIRINGS.items():
        method = diagnosis.CrossWired(model, "soft", other.instructions, wiring)
        method.edit_for(synthetic_target, 0, enc, index, [enc.base[i] for i in index], [0] * 4)
        plans[name] = model.last_plan
    assert torch.equal(plans["selection_faithful"][0], plans["faithful"][0])
    assert torch.equal(plans["selection_faithful"][1], plans["instructed"][1])
    assert torch.equal(plans["subspace_faithful"][1], plans["faithful"][1])
    for part in (0, 1):  # the two instructions give two plans
        assert not torch.equal(plans["instructed"][part], plans["faithful"][part])


def test_the_sink_rule_is_put_back_and_its_mass_is_a_share(synthetic_target, setup):
    model, rows = setup
    enc = encoded_pairs(synthetic_target, rows, CONFIG.instruction)
    before = model.config
    mass = diagnosis.sink_mass(synthetic_target, model, enc, n=4)
    assert model.config is before and 0 <= mass <= 1
    with pytest.raises(RuntimeError), diagnosis.sink_rule(model, "keep"):
        assert model.config.sink == "keep"
        raise RuntimeError
    assert model.config is before
