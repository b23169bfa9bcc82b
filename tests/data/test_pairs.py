"""Each pair rule, asserted on pairs built from the synthetic world and its trained model."""

import dataclasses
import random
from collections import Counter

import pytest

from hyperdas.core.config import ConfigError
from hyperdas.data.filter import FilterConfig, filter_domain, query_blind_templates
from hyperdas.data.pairs import (
    PAIR_FIELDS,
    PairConfig,
    _pick_by_value,
    build_pairs,
    pair_counts,
    source_label_counts,
    split_at_entity,
)
from hyperdas.data.ravel import RavelDataError

SMALL = PairConfig(max_pairs={"train": 240, "val": 60, "test": 60})


@pytest.fixture(scope="module")
def pairs(synthetic_data, synthetic_known, synthetic_target):
    return build_pairs(
        synthetic_data,
        synthetic_known,
        synthetic_target.tokenizer,
        SMALL.replace(generalisation_sets=True, entity_split="ravel"),
    )


def rows(pairs):
    return [row for split in pairs.values() for row in split]


def test_fields_and_counts(pairs):
    assert set(pairs) == {"train", "val", "test", "test_entity", "test_context"}
    assert list(pairs["train"].features) == list(PAIR_FIELDS)
    counts = pair_counts(pairs)
    assert counts["train"] == {
        f"{k}/{a}": 40 for k in ("causal", "isolate") for a in ("Continent", "Country", "Language")
    }


def test_causal_rows(pairs, synthetic_data):
    values = synthetic_data.entity_attributes
    causal = [r for r in rows(pairs) if r["attribute_type"] == "causal"]
    assert causal
    for r in causal:
        a = r["target_attribute"]
        assert r["attribute"] == a and r["entity"] != r["counterfactual_entity"]
        assert r["target"] == values[r["entity"]][a]
        assert r["counterfactual_target"] == values[r["counterfactual_entity"]][a] != r["target"]


def test_isolate_rows(pairs, synthetic_data):
    values = synthetic_data.entity_attributes
    isolate = [r for r in rows(pairs) if r["attribute_type"] == "isolate"]
    assert isolate
    for r in isolate:
        q = r["attribute"]
        assert q != r["target_attribute"] and r["entity"] != r["counterfactual_entity"]
        assert r["target"] == values[r["entity"]][q]
        assert r["counterfactual_target"] == values[r["counterfactual_entity"]][q] != r["target"]


def test_base_prompt_is_a_known_fact_and_the_instruction_names_both_entities(pairs, synthetic_known):
    for r in rows(pairs):
        assert r["entity"] in synthetic_known.known[r["attribute"]][r["base_template"]]
        assert r["edit_instruction"] == f"{r['entity']} ; {r['counterfactual_entity']} - {r['target_attribute']}"
        if r["attribute_type"] == "causal":  # the model also knows the edit's expected answer
            assert r["counterfactual_entity"] in synthetic_known.known[r["attribute"]][r["base_template"]]


def test_prefix_suffix_and_last_entity_token(pairs, synthetic_target):
    tok = synthetic_target.tokenizer
    for r in rows(pairs)[:200]:
        assert r["input_prefix"] + r["input_suffix"] == r["base_template"] % r["entity"]
        assert r["counterfactual_input_prefix"].endswith(r["counterfactual_entity"])
        for prefix, suffix, entity, pos in [
            (r["input_prefix"], r["input_suffix"], r["entity"], r["base_entity_position"]),
            (
                r["counterfactual_input_prefix"],
                r["counterfactual_input_suffix"],
                r["counterfactual_entity"],
                r["source_entity_position"],
            ),
        ]:
            ids = tok(prefix + suffix)["input_ids"]
            assert tok.convert_ids_to_tokens(ids[pos]) == entity.split()[-1]
            assert ids[: pos + 1] == tok(prefix)["input_ids"]  # everything up to the entity, BOS included


def test_splits_follow_ravel(pairs, synthetic_data):
    prompt_split, entity_split = synthetic_data.prompt_to_split, synthetic_data.entity_to_split
    expected = {
        "train": ("train", "train"),
        "val": ("val", "val"),
        "test": ("test", "test"),
        "test_entity": ("train", "test"),
        "test_context": ("test", "train"),
    }
    for name, split in pairs.items():
        templates, entities = expected[name]
        assert len(split) > 0, name
        for r in split:
            assert prompt_split[r["base_template"]] == templates and entity_split[r["entity"]] == entities
            assert entity_split[r["counterfactual_entity"]] == entities
            if r["source_kind"] == "template":
                assert prompt_split[r["source_template"]] == templates


