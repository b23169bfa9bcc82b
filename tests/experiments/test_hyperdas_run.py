"""Notebook 03's records, selections and results files, built by `hyperdas.experiments.hyperdas_run`."""

import json

import pytest

from hyperdas.core.results import read_json
from hyperdas.experiments import hyperdas_run as run
from hyperdas.experiments.plots import Results, main_table
from hyperdas.hyper.model import HyperDASConfig
from hyperdas.hyper.selection import MODES
from hyperdas.hyper.training import HyperTrainConfig, encoded_pairs, train_hyperdas

CONFIG = HyperDASConfig(layer=0, k=4, n_blocks=1, selection_heads=4)
TRAIN = HyperTrainConfig(steps=2, eval_every=2, max_val_pairs=6)
FAITHFULNESS = {
    "conflict": {
        m: {"follows_activations": 0.5, "follows_instruction": 0.25, "follows_neither": 0.25, "verdict": "activations"}
        for m in MODES
    },
    "conflict_pairs": 4,
}


@pytest.fixture(scope="module")
def trained(synthetic_pairs, synthetic_target, tmp_path_factory):
    pairs = synthetic_pairs(max_pairs={"train": 24, "val": 6, "test": 12})
    checkpoint = tmp_path_factory.mktemp("ckpt")
    result = train_hyperdas(synthetic_target, pairs, CONFIG, TRAIN, out_dir=checkpoint, progress=False)
    return pairs, result, checkpoint


def test_records_cover_every_mode_and_attribute(synthetic_target, trained):
    pairs, result, _ = trained
    test = encoded_pairs(synthetic_target, pairs["test"])
    records, seconds = run.score_test_pairs(synthetic_target, result.model, test, CONFIG.layer)
    attributes = set(pairs["test"]["target_attribute"])
    assert {(r["mode"], r["attribute"]) for r in records} == {(m, a) for m in MODES for a in attributes}
    assert all(0 <= r[m] <= 1 for r in records for m in run.METRICS) and seconds > 0
    assert all(r["layer"] == CONFIG.layer and r["method"] == "hyperdas" for r in records)


def test_results_files_follow_the_schema_the_figures_read(synthetic_target, trained, tmp_path):
    pairs, result, checkpoint = trained
    root = tmp_path / "results"
    out = root / "synthetic-llama"
    out.mkdir(parents=True)
    log = run.copy_train_log(checkpoint, out)
    assert len(log) == TRAIN.steps and all(
        json.loads(line)["method"] == "hyperdas" for line in (out / run.TRAIN_LOG).read_text().splitlines()
    )
    test = encoded_pairs(synthetic_target, pairs["test"])
    records, seconds = run.score_test_pairs(synthetic_target, result.model, test, CONFIG.layer)
    saved = run.save_selections(
        synthetic_target,
        result.model,
        test,
        pairs["test"]["edit_instruction"],
        out / "selections",
        n_examples=2,
        n_householder=1,
    )
    assert len(saved) == 2 * len(MODES) and (out / "selections" / "householder.json").is_file()
    configs = {"model": {"spec": "synthetic-llama"}, "hyperdas": CONFIG, "train": TRAIN}
    path, layers = run.write_results(
        out,
        model_name="synthetic-llama",
        configs=configs,
        seed=0,
        records=records,
        pairs_folder=root / "synthetic-llama" / "datasets" / "ravel_pairs",
        result=result,
        test_seconds=seconds,
        results_root=root,
        faithfulness=FAITHFULNESS,
        train_seconds_by_seed={"0": result.seconds, "1": 2.5},
    )
    written = read_json(path)
    assert written["follows_activations"] == {m: 0.5 for m in MODES} and written["faithfulness"] == FAITHFULNESS
    assert written["timings"]["train_seconds_by_seed"] == {"0": result.seconds, "1": 2.5}
    assert written["config"]["pairs"] == "<results>/synthetic-llama/datasets/ravel_pairs"
    assert written["records"] == records and written["steps_run"] == TRAIN.steps
    assert read_json(layers)[f"layer{CONFIG.layer}"]["records"] == records
    figures = Results(out)
    assert figures.records("hyperdas.json") == records and len(figures.jsonl(run.TRAIN_LOG)) == TRAIN.steps
    table = main_table(figures)  # every HyperDAS mean row carries its faithfulness
    assert table.loc[("city", "mean", "HyperDAS (one-to-one)"), "follows_activations"] == 0.5
    assert table.loc[("city", "mean", "HyperDAS (soft)"), "follows_instruction"] == 0.25


def test_comparison_adds_the_baselines_at_the_same_layer(tmp_path):
    records = [{"mode": "soft", "attribute": "Country", "cause": 1.0, "iso": 0.5, "disentangle": 0.75}]
    baselines = tmp_path / "baselines.json"
    baselines.write_text(
        json.dumps(
            {
                "records": [
                    {
                        "method": "mdas",
                        "layer": 0,
                        "attribute": "Country",
                        "cause": 0.5,
                        "iso": 0.5,
                        "disentangle": 0.5,
                    },
                    {
                        "method": "mdas",
                        "layer": 3,
                        "attribute": "Country",
                        "cause": 0.0,
                        "iso": 0.0,
                        "disentangle": 0.0,
                    },
                ]
            }
        )
    )
    rows = run.comparison_rows(records, baselines, layer=0)
    assert [r["method"] for r in rows] == ["hyperdas (soft)", "mdas"]
    assert run.comparison_rows(records, tmp_path / "missing.json", layer=0) == rows[:1]
