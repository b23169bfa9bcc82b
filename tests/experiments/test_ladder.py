"""The budget ladder: one run, its weights kept at each rung, every rung scored with its faithfulness;
an interrupted ladder continues; bad rungs are refused before anything loads."""

from pathlib import Path

import pytest

from hyperdas.core.config import ConfigError
from hyperdas.core.results import read_json
from hyperdas.data.dataset import pairs_dir, save_pairs
from hyperdas.experiments.ladder import run_ladder
from hyperdas.hyper.selection import MODES
from hyperdas.ladder import main

PARAMS = {
    "model": "synthetic-llama",
    "layer": 0,
    "k": 4,
    "n_blocks": 1,
    "hyper_lr": 1e-3,
    "hyper_eval_every": 4,
    "hyper_max_val_pairs": 8,
    "hyper_batch_size": 4,
    "n_conflict": 12,
}


@pytest.fixture(scope="module")
def root(synthetic_pairs, tmp_path_factory):
    root = tmp_path_factory.mktemp("results")
    pairs = synthetic_pairs(max_pairs={"train": 24, "val": 8, "test": 24})
    save_pairs(pairs, pairs_dir(root, "synthetic-llama"), {"model": "synthetic-llama"})
    return root


def test_every_rung_is_scored_with_its_faithfulness(root):
    path = run_ladder(PARAMS, steps=8, rungs=[4, 8], root=root, progress=False)
    saved = read_json(path)
    assert path.name == "hyperdas_steps8_seed0.json" and saved["steps_run"] == 8
    assert [r["steps"] for r in saved["rungs"]] == [4, 8]
    assert [r["examples_seen"] for r in saved["rungs"]] == [16, 32]
    for rung in saved["rungs"]:
        assert {r["mode"] for r in rung["records"]} == set(MODES)
        assert set(rung["follows_activations"]) == set(MODES) and set(rung["val"]) == set(MODES)
        assert 0 <= rung["faithfulness"]["conflict"]["one_to_one"]["follows_activations"] <= 1
    # run again: training is done and both rungs are kept, nothing is scored twice
    assert run_ladder(PARAMS, steps=8, rungs=[4, 8], root=root, progress=False) == path
    again = read_json(path)
    assert [r["score_seconds"] for r in again["rungs"]] == [r["score_seconds"] for r in saved["rungs"]]
    # the summary across models, and its figure drawn from it alone
    summary = read_json(root / "ladder.json")
    assert summary["sources"] == ["synthetic-llama/ladder/hyperdas_steps8_seed0.json"]
    one_to_one = [r for r in summary["rows"] if r["mode"] == "one_to_one"]
    assert [(r["steps"], r["examples_seen"], r["seeds"]) for r in one_to_one] == [(4, 16, [0]), (8, 32, [0])]
    first = saved["rungs"][0]
    mine = [x["disentangle"] for x in first["records"] if x["mode"] == "one_to_one"]
    assert one_to_one[0]["disentangle"]["mean"] == pytest.approx(sum(mine) / len(mine))
    assert one_to_one[0]["follows_activations"]["mean"] == first["follows_activations"]["one_to_one"]
    from hyperdas.experiments import plots

    figure = plots.ladder(plots.Results(root / "synthetic-llama"))
    assert figure.axes[0].get_title() == "synthetic-llama, layer 0"


