"""Rows packed without padding (`hyperdas.target.packed`) against the right-padded batch."""

import pytest
import torch

from hyperdas.core.scoring import answer_logits
from hyperdas.target.hooks import checkpointed, start_after
from hyperdas.target.models import load_target
from hyperdas.target.packed import ROWS, RowLayout, can_pack, packed, packed_answer_logits

LENGTHS = (5, 19, 11, 14)  # Gemma 3's tiny sliding window is 8: the long rows need its band


def _rows(target):
    generator = torch.Generator().manual_seed(0)
    vocab = target.model.get_input_embeddings().num_embeddings
    rows = [torch.randint(3, vocab, (n,), generator=generator).tolist() for n in LENGTHS]
    wanted = [(r, p) for r, row in enumerate(rows) for p in (0, len(row) // 2, len(row) - 1)]
    return rows, wanted


def _states_after(target, rows, layer):
    width = max(len(r) for r in rows)
    ids = torch.tensor([r + [0] * (width - len(r)) for r in rows])
    mask = (torch.arange(width)[None] < torch.tensor([len(r) for r in rows])[:, None]).long()
    with torch.no_grad():
        return target.model(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states[layer + 1]


@pytest.mark.parametrize("arch", ["llama", "qwen2", "gemma", "gemma3"])
def test_packed_rows_give_the_padded_rows_logits_and_gradients(tiny_folders, arch, monkeypatch):
    """From token ids, and from stored states after a layer as training's edited run starts: the
    same logits, and the same gradient to those states, also when the blocks above recompute
    their activations in backward (`checkpointed`). Each block attends row by row."""
    calls = []
    original = RowLayout.padded
    monkeypatch.setattr(RowLayout, "padded", lambda self, x: calls.append(1) or original(self, x))
    target = load_target(str(tiny_folders[arch]))
    assert can_pack(target.model)
    rows, wanted = _rows(target)
    with torch.no_grad():
        padded = answer_logits(target.model, rows, wanted)
        assert torch.allclose(packed_answer_logits(target.model, rows, wanted), padded, atol=1e-4)
    states = _states_after(target, rows, 1)
    lengths = [len(r) for r in rows]
    grads = {}
    for name, checkpoint in (("padded", False), ("packed", False), ("packed, checkpointed", True)):
        start = states.clone().requires_grad_(True)
        with start_after(target, 1, start if name == "padded" else packed(start, lengths)):
            context = checkpointed(target, 2) if checkpoint else torch.enable_grad()
            with context:
                logits = (
                    answer_logits(target.model, rows, wanted)
                    if name == "padded"
                    else packed_answer_logits(target.model, rows, wanted)
                )
                logits.logsumexp(-1).sum().backward()
        assert torch.allclose(logits, padded, atol=1e-4), name
        grads[name] = start.grad
    for name in ("packed", "packed, checkpointed"):
        assert torch.allclose(grads[name], grads["padded"], atol=1e-5), name
    # q, k, v of every block: from ids; from states (blocks above 1), twice more when recomputed
    n = target.n_layers
    assert len(calls) == 3 * (n + 2 * (n - 2) + (n - 2))


def test_the_row_attention_is_sdpa_in_every_other_call(tiny_folders):
    """Once packing has switched a model's attention, padded batches (left padding too) score
    exactly as before."""
    target = load_target(str(tiny_folders["qwen2"]))
    rows, wanted = _rows(target)
    width = max(len(r) for r in rows)
    ids = torch.tensor([[0] * (width - len(r)) + r for r in rows])
    mask = (ids != 0).long()
    with torch.no_grad():
        before = (answer_logits(target.model, rows, wanted), target.model(input_ids=ids, attention_mask=mask).logits)
        packed_answer_logits(target.model, rows, wanted)
        assert target.model.config._attn_implementation == ROWS
        after = (answer_logits(target.model, rows, wanted), target.model(input_ids=ids, attention_mask=mask).logits)
    for a, b in zip(before, after):
        assert torch.equal(a, b)


def test_models_whose_attention_sdpa_cannot_run_stay_padded(tiny_folders):
    target = load_target(str(tiny_folders["gemma"]))
    target.model.config.attn_logit_softcapping = 50.0  # Gemma 2's soft-capped logits
    assert not can_pack(target.model)
    eager = load_target(str(tiny_folders["llama"]))
    eager.model.config._attn_implementation = "eager"
    assert not can_pack(eager.model)
