"""Several RAVEL domains in one chain, on the synthetic world written under two domain names: pairs
per domain with the known-entity rule, one HyperDAS per domain (the official protocol) or one over
all domains, the per-domain table and faithfulness."""

import json

import pytest

from hyperdas import batch
from hyperdas.data.synthetic import write_world

ATTRIBUTES = "attributes={city: [Country, Continent], town: [Country, Climate, Language]}"
KEPT = [("city", "Country"), ("city", "Continent"), ("town", "Country"), ("town", "Climate")]


@pytest.fixture(scope="module")
def two_domains(tmp_path_factory):
    """The chain's pairs, baselines and per-domain HyperDAS on two domains (notebooks 00-03)."""
    root = tmp_path_factory.mktemp("multi")
    world = write_world(root / "ravel", domain="city")
    write_world(world, domain="town")
    facts = world / "ravel_town_entity_attributes.json"  # town's Language known for 30 entities only
    values = json.loads(facts.read_text())
    for city in sorted(values)[30:]:
        values[city]["Language"] = ""
    facts.write_text(json.dumps(values))
    results = root / "results"
    sets = [f"ravel_dir={world}", ATTRIBUTES, "seeds=[0]"]
    args = ["--profile", "smoke", "--results", str(results), "--notebooks", "00", "01", "02", "03"]
    sweeps = ["sweep_layers=[]", "hyper_sweep_layers=[1]", "sweep_ks=[4]"]
    assert batch.main(args + [x for s in sets + sweeps for x in ("--set", s)]) == 0
    return results, results / "synthetic-llama", sets


def test_pairs_are_built_per_domain_and_the_rule_reports_what_it_left_out(two_domains):
    _, out, _ = two_domains
    data = json.loads((out / "data_summary.json").read_text())
    support = {(r["domain"], r["attribute"]): r for r in data["support"]}
    assert set(support) == {("city", "Country"), ("city", "Continent"), ("town", "Country")} | {
        ("town", "Climate"),
        ("town", "Language"),
    }
    assert [key for key, r in support.items() if not r["kept"]] == [("town", "Language")]
    assert support["town", "Language"]["why"].startswith("30 known entities < 40")
    assert data["config"]["kept_attributes"] == {"city": ["Country", "Continent"], "town": ["Country", "Climate"]}
    counts = data["pair_counts"]["train"]
    assert sum(counts.values()) == 600  # 300 training pairs per domain


def test_each_domain_and_attribute_gets_its_own_das_and_mdas(two_domains):
    _, out, _ = two_domains
    records = json.loads((out / "baselines.json").read_text())["records"]
    trained = [r for r in records if r["method"] in ("das", "mdas")]
    assert {(r["method"], r["domain"], r["attribute"]) for r in trained} == {
        (m, d, a) for m in ("das", "mdas") for d, a in KEPT
    }
    assert all(r["config"]["domain"] == r["domain"] for r in trained)
    untrained = {(r["method"], r["domain"], r["attribute"]) for r in records if r["method"] in ("pca", "random")}
    assert untrained == {(m, d, a) for m in ("pca", "random") for d, a in KEPT}


def test_each_domain_gets_its_own_hyperdas_and_faithfulness(two_domains):
    _, out, _ = two_domains
    hyper = json.loads((out / "hyperdas.json").read_text())
    trained_on = {(r["domain"], r["trained_on"]) for r in hyper["records"]}
    assert trained_on == {("city", "city"), ("town", "town")}
    groups = hyper["by_group"]["groups"]
    assert hyper["by_group"]["train_domains"] == "each" and set(groups) == {"city", "town"}
    assert all(entry["0"]["faithfulness"]["conflict"] for entry in groups.values())
    for domain in ("city", "town"):
        assert (out / "checkpoints" / f"hyperdas-layer0-{domain}" / "hyperdas.safetensors").is_file()


