import pytest
import torch
from conftest import hook_ids

from hyperdas.target.hooks import (
    LayerIndexError,
    edit_residual,
    patch_residual,
    record_residual,
    replace_at,
    start_after,
)
from hyperdas.target.models import greedy_complete

PROMPTS = ["The capital of France is", "Rome is in Italy"]


def _batch(target, prompts=PROMPTS):
    return target.tokenizer(prompts, return_tensors="pt", padding=True)


def test_record_matches_hidden_states(tiny_llama):
    batch, before = _batch(tiny_llama), hook_ids(tiny_llama.model)
    with torch.no_grad(), record_residual(tiny_llama, [0, 2]) as residual:
        out = tiny_llama.model(**batch, output_hidden_states=True)
    # hidden_states[0] is the embedding output, hidden_states[L + 1] the output of block L
    assert torch.equal(residual[0], out.hidden_states[1])
    assert torch.equal(residual[2], out.hidden_states[3])
    assert hook_ids(tiny_llama.model) == before


def test_identity_edit_changes_nothing_and_zero_edit_does(tiny_llama):
    batch = _batch(tiny_llama)
    with torch.no_grad():
        clean = tiny_llama.model(**batch).logits
        with edit_residual(tiny_llama, 1, lambda h: h):
            same = tiny_llama.model(**batch).logits
        with edit_residual(tiny_llama, 1, torch.zeros_like):
            zeroed = tiny_llama.model(**batch).logits
    assert torch.equal(clean, same)
    assert not torch.allclose(clean, zeroed)


