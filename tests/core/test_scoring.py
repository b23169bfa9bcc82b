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