def test_entity_split_both_holds_out_templates_only(synthetic_data, synthetic_known, synthetic_target):
    built = build_pairs(synthetic_data, synthetic_known, synthetic_target.tokenizer, SMALL)
    assert set(built) == {"train", "val", "test"}
    test_entities = {synthetic_data.entity_to_split[r["entity"]] for r in built["test"]}
    assert test_entities == {"train", "val", "test"}
    assert {synthetic_data.prompt_to_split[t] for t in built["test"]["base_template"]} == {"test"}


def test_sources_use_templates_of_any_attribute_and_wikipedia(pairs, synthetic_data):
    kinds = Counter(r["source_kind"] for r in pairs["train"])
    assert kinds["template"] > 0 and kinds["wikipedia"] > 0
    wiki = set(synthetic_data.wikipedia_prompts)
    assert all(r["source_template"] in wiki for r in pairs["train"] if r["source_kind"] == "wikipedia")


def test_a_named_wikipedia_prompt_keeps_its_entity(synthetic_data, synthetic_known, synthetic_target):
    city = sorted(synthetic_data.entity_attributes)[0]
    named = {"%s was founded by a king": {"split": "train", "entity": city}}
    data = dataclasses.replace(synthetic_data, wikipedia_prompts=named)
    built = build_pairs(data, synthetic_known, synthetic_target.tokenizer, SMALL.replace(max_pairs={"train": 3000}))
    used = [r for r in built["train"] if r["source_kind"] == "wikipedia"]
    assert used and all(r["counterfactual_entity"] == city for r in used)


def test_causal_fraction(synthetic_data, synthetic_known, synthetic_target):
    built = build_pairs(
        synthetic_data,
        synthetic_known,
        synthetic_target.tokenizer,
        SMALL.replace(causal_fraction=0.75, max_pairs={"train": 240}),
    )
    kinds = Counter(built["train"]["attribute_type"])
    assert kinds == {"causal": 180, "isolate": 60}


def test_deterministic_for_a_seed(synthetic_data, synthetic_known, synthetic_target):
    build = lambda seed: build_pairs(
        synthetic_data,
        synthetic_known,
        synthetic_target.tokenizer,  # noqa: E731
        SMALL.replace(seed=seed),
    )["train"].to_list()
    assert build(3) == build(3)
    assert build(3) != build(4)


def test_balancing_draws_values_uniformly():
    entities = [f"a{i}" for i in range(90)] + [f"b{i}" for i in range(10)]
    value_of = lambda e: e[0]  # noqa: E731
    draw = lambda balance: Counter(  # noqa: E731
        value_of(_pick_by_value(rng, entities, value_of, "z", balance)) for _ in range(2000)
    )
    rng = random.Random(0)
    assert 0.45 < draw(True)["b"] / 2000 < 0.55
    assert draw(False)["b"] / 2000 < 0.15
    assert _pick_by_value(rng, entities[:5], value_of, "a", True) is None  # nothing differs


def test_source_label_counts_per_kind_and_attribute(pairs):
    counts = source_label_counts(pairs)
    assert set(counts) == {f"{k}/{a}" for k in ("causal", "isolate") for a in ("Continent", "Country", "Language")}
    assert sum(counts["causal/Continent"].values()) == 40
    assert set(counts["causal/Continent"]) <= {"Norvia", "Sudara", "Estland", "Westmar", "Ocealis"}


def test_split_at_entity_uses_the_last_occurrence():
    assert split_at_entity("Paris, Paris is in", "Paris") == ("Paris, Paris", " is in")
    with pytest.raises(RavelDataError, match="does not contain"):
        split_at_entity("Rome is in", "Paris")


def test_bad_configs_are_named():
    with pytest.raises(ConfigError, match="entity_split='x'"):
        PairConfig(entity_split="x")
    with pytest.raises(ConfigError, match="unknown split"):
        PairConfig(max_pairs={"dev": 3})
    with pytest.raises(ConfigError, match="causal_fraction"):
        PairConfig(causal_fraction=2)


