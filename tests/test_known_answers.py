"""Known answers on the synthetic world, whose model has a purely local first block (every fact
about the entity reaches the question through the entity token's residual after layer 0)."""
import pytest

from hyperdas.data.pairs import PairConfig, build_pairs
from hyperdas.evaluate import encode, evaluate
from hyperdas.interventions import FullInterchange
from hyperdas.train import DASConfig, select_rows, train_das

COUNTRY = DASConfig(target_attribute="Country", layer=1, k=8, lr=1e-2, batch_size=16, steps=300, eval_every=50,
                    patience=3)


@pytest.fixture(scope="module")
def pairs(synthetic_data, synthetic_known, synthetic_target):
    return build_pairs(synthetic_data, synthetic_known, synthetic_target.tokenizer,
                       PairConfig(max_pairs={"train": 600, "val": 90, "test": 300}))


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


@pytest.mark.parametrize("layer", [0, 1])
def test_full_patch_of_the_entity_flips_the_answer_and_breaks_isolation(synthetic_target, country_test, layer):
    overall = evaluate(synthetic_target, layer, FullInterchange(), country_test)[0]["overall"]
    # the source's entity replaces the base's: its country is read (Cause), and so are its
    # continent and language, which country fixes (Iso)
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
