"""Template selection, filtering on the synthetic world, and the on-disk verdict cache."""

import pytest

from hyperdas.core.config import ConfigError
from hyperdas.data.filter import AnswerCache, FilterConfig, filter_domain, select_templates, split_quotas
from hyperdas.data.ravel import RavelDataError

SPLIT = {"a": "train", "b": "train", "c": "val", "d": "test", "e": "train"}


def test_select_keeps_the_best_within_proportional_split_shares():
    scores = {"a": 0.9, "b": 0.8, "c": 0.1, "d": 0.2, "e": 0.85}
    assert select_templates(scores, SPLIT, 3) == ["a", "d", "c"]  # val and test kept despite low scores
    assert select_templates(scores, SPLIT, 4) == ["a", "e", "d", "c"]  # train: 3 of 5 templates -> 2 slots
    assert select_templates(scores, SPLIT, None) == ["a", "e", "b", "d", "c"]
    assert select_templates(scores, SPLIT, 1) == ["a"]


def test_split_quotas():
    assert split_quotas({"train": 22, "val": 12, "test": 12}, 4) == {"train": 2, "val": 1, "test": 1}
    # RAVEL's city/Country: val's exact share (0.96) is below its guaranteed slot, so train gets the 4th
    assert split_quotas({"train": 22, "val": 11, "test": 13}, 4) == {"train": 2, "val": 1, "test": 1}
    assert split_quotas({"train": 22, "val": 12, "test": 12}, 8) == {"train": 4, "val": 2, "test": 2}
    assert split_quotas({"train": 40, "val": 1, "test": 1}, 3) == {"train": 1, "val": 1, "test": 1}
    assert split_quotas({"train": 3, "val": 0, "test": 2}, 10) == {"train": 3, "test": 2}
    assert split_quotas({"train": 5, "val": 5, "test": 5}, 2) == {"train": 1, "val": 1, "test": 0}  # ties: train, val


def test_select_breaks_ties_on_the_text():
    assert select_templates({"b": 0.5, "a": 0.5, "e": 0.5}, SPLIT, 2) == ["a", "b"]


def test_synthetic_model_knows_its_world(synthetic_known):
    """The known-answer bed of every later test: >= 95% of the world's facts answered right."""
    assert set(synthetic_known.accuracy) == {"Country", "Continent", "Language"}
    for attribute, accuracy in synthetic_known.accuracy.items():
        assert accuracy >= 0.95, attribute
    assert synthetic_known.n_prompts["Country"] == 6 * 300
    known = synthetic_known.known_entities_per_split["Continent"]
    assert set(known) == {"train", "val", "test"}
    assert all(known[s] >= 0.95 * n for s, n in {"train": 180, "val": 60, "test": 60}.items())  # 60/20/20 split


def test_filtering_is_cached_and_resumes(synthetic_target, synthetic_data, fresh_cache):
    config = FilterConfig(attributes=("Country",), templates_per_attribute=2, selection_entities=8, max_entities=40)
    first = filter_domain(synthetic_target, synthetic_data, config, progress=False)
    cache = AnswerCache(synthetic_target, synthetic_data)
    assert cache.path.is_file() and str(fresh_cache) in str(cache.path)
    all_verdicts = dict(cache.verdicts)
    # 6 templates x 8 sampled entities, then 2 kept templates x 40 entities (some overlap)
    assert first.n_checked == len(all_verdicts) and 80 <= len(all_verdicts) <= 48 + 80
    again = filter_domain(synthetic_target, synthetic_data, config, progress=False)
    assert again.n_checked == 0 and again.known == first.known and again.selected == first.selected
    # a run served from the cache still says how many prompts it needed and what computing them cost
    assert again.n_looked_up == first.n_looked_up == len(all_verdicts)
    assert again.cache_seconds_per_prompt == first.cache_seconds_per_prompt > 0
    # keep half the verdicts, as if interrupted: only the rest are re-run, with the same outcome
    cache.verdicts = dict(list(all_verdicts.items())[: len(all_verdicts) // 2])
    cache._save()
    resumed = filter_domain(synthetic_target, synthetic_data, config, progress=False)
    assert resumed.n_checked == len(all_verdicts) - len(all_verdicts) // 2
    assert resumed.known == first.known
    assert AnswerCache(synthetic_target, synthetic_data).verdicts == all_verdicts


def test_chance_rates_compare_the_own_value_with_a_wrong_one(synthetic_target, synthetic_data, fresh_cache):
    config = FilterConfig(attributes=("Country", "Continent"), templates_per_attribute=2, max_entities=60)
    plain = filter_domain(synthetic_target, synthetic_data, config, progress=False)
    result = filter_domain(synthetic_target, synthetic_data, config.replace(chance_entities=30), progress=False)
    assert plain.chance == {} and result.known == plain.known  # the chance sample leaves the filter as it was
    for attribute, rates in result.chance.items():
        assert rates["entities"] == 30 and rates["checked_entities"] == 60
        assert rates["own"] >= 0.95 and rates["wrong"] <= 0.05  # the synthetic model knows its world
    again = filter_domain(synthetic_target, synthetic_data, config.replace(chance_entities=30), progress=False)
    assert again.n_checked == 0 and again.chance == result.chance  # seeded and cached


def test_another_model_gets_another_cache(synthetic_target, tiny_llama, synthetic_data, fresh_cache):
    assert AnswerCache(synthetic_target, synthetic_data).path != AnswerCache(tiny_llama, synthetic_data).path


def test_unknown_attribute_lists_the_valid_ones(synthetic_target, synthetic_data):
    with pytest.raises(RavelDataError, match=r"unknown attribute\(s\) \['Colour'\].*valid: \['Country'"):
        filter_domain(synthetic_target, synthetic_data, FilterConfig(attributes=("Colour",)), progress=False)


def test_a_negative_chance_sample_is_refused():
    with pytest.raises(ConfigError, match=r"FilterConfig.chance_entities=-1: must be >= 0"):
        FilterConfig(chance_entities=-1)


def test_config_round_trips_through_json(tmp_path):
    config = FilterConfig(attributes=("Country", "Language"), max_entities=None)
    assert FilterConfig.load(config.save(tmp_path / "filter.json")) == config


def test_model_fingerprint_follows_the_weights_not_the_path(tiny_folders, tmp_path):
    import shutil

    import torch

    from hyperdas.data.filter import model_fingerprint
    from hyperdas.target.models import load_target

    moved = shutil.copytree(tiny_folders["llama"], tmp_path / "llama")
    original, copy = load_target(str(tiny_folders["llama"])), load_target(str(moved))
    assert model_fingerprint(original) == model_fingerprint(copy)
    with torch.no_grad():
        copy.model.lm_head.weight.view(-1)[0] += 1.0  # tied to the embeddings' first value
    assert model_fingerprint(original) != model_fingerprint(copy)
