"""The synthetic RAVEL world: official schema, entangled and independent attributes, a model that learns it."""

import json

from hyperdas.data.ravel import DOMAINS, domain_files, load_domain, resolve_ravel_dir
from hyperdas.data.synthetic import synthetic_model_folder, world_facts, write_world


def test_world_files_pass_the_official_schema_checks(tmp_path):
    write_world(tmp_path, n_cities=50, seed=1)
    data = load_domain("city", tmp_path)
    assert len(data.entity_attributes) == 50 and data.attributes == ["Country", "Continent", "Language", "Climate"]
    assert set(data.entity_to_split.values()) == set(data.prompt_to_split.values()) == {"train", "val", "test"}
    assert {p.name for p in tmp_path.iterdir()} == set(domain_files("city").values())


def test_country_fixes_continent_and_language_not_climate(synthetic_data):
    by_country, climates = {}, {}
    for values in synthetic_data.entity_attributes.values():
        by_country.setdefault(values["Country"], set()).add((values["Continent"], values["Language"]))
        climates.setdefault(values["Country"], set()).add(values["Climate"])
    assert len(by_country) >= 15 and all(len(v) == 1 for v in by_country.values())
    assert sum(len(v) > 1 for v in climates.values()) >= 15  # climate varies within a country
    assert any(" " in city for city in synthetic_data.entity_attributes)  # multi-token entities exist


def test_world_is_deterministic():
    assert world_facts(seed=3) == world_facts(seed=3) != world_facts(seed=4)


def test_ravel_dir_synthetic_names_the_test_world(monkeypatch):
    monkeypatch.setenv("HYPERDAS_RAVEL_DIR", "synthetic")
    folder = resolve_ravel_dir()
    assert (folder / "ravel_city_entity_attributes.json").is_file()
    assert "city" in DOMAINS


def test_trained_model_reports_its_accuracy(synthetic_target):
    report = json.loads((synthetic_model_folder() / "training.json").read_text())
    assert (
        report["accuracy"] >= 0.95 and report["local_layers"] == 1 and report["n_facts"] == 4 * 6 * 300 + 300
    )  # + one fact card per city
    assert synthetic_target.n_layers == 4 and synthetic_target.hidden_size == 128
