"""Known answers on the synthetic world, whose model has a purely local first block (every fact
about the entity reaches the question through the entity token's residual after layer 0)."""

import pytest

from hyperdas.das.interventions import FullInterchange
from hyperdas.das.training import DASConfig, select_rows, train_das
from hyperdas.target.evaluate import encode, evaluate

COUNTRY = DASConfig(
    target_attribute="Country", layer=0, k=8, lr=1e-2, batch_size=16, steps=300, eval_every=50, patience=3
)


@pytest.fixture(scope="module")
def pairs(synthetic_pairs):
    return synthetic_pairs(max_pairs={"train": 600, "val": 90, "test": 300})


@pytest.fixture(scope="module")
def country_test(pairs, synthetic_target):
    return encode(synthetic_target.tokenizer, select_rows(pairs["test"], COUNTRY.replace(method="mdas")))


@pytest.fixture(scope="module")
def trained(synthetic_target, pairs, country_test):
    out = {}
    for method in ("das", "mdas"):
        result = train_das(synthetic_target, pairs, COUNTRY.replace(method=method), progress=False)
        out[method] = evaluate(synthetic_target, COUNTRY.layer, result.intervention, country_test)[0]["overall"]
    return out


def test_full_patch_of_the_entity_flips_the_answer_and_breaks_isolation(synthetic_target, country_test):
    overall = evaluate(synthetic_target, 0, FullInterchange(), country_test)[0]["overall"]
    # after the local block 0 the entity token is all the question can learn the entity from: the
    # source's entity replaces the base's, its country is read (Cause), and so are its continent
    # and language, which country fixes (Iso). (After block 1 the question may have read it already.)
    assert overall["cause"] >= 0.95 and overall["iso"] <= 0.05


def test_full_patch_at_the_last_layer_changes_nothing(synthetic_target, country_test):
    overall = evaluate(synthetic_target, 3, FullInterchange(), country_test)[0]["overall"]
    assert overall["cause"] <= 0.05 and overall["iso"] >= 0.95  # the question's token was never read from


def test_das_finds_the_country_subspace(trained):
    assert trained["das"]["cause"] >= 0.9


def test_mdas_isolates_better_than_das(trained):
    # DAS's subspace also carries what country fixes; MDAS trades Cause for Iso
    assert trained["mdas"]["iso"] >= trained["das"]["iso"] + 0.2


def test_generation_scores_agree_with_teacher_forcing_on_full_patches(synthetic_target, country_test):
    teacher, _ = evaluate(synthetic_target, 0, FullInterchange(), country_test)
    generated, records = evaluate(synthetic_target, 0, FullInterchange(), country_test, mode="generation")
    assert abs(generated["overall"]["cause"] - teacher["overall"]["cause"]) <= 0.05
    assert all(isinstance(r["output"], str) for r in records)


def _greedy_by_rerunning(target, layer, intervention, enc, index, sources, steps):
    """Reference decoding: the whole right-padded sequence re-run for every new token."""
    import torch

    from hyperdas.core.scoring import answer_logits
    from hyperdas.target.hooks import edit_residual, replace_at

    rows = [enc.base[i][: enc.first[i] + 1] for i in index]
    pos, src = torch.tensor([enc.base_pos[i] for i in index]), sources[index]
    edit = lambda h: replace_at(h, pos, intervention(h[torch.arange(len(index)), pos], src))  # noqa: E731
    with edit_residual(target, layer, edit), torch.no_grad():
        for _ in range(steps):
            wanted = [(r, len(row) - 1) for r, row in enumerate(rows)]
            tokens = answer_logits(target.model, rows, wanted, target.tokenizer.pad_token_id).argmax(-1).tolist()
            rows = [row + [t] for row, t in zip(rows, tokens)]
    return [target.tokenizer.decode(row[enc.first[i] + 1 :], skip_special_tokens=True) for row, i in zip(rows, index)]


def test_cached_left_padded_generation_equals_rerunning_the_sequence(synthetic_target, country_test):
    import torch

    from hyperdas.das.interventions import RotatedSpaceInterchange
    from hyperdas.target.evaluate import generated_answers, source_vectors

    torch.manual_seed(0)
    index = list(range(min(24, len(country_test))))
    sources = source_vectors(synthetic_target, 0, country_test)
    steps = max(country_test.expected_len[i] for i in index) + 2
    assert len({len(country_test.base[i]) for i in index}) > 1  # prompts of several lengths: padding matters
    for intervention in (FullInterchange(), RotatedSpaceInterchange(synthetic_target.hidden_size, 8)):
        with torch.no_grad():
            cached = generated_answers(synthetic_target, 0, intervention, country_test, index, sources)
        assert cached == _greedy_by_rerunning(synthetic_target, 0, intervention, country_test, index, sources, steps)