def test_unknown_or_unfiltered_attribute(synthetic_data, synthetic_known, synthetic_target):
    with pytest.raises(RavelDataError, match=r"unknown attribute\(s\) \['Size'\]"):
        build_pairs(
            synthetic_data, synthetic_known, synthetic_target.tokenizer, SMALL.replace(target_attributes=("Size",))
        )


def test_a_model_that_knows_nothing_gives_a_clear_error(tiny_llama, synthetic_data):
    known = filter_domain(
        tiny_llama, synthetic_data, FilterConfig(templates_per_attribute=1, max_entities=20), progress=False
    )
    with pytest.raises(RavelDataError, match=r"zero usable causal pairs for city/Country .* answered 0 of 20 prompts"):
        build_pairs(synthetic_data, known, tiny_llama.tokenizer, SMALL)


def test_config_round_trips_through_json(tmp_path):
    config = SMALL.replace(generalisation_sets=True)
    assert PairConfig.load(config.save(tmp_path / "pairs.json")) == config


def test_loading_pairs_that_were_never_built_says_what_to_run(tmp_path):
    from hyperdas.data.dataset import load_pairs

    with pytest.raises(RavelDataError, match="run notebooks/01_data.ipynb"):
        load_pairs(tmp_path / "nothing")


def test_query_blind_templates_share_their_text_before_the_entity_across_attributes(synthetic_data):
    blind = query_blind_templates(synthetic_data, ("Country", "Continent", "Language"))
    assert "Postcard from %s , in the country of" in blind["Country"]
    assert "%s is a city in the country of" not in blind["Country"]  # entity first: nothing to read or edit
    assert "Q : Which country is %s in ? A :" not in blind["Country"]  # its prefix names the question
    for attribute, templates in blind.items():
        for template in templates:
            prefix = template.split("%s")[0]
            others = [a for a, ts in blind.items() if a != attribute and any(t.startswith(prefix) for t in ts)]
            assert prefix and others, template


def test_the_query_blind_split_uses_only_blind_base_templates(synthetic_data, synthetic_known, synthetic_target):
    config = SMALL.replace(query_blind_pairs=60)
    built = build_pairs(synthetic_data, synthetic_known, synthetic_target.tokenizer, config)
    blind = query_blind_templates(synthetic_data, config.target_attributes)
    split = built["query_blind"]
    assert len(split) == 60 and set(split["attribute_type"]) == {"causal", "isolate"}
    assert all(r["base_template"] in blind[r["attribute"]] for r in split)
    assert all(r["split"] == "query_blind" for r in split)
    # the other splits are the ones built without it
    plain = build_pairs(synthetic_data, synthetic_known, synthetic_target.tokenizer, SMALL)
    assert all(built[s][:] == plain[s][:] for s in plain)


def test_a_query_blind_split_without_its_filter_run_is_refused(synthetic_data, synthetic_known, synthetic_target):
    without = dataclasses.replace(synthetic_known, blind_known={})
    with pytest.raises(RavelDataError, match="query_blind_pairs needs a filter run with query_blind_entities"):
        build_pairs(synthetic_data, without, synthetic_target.tokenizer, SMALL.replace(query_blind_pairs=10))


@pytest.mark.parametrize("damage", ["no meta", "cut meta", "edited arrow", "flipped bytes"])
def test_damaged_pairs_are_refused_on_load_with_the_fix(synthetic_pairs, synthetic_target, tmp_path, damage):
    from hyperdas.data.dataset import load_pairs, save_pairs

    pairs = synthetic_pairs(max_pairs={"train": 20, "val": 6, "test": 6})
    folder = save_pairs(pairs, tmp_path / "p", {"model": "x"})
    meta = folder / "pairs_meta.json"
    arrow = next((folder / "train").glob("*.arrow"))
    if damage == "no meta":
        meta.unlink()
    elif damage == "cut meta":
        meta.write_text(meta.read_text()[:40])
    else:
        data = bytearray(arrow.read_bytes())
        if damage == "edited arrow":  # same length, another entity name
            at = data.find(pairs["train"][0]["input_prefix"].encode())
            assert at >= 0
            data[at] = ord("X") if data[at] != ord("X") else ord("Y")
        else:
            for i in range(len(data) // 2, len(data) // 2 + 64):
                data[i] ^= 0xFF
        arrow.write_bytes(bytes(data))
    with pytest.raises(RavelDataError, match=r"pairs.*(no pairs_meta|damaged|cannot be read|differ).*rebuild them"):
        load_pairs(folder, tokenizer=synthetic_target.tokenizer)
