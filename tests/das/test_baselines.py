"""run_baselines: one record per (method, attribute, layer), the same evaluation for all; named errors."""

import pytest

from hyperdas.das.baselines import run_baselines, table, target_attributes
from hyperdas.das.training import DASConfig
from hyperdas.experiments.faithfulness import conflict_set
from hyperdas.target.hooks import LayerIndexError

BASE = DASConfig(layer=1, k=8, batch_size=8, steps=4, eval_every=2, max_val_pairs=24)


@pytest.fixture(scope="module")
def pairs(synthetic_pairs):
    return synthetic_pairs(max_pairs={"train": 120, "val": 60, "test": 60})


def test_records_cover_every_method_attribute_and_layer(synthetic_target, pairs, tmp_path):
    records = run_baselines(
        synthetic_target, pairs, BASE, attributes=["Country"], layers=[0, 1], checkpoint_root=tmp_path, progress=False
    )
    assert [(r["method"], r["layer"]) for r in records] == [(m, l) for l in (0, 1) for m in ("das", "mdas", "full")]
    for r in records:
        assert r["domain"] == "city" and r["attribute"] == "Country" and r["seed"] == 0
        assert r["disentangle"] == pytest.approx((r["cause"] + r["iso"]) / 2)
        assert set(r["generation"]) == {"cause", "iso", "disentangle"} and r["n_causal"] > 0 and r["n_isolate"] > 0
    trained = [r for r in records if r["method"] != "full"]
    assert all(r["config"]["target_attribute"] == "Country" and r["history"] for r in trained)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        f"{m}-Country-L{l}-k8-s0" for m in ("das", "mdas") for l in (0, 1)
    ]
    rows = table(records, layer=1)
    assert [r["method"] for r in rows] == ["das", "mdas", "full"] and set(rows[0]) >= {"cause", "iso", "disentangle"}
    # rerunning resumes every finished run from its checkpoint: same numbers, no training
    again = run_baselines(
        synthetic_target,
        pairs,
        BASE,
        attributes=["Country"],
        layers=[0, 1],
        generation=False,
        checkpoint_root=tmp_path,
        progress=False,
    )
    assert [r["cause"] for r in again] == [r["cause"] for r in records]
    assert all(r["resumed_from"] == r["steps_run"] for r in again if r["method"] != "full")


def test_target_attributes_lists_those_with_causal_rows(pairs):
    assert target_attributes(pairs["train"]) == ["Continent", "Country", "Language"]


def test_bad_requests_are_named(synthetic_target, pairs):
    with pytest.raises(ValueError, match=r"unknown method\(s\) \['svd'\]"):
        run_baselines(synthetic_target, pairs, BASE, methods=["svd"], progress=False)
    with pytest.raises(ValueError, match=r"no causal training pairs for attribute\(s\) \['Size'\]"):
        run_baselines(synthetic_target, pairs, BASE, attributes=["Size"], progress=False)
    with pytest.raises(LayerIndexError):
        run_baselines(synthetic_target, pairs, BASE, layers=[9], progress=False)
    with pytest.raises(ValueError, match="no 'test' split"):
        run_baselines(synthetic_target, {"train": pairs["train"]}, BASE, progress=False)


def test_query_blind_split_is_scored_for_every_method(synthetic_target, synthetic_pairs):
    pairs = synthetic_pairs(max_pairs={"train": 120, "val": 30, "test": 30}, query_blind_pairs=30)
    records = run_baselines(
        synthetic_target, pairs, BASE.replace(steps=2), attributes=["Country"], generation=False, progress=False
    )
    assert [r["method"] for r in records] == ["das", "mdas", "full"]
    for r in records:
        blind = r["query_blind"]
        assert set(blind) == {"cause", "iso", "disentangle"}
        assert blind["disentangle"] == pytest.approx((blind["cause"] + blind["iso"]) / 2)
    assert records[-1]["query_blind"]["cause"] > 0.5  # a full patch edits whatever the prompt shows


def test_conflict_pairs_are_scored_per_attribute(synthetic_target, pairs):
    conflict = conflict_set(pairs["test"], n=40)
    mine = sum(r["target_attribute"] == "Country" for r in conflict)
    records = run_baselines(
        synthetic_target,
        pairs,
        BASE.replace(steps=2),
        attributes=["Country"],
        generation=False,
        progress=False,
        conflict=conflict,
    )
    for r in records:
        shares = r["conflict"]
        assert shares["n"] == mine > 0
        assert sum(shares[f"follows_{o}"] for o in ("activations", "instruction", "neither")) == pytest.approx(1)
    # patching the source's entity state reads no instruction: it follows the activations
    assert records[-1]["conflict"]["follows_activations"] > 0.5 and records[-1]["conflict"]["follows_instruction"] < 0.2


def test_with_several_domains_each_domain_gets_its_own_baseline_of_an_attribute():
    from datasets import Dataset

    from hyperdas.das.baselines import attribute_jobs
    from hyperdas.das.training import DASConfig, selected_indices

    rows = {
        "domain": ["city", "city", "town", "town", "town"],
        "target_attribute": ["Country", "Country", "Country", "Climate", "Country"],
        "attribute_type": ["causal", "isolate", "causal", "causal", "isolate"],
    }
    from hyperdas.target.evaluate import REQUIRED_FIELDS

    rows |= {f: [""] * 5 for f in REQUIRED_FIELDS if f not in rows}  # the fields selection does not read
    split = Dataset.from_dict(rows)
    assert attribute_jobs(split, ["Climate", "Country"]) == [
        ("city", "Country"),
        ("town", "Climate"),
        ("town", "Country"),
    ]
    town = DASConfig(method="mdas", target_attribute="Country", domain="town")
    assert selected_indices(split, town) == [2, 4]
    assert selected_indices(split, town.replace(domain=None)) == [0, 1, 2, 4]
    one = Dataset.from_dict({k: v[:2] for k, v in rows.items()})
    assert attribute_jobs(one, ["Country"]) == [(None, "Country")]  # one domain: named as before
