"""HyperDAS editing through the shared evaluation entry point: batch- and padding-independent."""

import pytest
import torch

from hyperdas.core.config import ConfigError
from hyperdas.hyper.model import HyperDAS, HyperDASConfig, Inference, add_instructions, instruction_text
from hyperdas.target.evaluate import encode, evaluate, generated_answers, intervened_logits

CONFIG = HyperDASConfig(layer=0, k=8, n_blocks=1, selection_heads=4)


@pytest.fixture(scope="module")
def rows(synthetic_pairs):
    pairs = synthetic_pairs(max_pairs={"train": 60, "val": 12, "test": 24})
    return pairs["test"]


@pytest.fixture(scope="module")
def enc(synthetic_target, rows):
    return add_instructions(encode(synthetic_target.tokenizer, rows), synthetic_target.tokenizer, rows)


@pytest.fixture(scope="module")
def model(synthetic_target):
    torch.manual_seed(0)
    return HyperDAS(synthetic_target, CONFIG).eval()


def test_instruction_uses_the_official_format(rows):
    row = rows[0]
    assert instruction_text(row) == f"{row['entity']} ; {row['counterfactual_entity']} - {row['target_attribute']}"
    assert instruction_text(row) == row["edit_instruction"]
    with pytest.raises(ConfigError, match="names 'colour'"):
        instruction_text(row, "{colour}")


@pytest.mark.parametrize("mode", ["soft", "one_to_many", "one_to_one"])
def test_an_example_does_not_depend_on_its_batch(synthetic_target, model, enc, mode):
    method = Inference(model, mode)
    with torch.no_grad():
        together, _ = intervened_logits(synthetic_target, 0, method, enc, list(range(8)), None)
        alone = torch.cat([intervened_logits(synthetic_target, 0, method, enc, [i], None)[0] for i in range(8)])
    assert torch.allclose(together, alone, atol=1e-4)


@pytest.mark.parametrize("mode", ["soft", "one_to_one"])
def test_an_example_does_not_depend_on_padding_side(synthetic_target, model, enc, mode):
    from hyperdas.target.evaluate import make_edit
    from hyperdas.target.hooks import edit_residual

    method, index = Inference(model, mode), list(range(10))
    rows = [enc.base[i] for i in index]
    assert len({len(r) for r in rows}) > 1
    width = max(len(r) for r in rows)
    offsets = [width - len(r) for r in rows]
    ids = torch.tensor([[0] * off + r for off, r in zip(offsets, rows)])
    mask = (torch.arange(width)[None] >= torch.tensor(offsets)[:, None]).long()
    with torch.no_grad():
        right, _ = intervened_logits(synthetic_target, 0, method, enc, index, None)
        edit = make_edit(method, synthetic_target, 0, enc, index, None, rows, offsets)
        with edit_residual(synthetic_target, 0, edit):
            logits = synthetic_target.model(
                input_ids=ids, attention_mask=mask, position_ids=(mask.cumsum(-1) - 1).clamp(min=0)
            ).logits
    left = torch.stack(
        [
            logits[r, off + enc.first[i] + t]
            for r, (off, i) in enumerate(zip(offsets, index))
            for t in range(len(enc.answers[i]))
        ]
    )
    assert torch.allclose(left, right, atol=1e-4)


def test_edited_run_started_from_the_read_pass_equals_the_full_run(synthetic_target, model, enc, monkeypatch):
    import hyperdas.target.evaluate as evaluate_module

    index = list(range(12))
    with torch.no_grad():
        started, _ = intervened_logits(synthetic_target, 0, Inference(model), enc, index, None)
        monkeypatch.setattr(evaluate_module, "can_start_after", lambda target: False)
        full, _ = intervened_logits(synthetic_target, 0, Inference(model), enc, index, None)
    torch.testing.assert_close(started, full)