def test_baselines_beside_the_ladder_give_paired_intervals(root):
    from hyperdas.core.intervals import columns
    from hyperdas.experiments.ladder_baselines import run_ladder_baselines

    run_ladder(PARAMS, steps=8, rungs=[4, 8], root=root, progress=False)
    das = {"steps": 4, "eval_every": 2, "batch_size": 4, "max_val_pairs": 8}
    files = run_ladder_baselines({**PARAMS, **das}, [0], root, progress=False)
    budget = run_ladder_baselines({**PARAMS, **das}, [0], root, examples=48, progress=False)
    assert [f.name for f in files + budget] == ["baselines_early_seed0.json", "baselines_examples48_seed0.json"]
    run = read_json(budget[0])
    assert {r["config"]["steps"] for r in run["records"]} == {48 // (4 * len(run["records"]) // 2)}
    from hyperdas.experiments.ladder_summary import write_summary

    summary = read_json(write_summary(root))
    rung = read_json(root / "synthetic-llama" / "ladder" / "hyperdas_steps8_seed0.json")["rungs"][0]
    assert len(columns(rung["outcomes"]["keys"])["domain"]) == len(rung["outcomes"]["one_to_one"]) == 24
    base = [r for r in summary["rows"] if r["method"] == "mdas"]
    assert [(r["early_stopped"], r["examples_budget"]) for r in base] == [(True, None), (False, 48)]
    for row in base:
        low, high = row["disentangle_interval"]["low"], row["disentangle_interval"]["high"]
        assert low <= row["disentangle"]["mean"] <= high
    compared = summary["comparisons"]
    assert len(compared) == 2 * 2 * 2 * 2  # (one-to-one, soft) x 2 rungs x (DAS, MDAS) x 2 budgets
    for c in compared:
        d = c["disentangle_difference"]
        assert d["low"] <= d["estimate"] <= d["high"] and d["distinguishable"] == (d["low"] > 0 or d["high"] < 0)
        assert "follows_activations_difference" in c
    from hyperdas.experiments.report import ladder_brief, verdict

    brief = ladder_brief(root / "ladder.json")
    assert brief.startswith("**synthetic-llama**, layer 0") and "one-to-one HyperDAS 4 steps" in brief
    assert "early-stopped DAS" in brief and "MDAS" in brief and "budget" not in brief  # fixed budgets: docs only
    assert verdict([c for c in compared if c["model"] == "synthetic-llama"]) in brief


def test_a_stopped_ladder_scores_the_rungs_it_has_kept(synthetic_pairs, tmp_path):
    import shutil

    from hyperdas.hyper.training import snapshot_folder

    pairs = synthetic_pairs(max_pairs={"train": 24, "val": 8, "test": 24})
    save_pairs(pairs, pairs_dir(tmp_path, "synthetic-llama"), {"model": "synthetic-llama"})
    path = run_ladder(PARAMS, steps=8, rungs=[4, 8], root=tmp_path, progress=False)
    folder = tmp_path / "synthetic-llama" / "checkpoints" / "hyperdas-ladder-steps8-seed0"
    shutil.rmtree(snapshot_folder(folder, 8))  # as if stopped between the two rungs
    path.unlink()
    assert run_ladder(PARAMS, steps=8, rungs=[4, 8], root=tmp_path, progress=False, score_only=True) == path
    saved = read_json(path)
    assert [r["steps"] for r in saved["rungs"]] == [4] and saved["timings"]["train_seconds"] is None
    summary = read_json(tmp_path / "ladder.json")
    assert {r["steps"] for r in summary["rows"]} == {4}


def test_bad_rungs_are_refused_before_anything_loads(root, capsys):
    with pytest.raises(ConfigError, match=r"snapshot_steps=\[3, 8\]: each a distinct multiple of eval_every=4"):
        run_ladder(PARAMS, steps=8, rungs=[3, 8], root=root, progress=False)
    assert main(["--profile", "smoke", "--steps", "20", "--rungs", "2", "--results", str(root)]) == 2
    assert "error: HyperTrainConfig.snapshot_steps=[2]: each a distinct multiple of eval_every=10" in (
        capsys.readouterr().err
    )


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--set", "hyper_steps=8"], "the ladder sets hyper_steps and snapshot_steps itself: use --steps and --rungs"),
        (["--set", "max_pairs=10"], "override(s) max_pairs: the ladder does not use them"),
        (["--set", "results_root=elsewhere"], "results_root is set by --results FOLDER"),
    ],
)
def test_overrides_the_ladder_would_ignore_are_refused(root, capsys, extra, message):
    assert main(["--profile", "smoke", "--steps", "20", "--rungs", "10", "--results", str(root), *extra]) == 2
    assert message in capsys.readouterr().err


def test_variant_names_are_stable_and_plain_for_no_overrides():
    from hyperdas.experiments.ladder import variant_name

    assert variant_name({}) == variant_name(None) == ""
    assert variant_name({"tie_attention": True, "answer_tokens": None}) == "_answer_tokens-none_tie_attention-true"
    named = variant_name({"hyper_lr": 1e-4, "instruction": "{entity} ; x"})
    assert named == "_hyper_lr-0.0001_instruction-.entity....x"


def test_a_pilot_never_overwrites_the_plain_run_and_is_compared_on_val(root):
    plain = run_ladder(PARAMS, steps=8, rungs=[8], root=root, progress=False, pilot=True)
    option = {"tie_attention": True}
    piloted = run_ladder({**PARAMS, **option}, 8, [8], root, progress=False, overrides=option, pilot=True)
    assert plain.parent.name == piloted.parent.name == "pilots"
    assert (plain.name, piloted.name) == ("hyperdas_steps8_seed0.json", "hyperdas_steps8_seed0_tie_attention-true.json")
    saved = read_json(piloted)
    assert saved["overrides"] == option and saved["config"]["hyperdas"]["tie_attention"] is True
    assert read_json(plain)["overrides"] == {} and read_json(plain)["config"]["hyperdas"]["tie_attention"] is False
    rung = saved["rungs"][0]
    assert len(rung["val_scored"]["outcomes"]["one_to_one"]) == 8  # every val pair, not training's sample
    summary = read_json(root / "ladder.json")
    assert all(r["overrides"] == {} for r in summary["rows"] if r["method"] == "hyperdas")  # pilots apart
    assert summary["pilots"]["sources"] == [f"synthetic-llama/pilots/{p.name}" for p in (plain, piloted)]
    assert not any("pilots" in source for source in summary["sources"])
    compared = summary["pilots"]["comparisons"]
    assert [(c["overrides"], c["mode"]) for c in compared] == [(option, "one_to_one"), (option, "soft")]
    for c in compared:
        for part in ("val_difference", "test_difference", "follows_activations_difference"):
            assert c[part]["low"] <= c[part]["estimate"] <= c[part]["high"]
        assert c["keep"] == (c["val_difference"]["low"] > 0 and c["follows_activations_difference"]["high"] >= 0)
    from hyperdas.experiments.results_doc import pilots_table

    table = pilots_table(summary).splitlines()
    assert len(table) == 4 and table[2].startswith("| synthetic-llama | `tie_attention=True` | one-to-one | 8 | ")


