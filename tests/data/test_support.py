"""The known-entity rule: which domains and attributes are measured, and what is reported left out."""

from types import SimpleNamespace

import pytest

from hyperdas.data.ravel import RavelDataError
from hyperdas.data.support import kept_attributes, left_out, support_table, supported_pairs

SPLITS = {"t_train": "train", "t_val": "val", "t_test": "test"}


def _filtered(known: dict[str, dict[str, dict[str, list[str]]]]):
    """{domain: FilterResult-like} from {domain: {attribute: {template: entities}}}; unless given, the
    first training entity is also known under the val template (the counts stay the same)."""
    for per in known.values():
        for templates in per.values():
            if "t_val" not in templates and templates.get("t_train"):
                templates["t_val"] = templates["t_train"][:1]
    return {d: SimpleNamespace(known=per) for d, per in known.items()}


def _datas(domains):
    return {d: SimpleNamespace(prompt_to_split=SPLITS) for d in domains}


def _entities(n: int, prefix: str = "e") -> list[str]:
    return [f"{prefix}{i}" for i in range(n)]


def test_attributes_with_few_known_entities_or_no_test_template_are_left_out_with_their_counts():
    filtered = _filtered(
        {
            "city": {
                "Country": {"t_train": _entities(50), "t_test": _entities(10)},
                "Timezone": {"t_train": _entities(12), "t_test": _entities(3)},
                "Language": {"t_train": _entities(45), "t_test": []},
                "Continent": {"t_train": _entities(30), "t_test": _entities(20, "f")},
            }
        }
    )
    rows = support_table(filtered, _datas(["city"]), min_known_entities=40)
    by = {r["attribute"]: r for r in rows}
    assert by["Country"]["kept"] and by["Country"]["known_entities"] == 50 and by["Country"]["known_test"] == 10
    assert by["Continent"]["kept"] and by["Continent"]["known_entities"] == 50  # 30 + 20 distinct
    assert by["Timezone"]["why"] == "12 known entities < 40"
    assert by["Language"]["why"] == "no entity known under a test template"
    assert kept_attributes(rows) == {"city": ["Country", "Continent"]}
    assert {r["attribute"] for r in left_out(rows)} == {"Timezone", "Language"}


def test_an_attribute_no_val_template_knows_is_left_out():
    filtered = _filtered(
        {
            "nobel_prize_winner": {
                "Field": {"t_train": _entities(60), "t_test": _entities(5)},
                "Gender": {"t_train": _entities(60), "t_val": [], "t_test": _entities(5)},
            }
        }
    )
    rows = support_table(filtered, _datas(["nobel_prize_winner"]))
    assert [(r["attribute"], r["known_val"], r.get("why")) for r in rows] == [
        ("Field", 1, None),
        ("Gender", 0, "no entity known under a val template"),
    ]


def test_attributes_short_of_training_pairs_are_left_out():
    filtered = _filtered({"verb": {a: {"t_train": _entities(60), "t_test": _entities(60)} for a in ("A", "B", "C")}})
    train = [("verb", "A")] * 250 + [("verb", "B")] * 210 + [("verb", "C")] * 40
    pairs = {"train": _split(train)}
    rows = support_table(filtered, _datas(["verb"]), pairs, min_train_pairs=200)
    assert [(r["attribute"], r["train_pairs"], r["kept"]) for r in rows] == [
        ("A", 250, True),
        ("B", 210, True),
        ("C", 40, False),
    ]
    assert rows[2]["why"] == "40 training pairs < 200"


