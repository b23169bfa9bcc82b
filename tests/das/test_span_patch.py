"""Patching every base entity token: which columns it writes, and what it carries in the synthetic world."""

import pytest
import torch

from hyperdas.das.span_patch import EntitySpanPatch, span_columns
from hyperdas.target.evaluate import Encoded, encode, evaluate


def encode_stub(rows, base_start, base_pos, source_pos) -> Encoded:
    n = len(rows)
    return Encoded(rows, [[0]] * n, [0] * n, base_pos, rows, source_pos, [{}] * n, [""] * n, [1] * n, [], base_start)


def test_columns_are_right_aligned_at_the_entities_last_tokens():
    assert span_columns(2, 4, 6) == [(4, 6), (3, 5), (2, 4)]
    assert span_columns(4, 4, 6) == [(4, 6)]  # a one-token entity
    assert span_columns(1, 4, 1) == [(4, 1), (3, 0)]  # never reads before the source's first column


def test_a_bad_entity_start_is_refused_by_name():
    with pytest.raises(ValueError, match="base entity start 5 must lie in 0..its last token 4"):
        span_columns(5, 4, 6)


def test_it_writes_every_entity_column_and_nothing_else(tiny_llama):
    rows = [[5, 6, 7, 8, 9, 10], [11, 12, 13, 14, 15, 16]]
    enc = encode_stub(rows, base_start=[1, 3], base_pos=[3, 3], source_pos=[4, 2])
    edit = EntitySpanPatch().edit_for(tiny_llama, 0, enc, [0, 1], rows, [0, 0])
    hidden = torch.zeros(2, 6, tiny_llama.model.config.hidden_size)
    changed = (edit(hidden) != 0).any(-1)
    assert changed.tolist() == [[False, True, True, True, False, False], [False, False, False, True, False, False]]


def test_replacing_every_entity_token_early_carries_the_source_value(synthetic_target, synthetic_pairs):
    rows = synthetic_pairs(max_pairs={"train": 4, "val": 4, "test": 60})["test"]
    enc = encode(synthetic_target.tokenizer, rows)
    assert any(s < p for s, p in zip(enc.base_start, enc.base_pos))  # multi-token entities
    span = evaluate(synthetic_target, 0, EntitySpanPatch(), enc)[0]["overall"]
    assert span["cause"] == 1  # after block 0, nothing but the entity tokens holds the entity yet
