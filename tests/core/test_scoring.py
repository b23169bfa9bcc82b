"""The filter rule: answer joining, teacher-forced exact match, and the shared-prefix path."""

import pytest
import torch

from hyperdas.core.scoring import answer_ids, answer_text, check_answers


@pytest.mark.parametrize(
    "prompt, joined",
    [
        ("Paris is in", " France"),
        ("Paris is in ", "France"),
        ('"city": "', "France"),
        ("the city's '", "France"),
        ("Paris (", "France"),
        ("Paris:", " France"),
    ],
)
def test_value_is_joined_with_a_space_unless_the_prompt_ends_in_one_quote_or_paren(prompt, joined):
    assert answer_text(prompt, "France") == joined


def test_answer_ids_are_the_first_three_tokens_of_the_joined_value(tiny_llama):
    tok = tiny_llama.tokenizer
    assert answer_ids(tok, "x is", "abcd") == tok(" ab", add_special_tokens=False)["input_ids"]
    assert answer_ids(tok, "x is ", "abcd") == tok("abc", add_special_tokens=False)["input_ids"]


def _greedy_word(target, prompt: str) -> str:
    ids = target.tokenizer(prompt, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        out = target.model.generate(ids, max_new_tokens=1, do_sample=False, pad_token_id=0)
    return target.tokenizer.decode(out[0, ids.shape[1] :])


# templates with a shared prefix before the entity, one- and two-word entities (padding) and
# batches of 3 exercise the key/value reuse; the first template has no shared prefix at all
TEMPLATES = [
    "%s is a city in the country of",
    "Travel guide : %s , on the continent of",
    "Q : Which language is spoken in %s ? A :",
    "The mayor of %s said that",
]


@pytest.mark.parametrize("reuse_prefix", [True, False])
def test_models_own_greedy_answer_passes_and_another_fails(synthetic_target, synthetic_data, reuse_prefix):
    entities = sorted(synthetic_data.entity_attributes)[:12]
    items, expected = [], []
    for template in TEMPLATES:
        for entity in entities:
            value = _greedy_word(synthetic_target, template % entity)
            wrong = "Velish" if value != "Velish" else "Tarnic"
            items += [(template, entity, value), (template, entity, wrong)]
            expected += [True, False]
    got = check_answers(synthetic_target, items, batch_size=3, reuse_prefix=reuse_prefix, progress=False)
    assert got == expected


@pytest.mark.parametrize("arch", ["llama", "qwen2", "gemma", "gemma3"])
def test_packed_rows_give_the_padded_rows_logits(tiny_folders, arch):
    """Rows packed without padding (position ids restarting, transformers' packed-sequence masks)
    score as the right-padded batch; Gemma 3's sliding-window blocks too (rows longer than its
    window of 8)."""
    from hyperdas.core.scoring import answer_logits, packed, packed_answer_logits
    from hyperdas.target.hooks import start_after
    from hyperdas.target.models import load_target

    target = load_target(str(tiny_folders[arch]))
    generator = torch.Generator().manual_seed(0)
    vocab = target.model.get_input_embeddings().num_embeddings
    rows = [torch.randint(3, vocab, (n,), generator=generator).tolist() for n in (5, 19, 11, 14)]
    wanted = [(r, p) for r, row in enumerate(rows) for p in (0, len(row) // 2, len(row) - 1)]
    with torch.no_grad():
        padded = answer_logits(target.model, rows, wanted)
        assert torch.allclose(packed_answer_logits(target.model, rows, wanted), padded, atol=1e-4)
        # from stored states after a layer, as training's edited run starts
        width = max(len(r) for r in rows)
        ids = torch.tensor([r + [0] * (width - len(r)) for r in rows])
        mask = (torch.arange(width)[None] < torch.tensor([len(r) for r in rows])[:, None]).long()
        states = target.model(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states[2]
        with start_after(target, 1, packed(states, [len(r) for r in rows])):
            assert torch.allclose(packed_answer_logits(target.model, rows, wanted), padded, atol=1e-4)
