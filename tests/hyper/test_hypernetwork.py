"""The hypernetwork body reproduces the target's blocks exactly before any training."""

import pytest
import torch

from hyperdas.hyper.hypernetwork import HyperNetwork, StructureError
from hyperdas.target.models import load_target


@pytest.fixture(scope="module", params=["llama", "qwen2", "gemma", "gemma3"])
def target(request, tiny_folders):
    return load_target(str(tiny_folders[request.param]))


def test_copied_blocks_match_the_target_without_cross_attention(target):
    hyper = HyperNetwork(target, n_blocks=1, source_ca=False, base_ca=False)
    batch = target.tokenizer(["Country", "the language of"], return_tensors="pt", padding=True)
    with torch.no_grad():
        ours = hyper.hidden(batch["input_ids"], batch["attention_mask"])
        theirs = target.model(**batch, output_hidden_states=True).hidden_states[1]
    real = batch["attention_mask"].bool()
    assert torch.allclose(ours[real], theirs[real], atol=1e-5)


def test_copies_do_not_share_storage_and_train(target):
    hyper = HyperNetwork(target, n_blocks=1)
    block = hyper.blocks[0]
    assert block.source_ca.q_proj.weight.data_ptr() != block.self_attn.q_proj.weight.data_ptr()
    assert torch.equal(block.source_ca.q_proj.weight, block.self_attn.q_proj.weight)
    assert block.self_attn.q_proj.weight.data_ptr() != target.layers[0].self_attn.q_proj.weight.data_ptr()
    assert all(p.requires_grad for p in hyper.parameters())
    assert not any(p.requires_grad for p in target.model.parameters())


def test_masked_positions_change_nothing_in_cross_attention(target):
    """Keys/values are projected for allowed positions only; the result equals dense attention
    over the allowed positions alone."""
    torch.manual_seed(0)
    attn = HyperNetwork(target, n_blocks=1).blocks[0].source_ca
    x, kv = torch.randn(2, 3, target.hidden_size), torch.randn(2, 5, target.hidden_size)
    mask = torch.tensor([[True, True, True, False, False], [True, False, True, True, False]])
    with torch.no_grad():
        out = attn(x, kv, mask)
        for b in range(2):
            alone = attn(x[b : b + 1], kv[b : b + 1, mask[b]], torch.ones(1, int(mask[b].sum()), dtype=torch.bool))
            assert torch.allclose(out[b], alone[0], atol=1e-5)


def test_cross_attention_reads_the_states(target):
    torch.manual_seed(0)
    hyper = HyperNetwork(target, n_blocks=1)
    ids, mask = torch.tensor([[1, 5, 6]]), torch.ones(1, 3, dtype=torch.long)
    D = target.hidden_size
    states = torch.nn.functional.normalize(torch.randn(1, 4, D), dim=-1)
    ok = torch.ones(1, 4, dtype=torch.bool)
    z1 = hyper(ids, mask, states, ok, states, ok)
    z2 = hyper(ids, mask, states.flip(-1), ok, states, ok)
    assert z1.shape == (1, D) and not torch.allclose(z1, z2)


def test_bad_requests(target):
    with pytest.raises(ValueError, match="n_blocks=99"):
        HyperNetwork(target, n_blocks=99)
    with pytest.raises(ValueError, match="unknown hypernetwork init 'random'"):
        HyperNetwork(target, n_blocks=1, init="random")
    scratch = HyperNetwork(target, n_blocks=1, init="scratch")
    copied = HyperNetwork(target, n_blocks=1)
    assert not torch.equal(scratch.blocks[0].self_attn.q_proj.weight, copied.blocks[0].self_attn.q_proj.weight)


def test_structure_error_names_the_missing_parts(target):
    block = target.layers[0]
    saved = block._modules.pop("mlp")
    try:
        with pytest.raises(StructureError, match=r"lacks \['mlp'\]"):
            HyperNetwork(target, n_blocks=1)
    finally:
        block._modules["mlp"] = saved