def test_the_layer_and_dimension_sweeps_are_written_beside_the_main_runs(two_domains):
    _, out, _ = two_domains
    dims = json.loads((out / "dimension_sweep.json").read_text())
    assert {(r["domain"], r["k"], r["mode"]) for r in dims["hyperdas-k4"]["records"]} == {
        ("city", 4, m) for m in ("soft", "one_to_many", "one_to_one")
    }
    assert dims["hyperdas-k4"]["faithfulness"]["conflict"]
    assert {(r["domain"], r["attribute"], r["k"]) for r in dims["mdas-k4"]["records"]} == {
        ("city", "Country", 4),
        ("town", "Country", 4),
    }
    layers = json.loads((out / "hyperdas_layers.json").read_text())
    assert {r["layer"] for r in layers["layer1"]["records"]} == {1} and layers["layer1"]["follows_activations"]
    hyper = json.loads((out / "hyperdas.json").read_text())
    assert {r["layer"] for r in hyper["records"]} == {0}  # the main run's file is not the sweep's


def test_each_domain_is_compared_with_mdas_on_the_same_pairs_with_an_interval(two_domains, tmp_path):
    from hyperdas.experiments import plots
    from hyperdas.experiments.figures.domains import ALL, domain_comparisons, domains_text

    _, out, _ = two_domains
    hyper = json.loads((out / "hyperdas.json").read_text())
    saved = hyper["outcomes"]
    assert set(saved) == {"city", "town"} and not set(saved["city"]["rows"]) & set(saved["town"]["rows"])
    assert all(len(g["seeds"]["0"]["one_to_one"]) == len(g["rows"]) for g in saved.values())
    results = plots.Results(out)
    rows = {r["domain"]: r for r in domain_comparisons(results)}
    assert list(rows) == ["city", "town", ALL]
    for domain in ("city", "town"):
        r = rows[domain]
        d = r["difference"]
        assert d["rows"] == len(saved[domain]["rows"]) and d["low"] <= d["estimate"] <= d["high"]
        mine = [x for x in hyper["records"] if x["domain"] == domain and x["mode"] == "one_to_one"]
        assert r["hyperdas"]["disentangle"] == pytest.approx(sum(x["disentangle"] for x in mine) / len(mine))
        assert d["estimate"] == pytest.approx(r["hyperdas"]["disentangle"] - r["mdas"]["disentangle"])
        assert 0 <= r["hyperdas"]["follows_activations"] <= 1 and 0 <= r["mdas"]["follows_activations"] <= 1
    assert rows["town"]["left_out"] == ["Language"] and rows["town"]["attributes"] == ["Climate", "Country"]
    over = rows[ALL]
    assert over["difference"]["estimate"] == pytest.approx(
        (rows["city"]["difference"]["estimate"] + rows["town"]["difference"]["estimate"]) / 2
    )
    text = domains_text(results)
    assert sum(line.startswith("- ") for line in text.splitlines()) == 3 and "town: one-to-one HyperDAS" in text
    status = plots.make_all(results, tmp_path, ["domain_selections", "selection_example", "householder"])
    assert set(status.values()) == {"written"} and (tmp_path / "domains.md").read_text() == text
    for domain in ("city", "town"):
        assert (out / "selections" / domain / "test_examples.json").is_file()


def test_one_hyperdas_over_all_domains_and_the_per_domain_table(two_domains):
    results, out, sets = two_domains
    together = ["seeds=[0]", "train_domains=together"]
    args = ["--profile", "smoke", "--results", str(results), "--notebooks", "03", "05"]
    assert batch.main(args + [x for s in together for x in ("--set", s)]) == 0
    hyper = json.loads((out / "hyperdas.json").read_text())
    assert {r["trained_on"] for r in hyper["records"]} == {"all"}
    assert {r["domain"] for r in hyper["records"]} == {"city", "town"}
    assert (out / "checkpoints" / "hyperdas-layer0-all" / "hyperdas.safetensors").is_file()
    table = (out / "figures" / "main_table.md").read_text()
    assert (out / "figures" / "dimension_sweep.png").is_file() and (out / "figures" / "main_disentangle.png").is_file()
    ours = [line for line in table.splitlines() if line.startswith("| ours")]
    assert [line.split("|")[2:4] for line in ours][:2] == [[" city ", " Continent "], [" city ", " Country "]]
    assert sum(" town " in line for line in ours) == 3  # Climate, Country and the mean
    assert set(hyper["outcomes"]) == {"all"}  # one model: the domains' rows are read from its outcomes
    assert "| town |" in (out / "figures" / "domains.md").read_text()