def test_val_scoring_of_kept_rungs_keeps_the_training_record_and_compares_budgets(synthetic_pairs, tmp_path):
    from hyperdas.experiments import ladder_summary as L
    from hyperdas.experiments.results_doc import budgets_table

    pairs = synthetic_pairs(max_pairs={"train": 24, "val": 8, "test": 24})
    save_pairs(pairs, pairs_dir(tmp_path, "synthetic-llama"), {"model": "synthetic-llama"})
    path = run_ladder(PARAMS, steps=8, rungs=[4, 8], root=tmp_path, progress=False)
    before = read_json(path)
    assert "val_scored" not in before["rungs"][0]
    run_ladder(PARAMS, steps=8, rungs=[4, 8], root=tmp_path, progress=False, score_only=True, score_val=True)
    after = read_json(path)
    assert after["timings"] == before["timings"] and after["best_step"] == before["best_step"]
    for old, new in zip(before["rungs"], after["rungs"]):
        assert new["records"] == old["records"] and len(new["val_scored"]["outcomes"]["soft"]) == 8
    files = sorted((tmp_path / "synthetic-llama" / "ladder").glob("hyperdas_*.json"))
    compared = L.budget_comparisons(L.hyperdas_rows(files), reference=4)
    assert [(c["steps"], c["reference_steps"], c["mode"]) for c in compared] == [(8, 4, "one_to_one"), (8, 4, "soft")]
    assert all(c["val_difference"]["low"] <= c["val_difference"]["estimate"] for c in compared)
    assert budgets_table({"budgets": compared}).count("| synthetic-llama |") == 2
    from hyperdas.experiments.report import budget_verdict

    one = [c for c in compared if c["mode"] == "one_to_one"]
    said = budget_verdict(one)
    d = one[0]["val_difference"]
    assert f"8 steps {d['estimate']:+.3f} [{d['low']:.3f}, {d['high']:.3f}]" in said and "1 seed(s)" in said
    expected = "at 8 steps beats the default 4" if one[0]["keep"] else "no rung beats the default 4 steps"
    assert expected in said
    flipped = [{**one[0], "keep": not one[0]["keep"]}]
    assert ("no rung beats" in budget_verdict(flipped)) == one[0]["keep"]


def test_the_reference_budget_is_notebook_03s():
    from hyperdas.experiments.ladder_summary import REFERENCE_STEPS
    from hyperdas.profiles import notebook_defaults

    book = Path(__file__).parents[2] / "notebooks" / "03_train_hyperdas.ipynb"
    assert notebook_defaults(book)["hyper_steps"] == REFERENCE_STEPS


def test_a_ladder_file_of_other_settings_is_never_overwritten(synthetic_pairs, tmp_path):
    import json

    pairs = synthetic_pairs(max_pairs={"train": 24, "val": 8, "test": 24})
    save_pairs(pairs, pairs_dir(tmp_path, "synthetic-llama"), {"model": "synthetic-llama"})
    path = run_ladder(PARAMS, steps=8, rungs=[4, 8], root=tmp_path, progress=False)
    saved = read_json(path)
    older = json.loads(json.dumps(saved))
    del older["config"]["train"]["sampling"]  # a field added to the package after the file was written
    path.write_text(json.dumps(older))
    assert run_ladder(PARAMS, steps=8, rungs=[4, 8], root=tmp_path, progress=False) == path
    assert [r["score_seconds"] for r in read_json(path)["rungs"]] == [r["score_seconds"] for r in saved["rungs"]]
    other = json.loads(json.dumps(saved))
    other["config"]["train"]["lr"] = 0.5
    path.write_text(json.dumps(other))
    with pytest.raises(ConfigError, match=r"holds a ladder run with other settings \(train.lr: 0.5 -> 0.001\)"):
        run_ladder(PARAMS, steps=8, rungs=[4, 8], root=tmp_path, progress=False)
    assert read_json(path) == other


def test_seconds_per_step_count_a_resumed_runs_earlier_parts_or_say_nothing():
    from hyperdas.experiments.ladder_summary import _seconds_per_step

    def run(**timings):
        return {"steps_run": 600, "timings": {"train_seconds": 1200.0, **timings}}

    assert _seconds_per_step(run(train_seconds_all_runs=3000.0, resumed_from=500)) == 5.0
    assert _seconds_per_step(run(train_seconds_all_runs=None, resumed_from=500)) == 12.0  # this part's only
    assert _seconds_per_step(run(resumed_from=0)) == 2.0
    assert _seconds_per_step(run()) is None  # predates resumed_from: perhaps only its last part
    assert _seconds_per_step(run(train_seconds=None, resumed_from=None)) is None  # scored only, not timed