def test_known_entities_are_counted_beyond_chance():
    sizes = {"Country": 200, "Birth Year": 700, "Duty": 60, "Field": 200}
    known = {a: {"t_train": _entities(n), "t_test": _entities(5)} for a, n in sizes.items()}
    filtered = _filtered({"nobel_prize_winner": known})
    rates = {"Country": (0.2, 0.02), "Birth Year": (0.7, 0.65), "Duty": (0.06, 0.025), "Field": (0.2, 0.09)}
    filtered["nobel_prize_winner"].chance = {
        a: {"entities": 100, "checked_entities": 1000, "own": own, "wrong": guess} for a, (own, guess) in rates.items()
    }
    rows = {r["attribute"]: r for r in support_table(filtered, _datas(["nobel_prize_winner"]))}
    assert rows["Country"]["kept"] and rows["Country"]["known_beyond_chance"] == 200 - 20
    assert rows["Birth Year"]["known_beyond_chance"] == 50 and rows["Birth Year"]["why"] == (
        "a wrong value passes the check for 65% of entities, the own value for 70% (more than 50% of it)"
    )
    assert rows["Duty"]["why"] == "35 known entities beyond chance < 40"
    assert rows["Field"]["kept"] and rows["Field"]["known_beyond_chance"] == 110  # 9% of 1000 by chance
    strict = {r["attribute"]: r for r in support_table(filtered, _datas(["nobel_prize_winner"]), max_chance_share=0.4)}
    assert not strict["Field"]["kept"] and "(more than 40% of it)" in strict["Field"]["why"]
    assert all("known_beyond_chance" not in r for r in _city_and_a_short_occupation())  # chance not measured


def _split(rows: list[tuple[str, str]], kind=lambda i: ("causal", "isolate")[i % 2]) -> dict:
    """A pairs split's columns from (domain, instructed attribute) rows, kinds alternating."""
    return {
        "domain": [d for d, _ in rows],
        "target_attribute": [a for _, a in rows],
        "attribute_type": [kind(i) for i in range(len(rows))],
    }


def test_an_attribute_without_causal_pairs_in_a_split_is_left_out():
    """A model right only for one value under the val templates (e.g. always "small") gets no causal
    val pair, and DAS's early stopping and Cause need them."""
    filtered = _filtered({"physical_object": {a: {"t_train": _entities(60), "t_test": _entities(60)} for a in "AB"}})
    rows = [("physical_object", a) for a in "AB" for _ in range(250)]
    only_isolate = [r for r in rows if r[1] == "B"]
    pairs = {
        "train": _split(rows),
        "val": {
            k: v + w
            for (k, v), w in zip(_split(rows[:250]).items(), _split(only_isolate, lambda i: "isolate").values())
        },
        "test": _split(rows),
    }
    table = {r["attribute"]: r for r in support_table(filtered, _datas(["physical_object"]), pairs)}
    assert table["A"]["kept"] and table["B"]["why"] == "no causal pair in the val split"


def _city_and_a_short_occupation() -> list[dict]:
    """The rule's rows for a city with two known attributes and an occupation with one."""
    return support_table(_city_and_a_short_occupation_filtered(), _datas(["city", "occupation"]))


def _city_and_a_short_occupation_filtered():
    return _filtered(
        {
            "city": {a: {"t_train": _entities(60), "t_test": _entities(5)} for a in ("Country", "Continent")},
            "occupation": {
                "Duty": {"t_train": _entities(60), "t_test": _entities(5)},
                "Industry": {"t_train": _entities(8), "t_test": []},
            },
        }
    )


def test_a_domain_left_without_two_attributes_is_named_with_its_counts():
    rows = _city_and_a_short_occupation()
    with pytest.raises(RavelDataError, match=r"^occupation: 1 attribute\(s\) pass .*Industry: 8 known entities < 40"):
        kept_attributes(rows)
    assert kept_attributes([r for r in rows if r["domain"] == "city"]) == {"city": ["Country", "Continent"]}
    assert kept_attributes(rows[2:3], isolate=False) == {"occupation": ["Duty"]}  # causal pairs only


def test_a_short_domain_can_be_left_out_and_reported_instead():
    rows = _city_and_a_short_occupation()
    assert kept_attributes(rows, short_domains="leave_out") == {"city": ["Country", "Continent"]}
    duty = next(r for r in rows if r["attribute"] == "Duty")
    assert (duty["kept"], duty["why"]) == (False, "the domain keeps 1 attribute(s), 2 needed")
    assert [r["attribute"] for r in left_out(rows)] == ["Duty", "Industry"]
    with pytest.raises(RavelDataError, match="^no domain keeps enough attributes"):
        kept_attributes([r for r in rows if r["domain"] == "occupation"], short_domains="leave_out")
    with pytest.raises(ValueError, match="short_domains='drop'"):
        kept_attributes(rows, short_domains="drop")