def test_length_groups_split_only_when_it_saves_padding():
    from hyperdas.hyper.model import length_groups

    assert length_groups([5, 20, 6, 19]) == [[0, 2], [3, 1]]  # 80 padded tokens -> 12 + 40
    assert length_groups([10, 11, 12, 12]) == [[0, 1, 2, 3]]  # saves under 15%: one pass
    assert length_groups([7]) == [[0]]


def test_read_passes_in_groups_equal_one_padded_pass(synthetic_target, enc, monkeypatch):
    """Rows read in groups (here interleaved, so the scatter back into batch order is checked) give
    the states, selection and logits of one padded pass."""
    import hyperdas.hyper.model as editor_module

    torch.manual_seed(0)
    model = HyperDAS(synthetic_target, CONFIG.replace(position_offsets=4)).eval()
    torch.nn.init.normal_(model.selection.base_offset), torch.nn.init.normal_(model.selection.source_offset)
    index = list(range(12))
    with torch.no_grad():
        monkeypatch.setattr(editor_module, "length_groups", lambda widths: [list(range(len(widths)))])
        single, _ = intervened_logits(synthetic_target, 0, Inference(model), enc, index, None)
        A_single = model.last_plan[0]
        monkeypatch.setattr(
            editor_module,
            "length_groups",
            lambda widths: [list(range(1, len(widths), 2)), list(range(0, len(widths), 2))],
        )
        grouped, _ = intervened_logits(synthetic_target, 0, Inference(model), enc, index, None)
    torch.testing.assert_close(grouped, single, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(model.last_plan[0], A_single, atol=1e-5, rtol=1e-4)


def test_selection_never_reads_past_the_entity(synthetic_target, model, enc):
    with torch.no_grad():
        intervened_logits(synthetic_target, 0, Inference(model), enc, list(range(8)), None)
    A, W = model.last_plan
    for b, i in enumerate(range(8)):
        assert (A[b, :-1, enc.base_pos[i] + 1 :] == 0).all()  # base tokens after the entity keep base
        assert (A[b, enc.source_pos[i] + 1 : -1] == 0).all()  # source tokens after the entity are never read
    assert W.shape == (8, synthetic_target.hidden_size, 8)


def test_left_padded_generation_matches_right_padded_teacher_forcing(synthetic_target, model, enc):
    index = list(range(12))
    method = Inference(model, "one_to_many")
    with torch.no_grad():
        texts = generated_answers(synthetic_target, 0, method, enc, index, None, extra_tokens=0)
        logits, _ = intervened_logits(synthetic_target, 0, method, enc, index, None)
    first = logits.argmax(-1).tolist()
    starts = [sum(len(enc.answers[j]) for j in index[:n]) for n in range(len(index))]
    # the first generated token is the teacher-forced argmax at the first answer position
    for n, i in enumerate(index):
        assert synthetic_target.tokenizer.decode([first[starts[n]]]).strip() == texts[n].split()[0]


def test_scores_come_from_the_shared_entry_point(synthetic_target, model, enc):
    scores, records = evaluate(synthetic_target, 0, Inference(model, "soft"), enc)
    assert len(records) == len(enc) and set(scores["overall"]) == {"cause", "iso", "disentangle"}


def test_bad_use_is_named(synthetic_target, model, rows):
    bare = encode(synthetic_target.tokenizer, rows)
    with pytest.raises(ValueError, match="carry no instructions"):
        intervened_logits(synthetic_target, 0, Inference(model), bare, [0], None)
    with pytest.raises(ValueError, match="intervenes after layer 0, not 2"):
        intervened_logits(
            synthetic_target, 2, Inference(model), add_instructions(bare, synthetic_target.tokenizer, rows), [0], None
        )
    with pytest.raises(ValueError, match="unknown selection mode 'hard'"):
        Inference(model, "hard")
    with pytest.raises(ConfigError, match="subspace='pca'"):
        HyperDASConfig(subspace="pca")
    with pytest.raises(ConfigError, match="position_offsets=-2: must be >= 0"):
        HyperDASConfig(position_offsets=-2)
