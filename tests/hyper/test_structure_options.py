"""The official pair-dependent selection, positions in the cross-attention, the sink rule and
training through a hard mode: each switchable, each shown on tiny inputs."""

import pytest
import torch

from hyperdas.core.config import ConfigError
from hyperdas.core.errors import CheckpointError
from hyperdas.hyper.hypernetwork import HyperNetwork
from hyperdas.hyper.model import HyperDAS, HyperDASConfig
from hyperdas.hyper.selection import SelectionHead, column_entropy, harden
from hyperdas.hyper.training import HyperTrainConfig, load_hyperdas, ranked_scores, save_hyperdas


def _inputs(B=2, Tb=6, Ts=5, D=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    z, base, source = (
        torch.randn(B, D, generator=g),
        torch.randn(B, Tb, D, generator=g),
        torch.randn(B, Ts, D, generator=g),
    )
    return z, base, torch.ones(B, Tb, dtype=torch.bool), source, torch.ones(B, Ts, dtype=torch.bool)


def _interaction(scores: torch.Tensor) -> torch.Tensor:
    """S(i,j) - S(i,j') - S(i',j) + S(i',j') over all source rows i, i' and base columns j, j':
    zero everywhere exactly when the scores are a source term plus a base term."""
    S = scores[:, :-1]  # the source rows (the keep row is per column by construction)
    return S - S[:, :1] - S[:, :, :1] + S[:, :1, :1]


def test_rotary_scores_depend_on_the_pair_jointly():
    torch.manual_seed(0)
    z, base, base_mask, source, source_mask = _inputs()
    plain, rotary = SelectionHead(16, 4), SelectionHead(16, 4, positions="rotary")
    rotary.load_state_dict(plain.state_dict())
    separable = plain.scores(z, base, source)
    assert _interaction(separable).abs().max() < 1e-4
    allowed = torch.ones(2, 6, 6, dtype=torch.bool)
    joint = rotary.rotary_scores(z, base, source, base_mask, source_mask, allowed)
    assert _interaction(joint).abs().max() > 1e-2
    # the same two tokens score differently at another place in the pair grid
    swapped_base = base.clone()
    swapped_base[:, [1, 4]] = base[:, [4, 1]]
    moved = rotary.rotary_scores(z, swapped_base, source, base_mask, source_mask, allowed)
    assert not torch.allclose(moved[:, :-1, 4], joint[:, :-1, 1], atol=1e-4)
    A = rotary(z, base, base_mask, source, source_mask)
    assert torch.allclose(A.sum(1), torch.ones(2, 6))


@pytest.mark.parametrize("symmetric,offsets", [(False, 0), (True, 0), (False, 3)])
def test_rotary_scores_equal_the_pair_by_pair_keys(symmetric, offsets):
    from hyperdas.hyper.selection import rotary, rotate_half

    torch.manual_seed(0)
    z, base, base_mask, source, source_mask = _inputs()
    source_mask[1, -1] = False
    head = SelectionHead(16, 4, symmetric, offsets, positions="rotary")
    if offsets:
        torch.nn.init.normal_(head.base_offset), torch.nn.init.normal_(head.source_offset)
    allowed = torch.cat([source_mask, torch.ones(2, 1, dtype=torch.bool)], 1)[:, :, None].expand(-1, -1, 6)
    keys = head.key(head.pair_features(base, source, base_mask, source_mask)).view(2, 36, 4, 4)
    flat = allowed.reshape(2, 36).long()
    cos, sin = rotary(flat.cumsum(1) * flat, 4, head.theta)
    keys = keys * cos[:, :, None] + rotate_half(keys) * sin[:, :, None]
    naive = (keys * head.query(z).view(2, 1, 4, 4)).sum(dim=(2, 3)).view(2, 6, 6)
    ours = head.rotary_scores(z, base, source, base_mask, source_mask, allowed)
    assert torch.allclose(ours, naive, atol=1e-4)


def test_cross_attention_positions_make_the_order_of_states_matter(tiny_llama):
    torch.manual_seed(0)
    ids, mask = torch.tensor([[1, 5, 6]]), torch.ones(1, 3, dtype=torch.long)
    states = torch.nn.functional.normalize(torch.randn(1, 4, tiny_llama.hidden_size), dim=-1)
    ok = torch.ones(1, 4, dtype=torch.bool)
    flipped = states.flip(1)
    plain = HyperNetwork(tiny_llama, n_blocks=1)
    positioned = HyperNetwork(tiny_llama, n_blocks=1, positions=True)
    positioned.load_state_dict(plain.state_dict())
    with torch.no_grad():  # attention without key positions is blind to the keys' order
        assert torch.allclose(plain(ids, mask, states, ok, states, ok), plain(ids, mask, flipped, ok, states, ok))
        assert not torch.allclose(
            positioned(ids, mask, states, ok, states, ok), positioned(ids, mask, flipped, ok, states, ok), atol=1e-5
        )


def test_sink_rule_never_selects_nor_edits_position_zero(synthetic_target, synthetic_pairs):
    from hyperdas.hyper.training import encoded_pairs

    pairs = synthetic_pairs(max_pairs={"train": 20, "val": 4, "test": 8})
    enc = encoded_pairs(synthetic_target, pairs["test"])
    index = list(range(8))
    for sink, selected in (("keep", True), ("exclude", False)):
        torch.manual_seed(0)
        config = HyperDASConfig(layer=0, k=4, n_blocks=1, selection_heads=4, sink=sink, base_read="prompt")
        model = HyperDAS(synthetic_target, config)
        model.edit_for(synthetic_target, 0, enc, index, [enc.base[i] for i in index], [0] * 8)
        A = model.last_plan[0]
        assert bool((A[:, 0] > 0).any()) is selected  # source row 0
        assert bool((A[:, -1, 0] == 1).all()) is not selected  # base column 0 keeps base


def test_straight_through_is_hard_forward_and_soft_backward():
    A = torch.tensor([[[0.5, 0.2], [0.3, 0.1], [0.2, 0.7]]], requires_grad=True)  # (1, Ts+1=3, Tb=2)
    for mode in ("one_to_many", "one_to_one"):
        hard = harden(A, mode, straight_through=True)
        assert torch.equal(hard.detach(), harden(A.detach(), mode))
        (hard * torch.arange(6.0).view(1, 3, 2)).sum().backward()
        assert torch.equal(A.grad, torch.arange(6.0).view(1, 3, 2))
        A.grad = None
    assert harden(A, "soft", straight_through=True) is A


def test_column_entropy():
    one_hot = torch.zeros(1, 3, 4)
    one_hot[:, 0] = 1
    assert column_entropy(one_hot).item() == pytest.approx(0.0, abs=1e-6)
    assert column_entropy(torch.full((1, 3, 4), 1 / 3)).item() == pytest.approx(torch.log(torch.tensor(3.0)).item())


def test_soft_warmup_trains_soft_first_then_the_trained_selection():
    train = HyperTrainConfig(steps=10, soft_warmup=0.5)
    assert [train.selection_at(step) for step in (1, 5, 6, 10)] == ["soft", "soft", "one_to_one", "one_to_one"]
    assert HyperTrainConfig(steps=10).selection_at(1) == "one_to_one"
    assert HyperTrainConfig(steps=10, train_selection="soft", soft_warmup=1.0).selection_at(10) == "soft"


def test_the_kept_step_is_ranked_by_the_trained_selection():
    val = {mode: {"disentangle": score} for mode, score in (("soft", 0.7), ("one_to_many", 0.6), ("one_to_one", 0.5))}
    assert ranked_scores(val, HyperTrainConfig())["disentangle"] == 0.5  # trained one-to-one
    assert ranked_scores(val, HyperTrainConfig(train_selection="soft"))["disentangle"] == 0.7
    assert ranked_scores({"one_to_many": {"disentangle": 0.6}}, HyperTrainConfig())["disentangle"] == 0.6


def test_bad_options_and_a_checkpoint_of_another_structure(synthetic_target, tmp_path):
    with pytest.raises(ConfigError, match=r"selection_positions='alibi': use one of \('none', 'rotary'\)"):
        HyperDASConfig(selection_positions="alibi")
    with pytest.raises(ConfigError, match=r"sink='drop': use one of \('keep', 'exclude'\)"):
        HyperDASConfig(sink="drop")
    with pytest.raises(ConfigError, match=r"train_selection='argmax'"):
        HyperTrainConfig(train_selection="argmax")
    with pytest.raises(ConfigError, match=r"selection_entropy=-1.0: must be >= 0"):
        HyperTrainConfig(selection_entropy=-1.0)
    with pytest.raises(ConfigError, match=r"soft_warmup=1.5: a fraction of the steps, in \[0, 1\]"):
        HyperTrainConfig(soft_warmup=1.5)
    old = HyperDASConfig(layer=0, k=4, n_blocks=1, selection_heads=4)
    save_hyperdas(tmp_path, HyperDAS(synthetic_target, old))
    with pytest.raises(
        CheckpointError, match=r"another HyperDAS configuration \(differs in \['selection_positions'\]\)"
    ):
        load_hyperdas(tmp_path, synthetic_target, expect=old.replace(selection_positions="rotary"))