def test_patching_every_position_with_source_reproduces_source(tiny_llama):
    # the residual stream after layer L at all positions determines everything after it
    base = tiny_llama.tokenizer(["Paris, France"], return_tensors="pt")
    source = tiny_llama.tokenizer(["Tokyo, Japan."], return_tensors="pt")
    length = base["input_ids"].shape[1]
    assert source["input_ids"].shape[1] == length
    with torch.no_grad():
        with record_residual(tiny_llama, 1) as residual:
            source_logits = tiny_llama.model(**source).logits
        positions = torch.arange(length)[None]
        with patch_residual(tiny_llama, 1, positions, residual[1]):
            patched_logits = tiny_llama.model(**base).logits
        base_logits = tiny_llama.model(**base).logits
    torch.testing.assert_close(patched_logits, source_logits, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(base_logits, source_logits)


def test_patch_one_position_only_changes_that_position_and_later(tiny_llama):
    batch = tiny_llama.tokenizer(["abcdefgh"], return_tensors="pt")
    with torch.no_grad():
        clean = tiny_llama.model(**batch).logits
        with patch_residual(tiny_llama, 0, 4, torch.randn(1, tiny_llama.hidden_size)):
            patched = tiny_llama.model(**batch).logits
    assert torch.equal(clean[:, :4], patched[:, :4])  # causal: earlier positions untouched
    assert not torch.allclose(clean[:, 4:], patched[:, 4:])


def test_replace_at_per_example_positions_and_gradients():
    hidden = torch.zeros(2, 5, 3)
    values = torch.ones(2, 3, requires_grad=True)
    out = replace_at(hidden, torch.tensor([1, 4]), values)
    assert out[0, 1].sum() == 3 and out[1, 4].sum() == 3 and out.sum() == 6
    out.sum().backward()
    assert torch.equal(values.grad, torch.ones(2, 3))
    with pytest.raises(IndexError, match="outside sequence length 5"):
        replace_at(hidden, torch.tensor([1, 5]), values)
    with pytest.raises(ValueError, match="3 examples, the batch has 2"):
        replace_at(hidden, torch.tensor([1, 2, 3]), values)


def test_patch_applies_to_prompt_only_during_generation(tiny_llama):
    prompt = "Hello there"
    ids = tiny_llama.tokenizer([prompt], return_tensors="pt")
    last = ids["input_ids"].shape[1] - 1
    value = torch.randn(1, tiny_llama.hidden_size) * 5
    with patch_residual(tiny_llama, 1, last, value):
        generated = greedy_complete(tiny_llama, [prompt], max_new_tokens=3)[0]
        # the same continuation, computed without the KV cache: patch the prompt, append tokens one by one
        text = prompt
        for _ in range(3):
            step = tiny_llama.tokenizer([text], return_tensors="pt")
            with torch.no_grad():
                next_id = tiny_llama.model(**step).logits[0, -1].argmax()
            text += tiny_llama.tokenizer.decode([int(next_id)])
    assert generated == text[len(prompt) :]


def test_hooks_removed_when_block_raises(tiny_llama):
    before = hook_ids(tiny_llama.model)
    with pytest.raises(RuntimeError, match="boom"):
        with record_residual(tiny_llama, [0, 1, 3]), edit_residual(tiny_llama, 2, lambda h: h):
            tiny_llama.model(**_batch(tiny_llama))
            assert len(hook_ids(tiny_llama.model) - before) == 4
            raise RuntimeError("boom")
    assert hook_ids(tiny_llama.model) == before


def test_hooks_removed_when_forward_raises(tiny_llama):
    before = hook_ids(tiny_llama.model)
    with pytest.raises(ValueError, match="returned shape"):
        with edit_residual(tiny_llama, 0, lambda h: h[:, :1]):
            tiny_llama.model(**_batch(tiny_llama))
    assert hook_ids(tiny_llama.model) == before


@pytest.mark.parametrize("layer", [4, -5, 100])
def test_layer_out_of_range_is_named(tiny_llama, layer):
    before = hook_ids(tiny_llama.model)
    with pytest.raises(LayerIndexError, match=rf"layer {layer} is out of range: the model has 4 decoder layers"):
        with record_residual(tiny_llama, layer):
            pass
    assert hook_ids(tiny_llama.model) == before


def test_negative_layer_counts_from_the_end(tiny_llama):
    with torch.no_grad(), record_residual(tiny_llama, -1) as residual:
        tiny_llama.model(**_batch(tiny_llama))
    assert list(residual) == [3]


class _TupleBlock(torch.nn.Module):
    """A decoder block in the style of older transformers: returns (hidden, attn_weights)."""

    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(4, 4)

    def forward(self, hidden):
        return self.linear(hidden), None


class _TupleModel(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.model = torch.nn.Module()
        self.model.layers = torch.nn.ModuleList([_TupleBlock(), _TupleBlock()])

    def forward(self, hidden):
        for block in self.model.layers:
            hidden = block(hidden)[0]
        return hidden


def test_tuple_outputs_are_read_and_edited():
    model = _TupleModel()
    x = torch.randn(1, 3, 4)
    assert not hook_ids(model)
    with torch.no_grad(), record_residual(model, 0) as residual:
        clean = model(x)
    torch.testing.assert_close(residual[0], model.model.layers[0](x)[0])
    with torch.no_grad(), patch_residual(model, 0, [[0, 1, 2]], torch.zeros(1, 3, 4)):
        patched = model(x)
    torch.testing.assert_close(patched, model.model.layers[1](torch.zeros(1, 3, 4))[0])
    assert not torch.allclose(clean, patched)
    assert not hook_ids(model)


@pytest.mark.parametrize("arch", ["llama", "qwen2", "gemma", "gemma3"])  # gemma3: its annotation says tuple
def test_start_after_continues_from_the_given_stream_and_restores_the_blocks(tiny_folders, arch):
    from hyperdas.target.models import load_target

    target = load_target(str(tiny_folders[arch]))
    batch, blocks = _batch(target), list(target.layers)
    with torch.no_grad(), record_residual(target, 1) as residual:
        clean = target.model(**batch).logits
    with torch.no_grad(), start_after(target, 1, residual[1]):
        resumed = target.model(**batch).logits
    torch.testing.assert_close(resumed, clean)
    with torch.no_grad(), start_after(target, 1, torch.zeros_like(residual[1])):
        assert not torch.allclose(target.model(**batch).logits, clean)  # the given stream is used
    with pytest.raises(RuntimeError, match="boom"), start_after(target, 2, residual[1]):
        raise RuntimeError("boom")
    assert all(a is b for a, b in zip(target.layers, blocks))


class _AnnotatedTupleBlock(_TupleBlock):
    def forward(self, hidden) -> tuple[torch.Tensor, None]:
        return super().forward(hidden)


def test_start_after_returns_tuples_where_blocks_do():
    model = _TupleModel()
    model.model.layers = torch.nn.ModuleList([_AnnotatedTupleBlock(), _AnnotatedTupleBlock()])
    given = torch.randn(1, 3, 4)
    with torch.no_grad(), start_after(model, 0, given):
        out = model(torch.randn(1, 3, 4))
    torch.testing.assert_close(out, model.model.layers[1](given)[0])
    plain = _TupleModel()  # blocks whose source returns tuples: read from their return statements
    with torch.no_grad(), start_after(plain, 0, given):
        torch.testing.assert_close(plain(torch.randn(1, 3, 4)), plain.model.layers[1](given)[0])
    unknown = _TupleModel()
    unknown.model.layers = torch.nn.ModuleList([_Opaque(), _Opaque()])
    with pytest.raises(TypeError, match="does not annotate"), start_after(unknown, 0, given):
        pass


class _Opaque(_TupleBlock):
    def forward(self, hidden):  # neither its return statement nor an annotation says what it returns
        return super().forward(hidden)


def test_checkpointed_blocks_give_the_same_gradient_and_are_restored(tiny_llama):
    from contextlib import nullcontext

    from hyperdas.target.hooks import checkpointed

    batch = tiny_llama.tokenizer(["The capital of France is", "Rome is in"], return_tensors="pt", padding=True)

    def gradient(context):
        delta = torch.zeros(tiny_llama.hidden_size, requires_grad=True)
        with context, edit_residual(tiny_llama, 0, lambda h: h + delta):
            tiny_llama.model(**batch, use_cache=False).logits.float().square().mean().backward()
        return delta.grad

    assert torch.allclose(gradient(nullcontext()), gradient(checkpointed(tiny_llama, 1)), atol=1e-6)
    assert all("forward" not in vars(block) for block in tiny_llama.model.model.layers)
    with torch.no_grad(), checkpointed(tiny_llama, 1):  # with a cache: plain forward passes, same output
        cached = tiny_llama.model(**batch, use_cache=True).logits
    assert torch.allclose(cached, tiny_llama.model(**batch, use_cache=True).logits)