def test_a_domain_to_study_that_the_run_lacks_or_cannot_have_is_named():
    from hyperdas.core.config import ConfigError
    from hyperdas.experiments.hyperdas_run import studied_group

    assert studied_group({"city": 1, "town": 2}) == "city" and studied_group({"city": 1, "town": 2}, "town") == "town"
    with pytest.raises(ConfigError, match=r"ablation_domain='verb' is not among the pairs' domains \['city', 'town'\]"):
        studied_group({"city": 1, "town": 2}, "verb")
    with pytest.raises(ConfigError, match="trained together"):
        studied_group({"all": 1}, "city")


def test_a_domain_win_that_follows_the_activations_less_is_not_called_faithful():
    from hyperdas.experiments.figures.domains import verdict

    row = {
        "domain": "verb",
        "hyperdas": {"disentangle": 0.7, "follows_activations": 0.3},
        "mdas": {"disentangle": 0.6, "follows_activations": 0.5},
        "difference": {"estimate": 0.1, "low": 0.05, "high": 0.15},
    }
    said = verdict(row)
    assert "+0.100 [+0.050, +0.150]: HyperDAS beats MDAS" in said and "not a faithful win" in said
    row["hyperdas"]["follows_activations"] = 0.6
    assert "not a faithful win" not in verdict(row)
    row["difference"] = {"estimate": 0.1, "low": -0.02, "high": 0.2}
    assert "is indistinguishable from MDAS" in verdict(row)


def test_the_baselines_per_domain_with_the_papers_mdas_over_the_same_attributes(two_domains, tmp_path):
    from hyperdas.experiments import plots, results_doc
    from hyperdas.experiments.figures.domains import ALL, baseline_domain_markdown, baseline_domain_rows

    _, out, _ = two_domains
    paper = {"domain": "city", "method": "MDAS", "cause": 0.5, "iso": 0.7, "disentangle": 0.6}
    reference = {
        "main": [paper],
        "mdas_per_attribute": [
            {"domain": "city", "attribute": a, "method": "MDAS", "cause": c, "iso": 0.9, "disentangle": (c + 0.9) / 2}
            for a, c in (("Country", 0.8), ("Continent", 0.6), ("Timezone", 0.1))
        ],
    }
    (tmp_path / "llama3-8b.json").write_text(json.dumps(reference))
    rows = {r["domain"]: r for r in baseline_domain_rows(plots.Results(out, reference=tmp_path))}
    assert list(rows) == ["city", "town", ALL]
    records = json.loads((out / "baselines.json").read_text())["records"]
    for domain, attributes in (("city", ["Continent", "Country"]), ("town", ["Climate", "Country"])):
        assert rows[domain]["attributes"] == attributes
        assert set(rows[domain]["methods"]) == {"das", "mdas", "full", "pca", "random"}
        layer = rows[domain]["layer"]
        mdas = [r for r in records if (r["method"], r["domain"], r["layer"]) == ("mdas", domain, layer)]
        assert len(mdas) == 2
        assert rows[domain]["methods"]["mdas"]["cause"] == pytest.approx(sum(r["cause"] for r in mdas) / 2)
    # the paper's MDAS over the same two attributes (not Timezone), and its whole-domain value
    assert rows["city"]["paper"]["same_attributes"]["cause"] == pytest.approx(0.7)
    assert rows["city"]["paper"]["domain"]["disentangle"] == 0.6 and rows["town"]["paper"]["same_attributes"] is None
    assert rows[ALL]["methods"]["das"]["iso"] == pytest.approx(
        (rows["city"]["methods"]["das"]["iso"] + rows["town"]["methods"]["das"]["iso"]) / 2
    )
    text = baseline_domain_markdown(list(rows.values()))
    assert "| city (Continent, Country) | DAS |" in text and "paper MDAS, Llama3-8B (these attributes) | 0.700" in text
    sections = "".join(results_doc.domain_sections(out.parent))
    assert "RAVEL's untrained subspaces (PCA, random) per domain" in sections
