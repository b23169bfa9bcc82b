"""Notebooks are committed clean and run top to bottom through papermill with the smoke profile."""

import json

import nbformat
import pytest

from hyperdas import batch, profiles

NOTEBOOKS = sorted(profiles.NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))


def test_there_are_notebooks():
    assert NOTEBOOKS, "notebooks/ holds no numbered notebook"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_committed_clean_with_one_parameters_cell(path):
    book = nbformat.read(path, as_version=4)
    tagged = [c for c in book.cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1, f"{path.name} has {len(tagged)} cells tagged 'parameters'"
    for cell in book.cells:
        if cell.cell_type == "code":
            assert not cell.outputs and cell.execution_count is None, f"{path.name} carries outputs"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_papermill_sees_every_parameter(path):
    """A parameters line papermill cannot parse (e.g. a comment holding "k=128") is dropped from the
    declared parameters: the batch runner would then never pass that override to the notebook."""
    import ast

    import papermill

    book = nbformat.read(path, as_version=4)
    (cell,) = [c for c in book.cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    assigned = {t.id for node in ast.parse(cell.source).body if isinstance(node, ast.Assign) for t in node.targets}
    assert assigned == set(papermill.inspect_notebook(str(path))), f"{path.name}: papermill misses some parameters"


def test_smoke_chain_runs_and_writes_results(tmp_path, capsys):
    assert batch.main(["--profile", "smoke", "--results", str(tmp_path)]) == 0
    out = tmp_path / "synthetic-llama"
    summary = json.loads((out / "model_summary.json").read_text())
    assert summary["n_layers"] == 4 and summary["config"]["spec"] == "synthetic-llama"
    assert summary["environment"]["packages"]["torch"]
    assert len(summary["residual_norms"]["by_layer"]) == 4
    data = json.loads((out / "data_summary.json").read_text())
    assert data["pair_counts"]["train"]["causal/Country"] == 50
    assert all(row["accuracy"] >= 0.9 for row in data["filter_table"])
    assert (out / "datasets" / "ravel_pairs" / "dataset_dict.json").is_file()
    baselines = json.loads((out / "baselines.json").read_text())
    main = {(r["method"], r["attribute"]): r for r in baselines["records"] if r["layer"] == 0}
    main_methods = ("das", "mdas", "full", "pca", "random")
    assert set(main) == {(m, a) for m in main_methods for a in ("Country", "Continent", "Language")}
    assert main[("full", "Country")]["cause"] >= 0.9  # the entity's residual after the local block (few pairs)
    assert {r["layer"] for r in baselines["records"]} == {0, 1, 2}
    assert all(r["generation"]["cause"] is not None for r in main.values())
    seeds = {m: {r["seed"] for r in baselines["records"] if r["method"] == m and r["layer"] == 0} for m in main_methods}
    assert seeds == {"das": {0, 1}, "mdas": {0, 1}, "full": {0}, "pca": {0}, "random": {0}}
    assert baselines["seeds"] == [0, 1]
    hyper = json.loads((out / "hyperdas.json").read_text())
    assert {(r["mode"], r["attribute"]) for r in hyper["records"]} == {
        (m, a) for m in ("soft", "one_to_many", "one_to_one") for a in ("Country", "Continent", "Language")
    }
    assert hyper["config"]["hyperdas"]["layer"] == 0 and hyper["steps_run"] == 20
    assert {r["seed"] for r in hyper["records"]} == {0, 1} and set(hyper["faithfulness_by_seed"]) == {"0", "1"}
    assert hyper["faithfulness_by_seed"]["0"] == hyper["faithfulness"]
    assert set(hyper["timings"]["train_seconds_by_seed"]) == {"0", "1"}
    assert (out / "checkpoints" / "hyperdas-layer0-seed1" / "hyperdas.safetensors").is_file()
    layers = json.loads((out / "hyperdas_layers.json").read_text())
    assert layers["layer0"]["records"] == hyper["records"]  # the layer sweep's copy of this run
    assert (out / "checkpoints" / "hyperdas-layer0" / "hyperdas.safetensors").is_file()
    log = (out / "train_log.jsonl").read_text().splitlines()
    assert len(log) == 20 and json.loads(log[-1])["method"] == "hyperdas"
    selections = json.loads((out / "selections" / "test_examples.json").read_text())
    assert len(selections) == 3 * 4 and len(selections[0]["A"]) == len(selections[0]["source_tokens"])
    ablations = json.loads((out / "ablations.json").read_text())
    assert (
        set(ablations["interpretation"])
        == {r["ablation"] for r in ablations["records"]}
        == {
            "blocks_cross_attention",
            "sparsity",
            "symmetric",
            "lookup_table",
            "initialisation",
            "inference_mode",
            "controls",
            "diagnosis",
        }
    )
    wirings = {r["variant"] for r in ablations["records"] if r["ablation"] == "diagnosis"}
    expected = {"wiring:selection_faithful", "wiring:subspace_faithful", "sink:keep", "test_entity", "written_entity"}
    assert expected <= wirings
    hyper = json.loads((out / "hyperdas.json").read_text())
    blind = sum(json.loads((out / "data_summary.json").read_text())["pair_counts"]["query_blind"].values())
    assert blind > 0 and hyper["faithfulness"]["query_blind"]["one_to_one"]["n"] == blind
    assert {r["variant"] for r in ablations["records"] if r["ablation"] == "controls"} == {
        "reference",
        "conflict",
        "blanked",
        "random_subspace",
        "fixed_positions",
    }
    assert (out / "selections" / "householder.json").is_file()
    for name in (
        "main_disentangle",
        "convergence",
        "blocks_cross_attention",
        "selection_example",
        "householder",
        "leakage_controls",
    ):
        assert (out / "figures" / f"{name}.png").is_file() and (out / "figures" / f"{name}.pdf").is_file()
    table = (out / "figures" / "main_table.md").read_text()
    assert "mean ± sd over 2 seeds" in table and " ± " in table and "follows activations" in table
    ran = json.loads((out / "reproduce.json").read_text())
    assert {n for n, r in ran["notebooks"].items() if r["status"] == "ok"} == {p.name for p in NOTEBOOKS}
    assert ran["environment"]["packages"]["torch"]
    assert {p.name for p in (out / "runs").iterdir()} == {p.name for p in NOTEBOOKS}
    for executed in (out / "runs").iterdir():  # kept with their outputs, without papermill's timings
        notebook = json.loads(executed.read_text())
        assert any(c.get("outputs") for c in notebook["cells"]), executed.name
        assert "papermill" not in notebook["metadata"] and not any(
            "papermill" in c["metadata"] for c in notebook["cells"]
        )
    printed = capsys.readouterr().out
    assert "summary" in printed and "smoke: Disentangle: hyperdas soft" in printed
    (entry,) = [json.loads(line) for line in (out / "run_log.jsonl").read_text().splitlines()]
    assert entry["profile"] == "smoke" and entry["status"] == "ok" and set(entry["notebooks"]) == set(ran["notebooks"])
    assert "commit" in entry["environment"]
    stray = [p for p in out.rglob("*") if p.is_file() and not batch.written_by_chain(p.relative_to(out))]
    assert not stray and not batch.written_by_chain("README.md") and not batch.written_by_chain("notes.txt")
    # the figures step derives: it rewrites figures and tables only, never a run record
    records = {p: p.read_bytes() for p in out.rglob("*") if p.is_file() and "figures" not in p.parts}
    records.pop(out / "runs" / "05_figures.ipynb")
    assert batch.main(["--profile", "smoke", "--results", str(tmp_path), "--notebooks", "05"]) == 0
    after = {p: p.read_bytes() for p in out.rglob("*") if p.is_file() and "figures" not in p.parts}
    after.pop(out / "runs" / "05_figures.ipynb")
    assert after == records


def test_failed_notebook_is_reported_and_chain_goes_on(tmp_path, capsys):
    code = batch.main(
        ["--profile", "smoke", "--set", "model=no-such-model", "--results", str(tmp_path), "--notebooks", "00"]
    )
    assert code == 1
    out = capsys.readouterr().out
    assert "failed" in out and "unknown model 'no-such-model'" in out
    assert (tmp_path / "no-such-model" / "runs" / "00_target_model.ipynb").exists()


def test_unknown_profile_lists_known(capsys):
    assert batch.main(["--profile", "nope"]) == 2
    assert "known profiles: cpu" in capsys.readouterr().err


def test_an_override_no_notebook_declares_is_refused(tmp_path, capsys):
    assert batch.main(["--profile", "smoke", "--set", "n_block=3", "--results", str(tmp_path)]) == 2
    assert "unknown override(s) n_block (did you mean n_blocks?)" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())  # refused before anything ran


def test_overrides_are_yaml_typed():
    assert profiles.parse_overrides(["seed=3", "load_in_4bit=true", "model=a/b", "lr=1e-4"]) == {
        "seed": 3,
        "load_in_4bit": True,
        "model": "a/b",
        "lr": 1e-4,
    }  # YAML 1.1 alone reads 1e-4 as text
    with pytest.raises(profiles.ProfileError, match="key=value"):
        profiles.parse_overrides(["seed"])


@pytest.mark.parametrize("profile", sorted(p.stem for p in profiles.CONFIGS.glob("*.yaml")))
def test_profiles_only_set_declared_notebook_parameters(profile):
    import papermill

    declared = set()
    for path in NOTEBOOKS:
        declared |= set(papermill.inspect_notebook(str(path)))
    unknown = set(profiles.load_profile(profile)) - declared
    assert not unknown, f"configs/{profile}.yaml sets {unknown}, which no notebook declares"


def test_profiles_of_one_model_write_apart_and_the_runner_alone_sets_results_root(tmp_path, capsys):
    assert profiles.results_root("cpu") == profiles.REPO / "results"  # the default chain, and notebooks run by hand
    assert profiles.results_root("cpu-seeds") == profiles.REPO / "results" / "cpu-seeds"  # the README's table
    assert profiles.results_root("cpu-seeds", tmp_path) == tmp_path  # --results wins
    assert profiles.load_profile("cpu-ladder-qwen2.5-0.5b")["model"] == "qwen2.5-0.5b"  # a name with dots
    same_model = [
        p.stem for p in profiles.CONFIGS.glob("*.yaml") if profiles.load_profile(p.stem)["model"] == "smollm2-135m"
    ]
    roots = [profiles.results_root(p) for p in same_model]
    assert len(set(roots)) == len(roots), f"profiles {same_model} share a results folder"
    assert batch.main(["--profile", "smoke", "--set", "results_root=x", "--results", str(tmp_path)]) == 2
    assert "results_root is set by the runner: use --results" in capsys.readouterr().err