def test_the_final_table_keeps_the_filters_reason_for_what_was_never_paired(monkeypatch):
    """Pairs are built for the kept attributes only: the others' training-pair count would read 0."""
    from hyperdas.data import dataset

    def fake_pairs(target, datas, filtered, pair_config, attributes):
        train = [(d, a) for d, names in attributes.items() for a in names for _ in range(250)]
        return {split: _split(train) for split in ("train", "val", "test")}

    monkeypatch.setattr(dataset, "pairs_from", fake_pairs)
    config = SimpleNamespace(causal_fraction=0.5)
    filtered, datas = _city_and_a_short_occupation_filtered(), _datas(["city", "occupation"])
    _, rows, kept = supported_pairs(None, datas, filtered, config, short_domains="leave_out")
    assert kept == {"city": ["Country", "Continent"]}
    assert {r["attribute"]: (r["kept"], r.get("why"), r.get("train_pairs")) for r in rows} == {
        "Country": (True, None, 250),
        "Continent": (True, None, 250),
        "Duty": (False, "the domain keeps 1 attribute(s), 2 needed", None),
        "Industry": (False, "8 known entities < 40; no entity known under a test template", None),
    }


def test_the_rule_renders_as_a_table_with_its_reasons(tmp_path, monkeypatch):
    import json

    from hyperdas.experiments import results_doc
    from hyperdas.experiments.figures.domains import support_markdown

    filtered = _city_and_a_short_occupation_filtered()
    filtered["city"].chance = {"Country": {"entities": 100, "checked_entities": 100, "own": 0.6, "wrong": 0.05}}
    rows = support_table(filtered, _datas(["city", "occupation"]))
    text = support_markdown(rows)
    assert "| city | Country | 60 | 1 / 5 | 55 | 60% / 5% |  | yes |" in text  # 5 of 100 by chance
    assert "| city | Continent | 60 | 1 / 5 |  |  |  | yes |" in text  # chance not measured there
    assert "| occupation | Industry | 8 | 1 / 0 |  |  |  | no: 8 known entities < 40; no entity known" in text
    # docs/results.md gets the table for any folder whose notebook 01 filtered several domains
    folder = tmp_path / "results" / "my-model"
    folder.mkdir(parents=True)
    (folder / "data_summary.json").write_text(json.dumps({"support": rows}))
    monkeypatch.setattr(results_doc, "profile_roots", lambda root: [])
    sections = results_doc.domain_sections(tmp_path / "results")
    assert sections[0] == "## All of RAVEL: `results/my-model`\n" and text in sections


def test_an_attribute_dropped_after_pairing_keeps_the_reason_it_was_dropped(monkeypatch):
    from hyperdas.data import dataset

    def fake_pairs(target, datas, filtered, pair_config, attributes):
        rows = [(d, a) for d, names in attributes.items() for a in names for _ in range(250)]
        no_causal_val = lambda i, rows=rows: "isolate" if rows[i][1] == "Language" else ("causal", "isolate")[i % 2]  # noqa: E731
        return {"train": _split(rows), "val": _split(rows, no_causal_val), "test": _split(rows)}

    monkeypatch.setattr(dataset, "pairs_from", fake_pairs)
    known = {a: {"t_train": _entities(60), "t_test": _entities(5)} for a in ("Country", "Continent", "Language")}
    filtered, config = _filtered({"city": known}), SimpleNamespace(causal_fraction=0.5)
    _, rows, kept = supported_pairs(None, _datas(["city"]), filtered, config)
    assert kept == {"city": ["Country", "Continent"]}
    language = next(r for r in rows if r["attribute"] == "Language")
    assert (language["kept"], language["why"], language["train_pairs"]) == (
        False,
        "no causal pair in the val split",
        250,
    )


@pytest.mark.parametrize("share", [0.0, 1.5])
def test_a_chance_share_outside_its_range_is_refused(share):
    with pytest.raises(ValueError, match=r"max_chance_share=.*must lie in \(0, 1\]"):
        supported_pairs(None, {}, {}, SimpleNamespace(causal_fraction=0.5), max_chance_share=share)
