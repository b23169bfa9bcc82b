"""docs/own-model.md, followed on the synthetic world: a concept written as a domain of one's own in
RAVEL's file format, a model given as a local folder, the chain through HyperDAS's training."""

import json
import shutil

import pytest

from hyperdas import batch
from hyperdas.data.ravel import RavelDataError, load_domain
from hyperdas.data.synthetic import synthetic_model_folder, write_world


def test_a_concept_of_ones_own_on_a_local_model_folder(tmp_path):
    concepts = write_world(tmp_path / "concepts", domain="town")  # the synthetic facts, under a new name
    model = shutil.copytree(synthetic_model_folder(), tmp_path / "my-model")
    overrides = [f"model={model}", f"ravel_dir={concepts}", "attributes={town: [Country, Language]}"]
    args = ["--profile", "smoke", "--results", str(tmp_path / "results"), "--notebooks", "00", "01", "03"]
    assert batch.main(args + [x for o in overrides for x in ("--set", o)]) == 0
    out = tmp_path / "results" / "my-model"
    counts = json.loads((out / "data_summary.json").read_text())["pair_counts"]["train"]
    assert counts["causal/Country"] > 0 and not any("Continent" in key for key in counts)
    records = json.loads((out / "hyperdas.json").read_text())["records"]
    assert {(r["domain"], r["attribute"]) for r in records} == {("town", "Country"), ("town", "Language")}


def test_a_domain_of_ones_own_needs_its_files_in_the_named_folder(tmp_path):
    write_world(tmp_path, domain="town")
    assert load_domain("town", tmp_path).attributes == list(
        json.loads((tmp_path / "ravel_town_attribute_to_prompts.json").read_text())
    )
    (tmp_path / "ravel_town_prompt_to_split.json").unlink()
    with pytest.raises(RavelDataError, match="or a domain of your own whose files .*ravel_town_prompt_to_split"):
        load_domain("town", tmp_path)
