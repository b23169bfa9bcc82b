"""hyperdas-train (hyperdas.cli): profile + YAML-typed overrides; switches can be turned off."""

import json

import pytest

from hyperdas.cli import main
from hyperdas.data.dataset import save_pairs
from hyperdas.experiments import params as P


def test_profile_parameters_map_onto_the_configs():
    params = {
        "model": "synthetic-llama",
        "layer": 0,
        "k": 8,
        "source_ca": False,
        "hyper_steps": 7,
        "hyper_lr": 0.01,
        "seed": 3,
        "steps": 999,
    }
    model, (hyper, train) = P.model_config(params), P.hyperdas_configs(params)
    assert model.spec == "synthetic-llama" and hyper.layer == 0 and hyper.k == 8 and hyper.source_ca is False
    assert train.steps == 7 and train.lr == 0.01 and train.seed == 3  # `steps` is notebook 02's, not ours
    das = P.das_config(params, method="mdas", target_attribute="Language")
    assert (das.steps, das.layer, das.method, das.target_attribute, das.seed) == (999, 0, "mdas", "Language", 3)


def test_notebook_defaults_need_no_notebook_packages_and_name_a_non_literal(tmp_path, monkeypatch):
    import json as json_module
    import sys

    import pytest

    from hyperdas.profiles import ProfileError, notebook_defaults

    monkeypatch.setitem(sys.modules, "papermill", None)  # the CLI may run where only core deps are installed
    assert notebook_defaults("03_train_hyperdas")["hyper_steps"] == 600
    book = tmp_path / "nb.ipynb"
    book.write_text(
        json_module.dumps(
            {
                "cells": [
                    {
                        "cell_type": "code",
                        "metadata": {"tags": ["parameters"]},
                        "source": ["steps = 3\n", "lr = 2 ** -3\n"],
                    }
                ]
            }
        )
    )
    with pytest.raises(ProfileError, match=r"nb.ipynb: parameter lr = .* is not a literal"):
        notebook_defaults(book)
    with pytest.raises(ProfileError, match="no notebook"):
        notebook_defaults(tmp_path / "missing.ipynb")


def test_cli_trains_and_writes(synthetic_pairs, tmp_path, capsys):
    pairs = synthetic_pairs(max_pairs={"train": 40, "val": 12, "test": 40})
    folder = save_pairs(pairs, tmp_path / "pairs", {})
    code = main(
        [
            "--config",
            "smoke",
            "--results",
            str(tmp_path),
            "--no-progress",
            "--set",
            f"pairs_in={folder}",
            "--set",
            "hyper_steps=2",
            "--set",
            "hyper_eval_every=2",
            "--set",
            "n_blocks=1",
            "--set",
            "base_ca=false",
            "--set",
            "k=4",
        ]
    )
    assert code == 0
    out = tmp_path / "synthetic-llama" / "checkpoints" / "hyperdas"
    record = json.loads((out / "hyperdas_cli.json").read_text())
    assert record["config"]["hyperdas"]["base_ca"] is False and record["steps_run"] == 2
    assert (out / "hyperdas.safetensors").is_file()
    # the trained model's faithfulness comes with it (hyperdas.experiments.faithfulness)
    conflict = record["faithfulness"]["conflict"]
    assert set(conflict) == {"soft", "one_to_many", "one_to_one"} and conflict["soft"]["n"] >= 1
    assert "output follows the activations in" in capsys.readouterr().out


def test_cli_names_bad_input(capsys):
    assert main(["--config", "nope"]) == 2
    assert "no profile 'nope'" in capsys.readouterr().err
    assert main(["--config", "smoke", "--set", "subspace=pca"]) == 2
    assert "subspace='pca'" in capsys.readouterr().err


def test_cli_names_an_attribute_without_pairs(synthetic_pairs, tmp_path, capsys):
    pairs = synthetic_pairs(max_pairs={"train": 20, "val": 6, "test": 6})
    folder = save_pairs(pairs, tmp_path / "pairs", {})
    code = main(
        [
            "--config",
            "smoke",
            "--results",
            str(tmp_path),
            "--no-progress",
            "--set",
            f"pairs_in={folder}",
            "--method",
            "mdas",
            "--attribute",
            "Altitude",
        ]
    )
    assert (
        code == 2 and "--attribute 'Altitude' has no training pairs; attributes present: [" in capsys.readouterr().err
    )


def test_malloc_tuning_is_set_for_cpu_runs_on_linux_and_keeps_a_users_values(monkeypatch):
    import os
    import sys

    from hyperdas import batch

    for key in batch.MALLOC:
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("MALLOC_MMAP_MAX_", "7")
    monkeypatch.setattr(sys, "platform", "linux")
    assert batch.tune_malloc({"device": "cuda"}) == {} and "MALLOC_TRIM_THRESHOLD_" not in os.environ
    assert batch.tune_malloc({"device": "cpu"}) == {"MALLOC_TRIM_THRESHOLD_": str(2**40)}
    assert os.environ["MALLOC_MMAP_MAX_"] == "7"
    monkeypatch.delenv("MALLOC_TRIM_THRESHOLD_")
    monkeypatch.setattr(sys, "platform", "darwin")
    assert batch.tune_malloc({"device": "cpu"}) == {} and "MALLOC_TRIM_THRESHOLD_" not in os.environ


def test_seeds_default_to_the_seed_and_bad_lists_are_named():
    from hyperdas.core.config import ConfigError
    from hyperdas.experiments.params import seed_list

    assert seed_list({"seed": 3}) == [3] and seed_list({"seed": 3, "seeds": [0, 1, 2]}) == [0, 1, 2]
    for bad in ([], [0, 0], [0, "1"], 2, [True]):
        with pytest.raises(ConfigError, match="seeds=.*non-empty list of distinct integers"):
            seed_list({"seeds": bad})
