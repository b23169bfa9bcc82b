"""The official code's remaining choices as options (`HyperDASConfig`): tied attention weights across
a copied block, the SwiGLU subspace head, R's orthogonal map and the number of selection heads;
each builds, trains a step, keeps R orthonormal and survives a save and load."""

import pytest
import torch

from hyperdas.core.config import ConfigError
from hyperdas.hyper.model import HyperDAS, HyperDASConfig
from hyperdas.hyper.subspace import Subspace
from hyperdas.hyper.training import HyperTrainConfig, load_hyperdas, save_hyperdas, train_hyperdas

BASE = HyperDASConfig(layer=0, k=8, n_blocks=1, selection_heads=4)
OPTIONS = {
    "tie_attention": {"tie_attention": True},
    "swiglu": {"subspace_head": "swiglu", "head_width": 24},
    "householder_map": {"rotation_map": "householder"},
    "matrix_exp_map": {"rotation_map": "matrix_exp"},
    "two_heads": {"selection_heads": 2},
    "rotary_query": {"selection_query": "instruction", "selection_positions": "rotary"},
}


@pytest.mark.parametrize("rotation_map", ["cayley", "householder", "matrix_exp"])
def test_r_stays_orthonormal_and_moves_under_adamw(rotation_map):
    """R's group has no weight decay (`make_optimizer`, as the official code): decay pulls the
    Householder map's reflectors off their unit diagonal and R collapses to zero in one step."""
    torch.manual_seed(0)
    subspace = Subspace("shared", 16, 4, rotation_map=rotation_map)
    before = subspace.R.detach().clone()
    optimizer = torch.optim.AdamW(subspace.parameters(), lr=1e-2, weight_decay=0.0)
    for _ in range(3):
        optimizer.zero_grad()
        (subspace(torch.randn(2, 16))[:, :, 0].sum() ** 2).backward()
        optimizer.step()
    R = subspace.R.detach()
    assert torch.allclose(R.T @ R, torch.eye(4), atol=1e-4)
    assert not torch.allclose(R, before)


def test_tied_attention_shares_the_self_attentions_weights(synthetic_target):
    tied = HyperDAS(synthetic_target, BASE.replace(tie_attention=True))
    block = tied.hypernetwork.blocks[0]
    assert block.source_ca.q_proj.weight is block.self_attn.q_proj.weight is block.base_ca.q_proj.weight
    separate = HyperDAS(synthetic_target, BASE)
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    attention = sum(p.numel() for p in block.self_attn.parameters())
    assert count(separate) - count(tied) == 2 * attention


def test_the_swiglu_head_takes_the_targets_mlp_width_by_default(synthetic_target):
    model = HyperDAS(synthetic_target, BASE.replace(subspace_head="swiglu"))
    assert model.subspace.head.gate.out_features == synthetic_target.model.config.intermediate_size
    W = model.subspace(torch.randn(3, synthetic_target.hidden_size))
    assert torch.allclose(W.transpose(1, 2) @ W, torch.eye(8).expand(3, -1, -1), atol=1e-4)


@pytest.mark.parametrize("option", list(OPTIONS))
def test_each_option_trains_and_reloads_to_the_same_outputs(option, synthetic_target, synthetic_pairs, tmp_path):
    pairs = synthetic_pairs(max_pairs={"train": 16, "val": 8, "test": 8})
    config = BASE.replace(**OPTIONS[option])
    train = HyperTrainConfig(steps=2, batch_size=4, eval_every=2, max_val_pairs=8, eval_modes=("soft",))
    result = train_hyperdas(synthetic_target, pairs, config, train, progress=False)
    assert all(torch.isfinite(torch.tensor(h["loss"])) for h in result.history)
    save_hyperdas(tmp_path, result.model)
    loaded, _ = load_hyperdas(tmp_path, synthetic_target, expect=config)
    for (name, a), b in zip(result.model.state_dict().items(), loaded.state_dict().values()):
        assert torch.equal(a, b), name
    if option == "tie_attention":
        block = loaded.hypernetwork.blocks[0]
        assert block.source_ca.q_proj.weight is block.self_attn.q_proj.weight


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("rotation_map", "qr", "HyperDASConfig.rotation_map='qr': use one of ('cayley', 'householder', 'matrix_exp')"),
        ("subspace_head", "mlp", "HyperDASConfig.subspace_head='mlp': use one of ('gelu', 'swiglu')"),
        ("head_width", 0, "HyperDASConfig.head_width=0: must be >= 1"),
    ],
)
def test_an_option_value_the_code_does_not_have_is_named(field, value, message):
    with pytest.raises(ConfigError) as found:
        BASE.replace(**{field: value})
    assert message in str(found.value) and "\n" not in str(found.value)


def test_the_official_selection_query_is_rotated_to_the_instructions_length():
    from hyperdas.hyper.selection import SelectionHead

    torch.manual_seed(0)
    head = SelectionHead(16, 4, positions="rotary")
    B, Tb, Ts = 2, 5, 4
    z, base, source = torch.randn(B, 16), torch.randn(B, Tb, 16), torch.randn(B, Ts, 16)
    masks = torch.ones(B, Tb, dtype=torch.bool), torch.ones(B, Ts, dtype=torch.bool)
    at_zero = head(z, base, masks[0], source, masks[1])
    assert torch.allclose(head(z, base, masks[0], source, masks[1], torch.zeros(B, dtype=torch.long)), at_zero)
    rotated = head(z, base, masks[0], source, masks[1], torch.tensor([7, 11]))
    assert not torch.allclose(rotated, at_zero) and torch.allclose(rotated.sum(1), torch.ones(B, Tb))
    with pytest.raises(ConfigError, match="needs selection_positions='rotary'"):
        BASE.replace(selection_query="instruction")
    BASE.replace(selection_query="instruction", selection_positions="rotary")


def test_the_official_loss_reads_every_answer_token(synthetic_target, synthetic_pairs):
    from hyperdas.hyper.training import encoded_pairs

    rows = list(synthetic_pairs(max_pairs={"train": 8, "val": 8, "test": 8})["train"])
    long_value = " ".join([rows[0]["target"].strip()] * 5)  # a value of several tokens
    rows = [{**r, "target": " " + long_value, "counterfactual_target": " " + long_value} for r in rows]
    first = encoded_pairs(synthetic_target, rows)
    every = encoded_pairs(synthetic_target, rows, answer_tokens=None)
    assert all(len(a) == 3 for a in first.answers) and all(len(a) > 3 for a in every.answers)
    assert all(b[: len(a)] == a for a, b in zip(first.answers, every.answers))
    with pytest.raises(ConfigError, match="HyperTrainConfig.answer_tokens=0: must be >= 1"):
        HyperTrainConfig(answer_tokens=0)
