"""Notebook 05 and hyperdas.experiments.plots on a fixture results folder: every figure is written from files
alone, a missing input skips its figure with the reason, an old-schema file fails by name."""

import json
import random

import papermill
import pytest

from hyperdas import profiles
from hyperdas.experiments import plots
from hyperdas.experiments.figures import sweeps

ATTRIBUTES = ("Country", "Continent", "Language")
MODES = ("soft", "one_to_many", "one_to_one")


def _m(rng):
    cause, iso = rng.random(), rng.random()
    return {"cause": cause, "iso": iso, "disentangle": (cause + iso) / 2}


def _selection(rng, mode, example=0):
    base, source = ["<s>", "Paris", "is", "in"], ["<s>", "Rome", "<keep base>"]
    columns = [[rng.random() for _ in base] for _ in source]
    A = [[c / sum(col) for c in col] for col in zip(*columns)]
    return {
        "mode": mode,
        "example": example,
        "instruction": "Paris ; Rome - Country",
        "attribute_type": "causal",
        "base_tokens": base,
        "source_tokens": source,
        "A": [list(r) for r in zip(*A)],
    }


def make_results(folder, seed=0):
    """A results folder with every file the figures read (random but well-formed numbers)."""
    rng = random.Random(seed)
    folder.mkdir(parents=True)
    (folder / "selections").mkdir()
    record = lambda **kw: {"domain": "city", **kw, **_m(rng)}  # noqa: E731
    (folder / "hyperdas.json").write_text(
        json.dumps(
            {
                "model": "fixture",
                "config": {"hyperdas": {"layer": 2, "k": 8}},
                "records": [record(method="hyperdas", mode=m, attribute=a, layer=2) for m in MODES for a in ATTRIBUTES],
            }
        )
    )
    (folder / "dimension_sweep.json").write_text(
        json.dumps(
            {
                **{
                    f"hyperdas-k{k}": {
                        "records": [record(mode=m, attribute=a, layer=2, k=k) for m in MODES for a in ATTRIBUTES]
                    }
                    for k in (4, 16)
                },
                **{
                    f"mdas-k{k}": {"records": [record(method="mdas", attribute="Country", layer=2, k=k)]}
                    for k in (4, 16)
                },
            }
        )
    )
    (folder / "baselines.json").write_text(
        json.dumps(
            {
                "model": "fixture",
                "records": [
                    record(
                        method=m,
                        attribute=a,
                        layer=layer,
                        k=8,
                        history=[{"step": s, "loss": 1 / s, "val": _m(rng)} for s in (5, 10)],
                    )
                    for m in ("das", "mdas", "full")
                    for a in ATTRIBUTES
                    for layer in (1, 2)
                ],
            }
        )
    )
    (folder / "das_sweep.json").write_text(
        json.dumps(
            {
                "attribute": "Country",
                "runs": [
                    {"kind": kind, "config": {"layer": layer, "k": k}, "val": _m(rng)}
                    for kind, layer, k in [
                        ("mdas", 1, 8),
                        ("mdas", 2, 8),
                        ("mdas", 2, 16),
                        ("mdas", 2, 32),
                        ("das", 2, 8),
                    ]
                ],
            }
        )
    )
    (folder / "train_log.jsonl").write_text(
        "".join(
            json.dumps(
                {
                    "method": "hyperdas",
                    "step": s,
                    "loss": 3 / s,
                    "ce": 2 / s,
                    **({"val": {m: _m(rng) for m in MODES}} if s % 5 == 0 else {}),
                }
            )
            + "\n"
            for s in range(1, 21)
        )
    )
    (folder / "selections" / "test_examples.json").write_text(json.dumps([_selection(rng, m) for m in MODES]))
    for domain in ("city", "verb"):  # a run that trained the domains apart saves them per domain too
        (folder / "selections" / domain).mkdir()
        saved = [_selection(rng, m, example) for m in MODES for example in range(2)]
        (folder / "selections" / domain / "test_examples.json").write_text(json.dumps(saved))
    (folder / "selections" / "householder.json").write_text(
        json.dumps(
            {
                "attribute": [a for a in ATTRIBUTES for _ in range(4)],
                "vectors": [[rng.gauss(0, 1) for _ in range(6)] for _ in range(12)],
            }
        )
    )
    scored = lambda ablation, variant, **kw: {"ablation": ablation, "variant": variant, "overall": _m(rng), **kw}  # noqa: E731
    records = [
        scored("blocks_cross_attention", f"N={n}, {c}", n_blocks=n, cross_attention=c)
        for n, c in [(0, "n/a"), (2, "both"), (2, "neither")]
    ]
    records += [
        scored("sparsity", v, selection_entropy=1.0, last_token_mass=0.5, selections=[_selection(rng, "soft")])
        for v in ("default", "off", "strong")
    ]
    records += [
        scored("initialisation", v, loss_curve=[[s, 3 / s] for s in range(1, 11)]) for v in ("target", "scratch")
    ]
    records += [scored("controls", v) for v in ("reference", "blanked", "random_subspace", "fixed_positions")]
    records.append(
        {
            "ablation": "controls",
            "variant": "conflict",
            "follows_activations": 0.5,
            "follows_instruction": 0.2,
            "follows_neither": 0.3,
            "verdict": "activations",
            "n": 10,
        }
    )
    (folder / "ablations.json").write_text(json.dumps({"model": "fixture", "records": records}))
    spread = lambda: {"mean": rng.random(), "sd": rng.random() / 10, "n": 2}  # noqa: E731
    rungs = [
        {
            "model": "fixture",
            "layer": 2,
            "method": "hyperdas",
            "mode": m,
            "examples_seen": 16 * s,
            "disentangle": spread(),
        }
        for m in MODES
        for s in (10, 20, 40)
    ]
    rungs += [
        {"model": "fixture", "layer": 2, "method": b, "mode": None, "examples_seen": 300, "disentangle": spread()}
        for b in ("das", "mdas")
    ]
    (folder.parent / "ladder.json").write_text(json.dumps({"rows": rungs, "sources": []}))
    return folder


def test_figures_notebook_writes_every_figure_from_files_alone(tmp_path):
    folder = make_results(tmp_path / "results" / "fixture")
    out = tmp_path / "05.ipynb"
    papermill.execute_notebook(
        str(profiles.NOTEBOOKS / "05_figures.ipynb"),
        str(out),
        cwd=str(profiles.NOTEBOOKS),
        parameters={"model": "fixture", "results_root": str(tmp_path / "results")},
        progress_bar=False,
    )
    figures = folder / "figures"
    for name in plots.FIGURES:
        for ext in ("png", "pdf"):
            assert (figures / f"{name}.{ext}").stat().st_size > 0, f"{name}.{ext} not written"
    table = (figures / "main_table.md").read_text()
    assert "HyperDAS one-to-one Dis." in table and "MDAS Cause" in table and "HyperDAS (one-to-one)" in table
    assert "| paper (Llama3-8B) |" in table  # the reference numbers, labelled as not ours
    assert "\\begin{tabular}" in (figures / "main_table.tex").read_text()


def test_missing_inputs_skip_their_figures_with_the_reason(tmp_path):
    folder = make_results(tmp_path / "fixture")
    (folder / "ablations.json").unlink()
    (folder / "selections" / "householder.json").unlink()
    (tmp_path / "figures").mkdir()
    for ext in ("png", "pdf"):  # drawn from an earlier run's files
        (tmp_path / "figures" / f"householder.{ext}").write_text("stale")
    status = plots.make_all(plots.Results(folder), tmp_path / "figures")
    assert status["householder"].startswith("skipped:") and "householder.json" in status["householder"]
    assert status["householder"].endswith("removed the one made from earlier results")
    assert not list((tmp_path / "figures").glob("householder.*"))
    assert "ablations.json is missing" in status["leakage_controls"]
    assert status["main_table"] == "written" and status["convergence"] == "written"


def test_old_schema_and_bad_requests_fail_by_name(tmp_path):
    folder = make_results(tmp_path / "fixture")
    (folder / "hyperdas.json").write_text(json.dumps({"model": "fixture", "scores": {}}))
    with pytest.raises(plots.SchemaError, match=r"hyperdas.json lacks \['records'\].*older version"):
        plots.main_table(plots.Results(folder))
    with pytest.raises(FileNotFoundError, match="no results folder"):
        plots.Results(tmp_path / "nowhere")
    with pytest.raises(ValueError, match=r"unknown figure\(s\) \['pie'\]"):
        plots.make_all(plots.Results(folder), tmp_path / "figures", ["pie"])


def test_reference_numbers_carry_their_source():
    reference = json.loads((plots.REFERENCE_DIR / "llama3-8b.json").read_text())
    for entry in reference["main"] + reference["blocks_cross_attention"]:
        assert "2503.10894" in entry["source"] or "official" in entry["source"]


def test_layer_sweep_draws_hyperdas_at_every_layer_notebook_03_ran(tmp_path):
    """hyperdas.json keeps the latest run; hyperdas_layers.json every layer's (a layer sweep)."""
    folder = make_results(tmp_path / "results")
    rng = random.Random(1)
    (folder / "hyperdas_layers.json").write_text(
        json.dumps(
            {
                "written_at": "now",
                **{
                    f"layer{layer}": {
                        "records": [
                            {
                                "domain": "city",
                                "method": "hyperdas",
                                "mode": m,
                                "attribute": a,
                                "layer": layer,
                                **_m(rng),
                            }
                            for m in MODES
                            for a in ATTRIBUTES
                        ]
                    }
                    for layer in (1, 2)
                },
            }
        )
    )
    layers = sorted({r["layer"] for r in sweeps._hyperdas_layers(plots.Results(folder))})
    assert layers == [1, 2]
    plots.layer_sweep(plots.Results(folder))
    (folder / "hyperdas_layers.json").unlink()
    assert {r["layer"] for r in sweeps._hyperdas_layers(plots.Results(folder))} == {2}  # hyperdas.json alone


def test_a_bad_results_file_names_itself_and_costs_only_its_own_figures(tmp_path):
    folder = make_results(tmp_path / "fixture")
    log = (folder / "train_log.jsonl").read_text().splitlines()
    (folder / "train_log.jsonl").write_text("\n".join(log[:3] + ["{not json"] + log[3:]))
    ablations = json.loads((folder / "ablations.json").read_text())
    for r in ablations["records"]:
        r.pop("n_blocks", None)  # a renamed field
    (folder / "ablations.json").write_text(json.dumps(ablations))
    sweep = json.loads((folder / "das_sweep.json").read_text())
    for run in sweep["runs"]:
        run["val"] = {m: "high" for m in ("cause", "iso", "disentangle")}  # scores as strings
    (folder / "das_sweep.json").write_text(json.dumps(sweep))
    status = plots.make_all(plots.Results(folder), tmp_path / "figures")
    assert status["convergence"].startswith("failed:") and "train_log.jsonl line 4 is not JSON" in status["convergence"]
    assert "ablations.json" in status["blocks_cross_attention"] and "n_blocks" in status["blocks_cross_attention"]
    assert "das_sweep.json: runs[0].val.cause='high' must be a number" in status["k_tradeoff"]
    assert status["main_table"] == status["main_disentangle"] == status["leakage_controls"] == "written"


def test_speed_table_quotes_benchmarks_json(tmp_path):
    step = {
        "batch_size": 16,
        "hyperdas_step_seconds": {"median": 1.2},
        "bare_forward_backward_seconds": {"median": 1.0},
        "ratio": 1.2,
        "ratio_without_store": 2.0,
        "goal_ratio": 1.5,
        "eval_examples_per_second": {"soft": 9.5},
    }
    (tmp_path / "benchmarks.json").write_text(json.dumps({"hyperdas_step": step, "environment": {"cpu_count": 2}}))
    table = plots.speed_table(plots.Results(tmp_path)).set_index("measure")
    assert (
        table.loc["HyperDAS step / bare step", "value"] == 1.2 and table.loc["HyperDAS step / bare step", "goal"] == 1.5
    )
    assert table.loc["HyperDAS step / bare step, no activation store", "value"] == 2.0
    das = {"ratio": 1.2, "from_states_ratio": 0.86, "goal_ratio": 1.3}
    malloc = {"speedup": {"hyperdas": 1.12, "das_from_states": 1.0}}
    (tmp_path / "benchmarks.json").write_text(
        json.dumps({"hyperdas_step": step, "das_step": das, "malloc_tuning": malloc})
    )
    table = plots.speed_table(plots.Results(tmp_path)).set_index("measure")
    assert table.loc["DAS step from cached layer states / bare step", "value"] == 0.86
    assert table.loc["HyperDAS step speed-up, batch runner's malloc settings", "value"] == 1.12
    (tmp_path / "benchmarks.json").write_text(json.dumps({"das_step": {}}))
    with pytest.raises(plots.Missing, match="no hyperdas_step section"):
        plots.speed_table(plots.Results(tmp_path))


def test_main_table_gives_mean_and_sd_over_seeds(tmp_path):
    folder = tmp_path / "fixture"
    folder.mkdir()
    score = lambda c, i: {"cause": c, "iso": i, "disentangle": (c + i) / 2}  # noqa: E731
    hyper = [
        {"domain": "city", "method": "hyperdas", "mode": "soft", "attribute": a, "layer": 2, "seed": s, **score(c, 0.5)}
        for s, c in ((0, 0.2), (1, 0.6))
        for a in ATTRIBUTES
    ]
    block = lambda f: {"conflict": {"soft": {"follows_activations": f, "follows_instruction": 0.1}}}  # noqa: E731
    (folder / "hyperdas.json").write_text(
        json.dumps({"model": "fixture", "seed": 0, "records": hyper, "faithfulness": block(0.4)})
    )
    table = plots.main_table(plots.Results(folder))
    row = table.loc[("city", "mean", "HyperDAS (soft)")]
    assert row["n_seeds"] == 2 and row["cause"] == pytest.approx(0.4)
    assert row["cause_sd"] == pytest.approx(0.4 / 2**0.5) and row["iso_sd"] == pytest.approx(0.0)
    assert row["follows_activations"] == pytest.approx(0.4) and "follows_activations_sd" not in table
    by_seed = {"faithfulness_by_seed": {"0": block(0.4), "1": block(0.8)}}
    (folder / "hyperdas.json").write_text(
        json.dumps({"model": "fixture", "seed": 0, "records": hyper, "faithfulness": block(0.4), **by_seed})
    )
    row = plots.main_table(plots.Results(folder)).loc[("city", "mean", "HyperDAS (soft)")]
    assert row["follows_activations"] == pytest.approx(0.6) and row["follows_activations_sd"] == pytest.approx(
        0.4 / 2**0.5
    )
    one_seed = [r for r in hyper if r["seed"] == 0]
    (folder / "hyperdas.json").write_text(json.dumps({"model": "fixture", "records": one_seed}))
    table = plots.main_table(plots.Results(folder))
    assert not [c for c in table.columns if c.endswith("_sd")] and table["n_seeds"].max() == 1
    assert plots.seeds_caption(table) == "one seed"


def test_a_caption_never_counts_more_seeds_than_a_method_ran(tmp_path):
    folder = tmp_path / "fixture"
    folder.mkdir()
    score = {"cause": 0.5, "iso": 0.5, "disentangle": 0.5}
    hyper = [
        {"domain": "city", "method": "hyperdas", "mode": "soft", "attribute": a, "layer": 2, "seed": s, **score}
        for s in (0, 1)
        for a in ATTRIBUTES
    ]
    base = [{"domain": "city", "method": "mdas", "attribute": a, "layer": 2, "seed": 0, **score} for a in ATTRIBUTES]
    (folder / "hyperdas.json").write_text(json.dumps({"model": "fixture", "records": hyper}))
    (folder / "baselines.json").write_text(json.dumps({"model": "fixture", "records": base}))
    table = plots.main_table(plots.Results(folder))
    assert table.loc[("city", "mean", "MDAS"), "n_seeds"] == 1
    assert plots.seeds_caption(table) == "mean ± sd over 2 seeds (MDAS: 1 seed, no sd)"
    base = [{**r, "seed": s} for r in base for s in (0, 1)]
    (folder / "baselines.json").write_text(json.dumps({"model": "fixture", "records": base}))
    assert plots.seeds_caption(plots.main_table(plots.Results(folder))) == "mean ± sd over 2 seeds"


def test_layer_sweep_draws_the_better_of_tied_ks(tmp_path):
    folder = make_results(tmp_path / "results")
    runs = [
        {"kind": kind, "config": {"layer": layer, "k": k}, "val": {"cause": d, "iso": d, "disentangle": d}}
        for kind, layer, k, d in [
            ("full_patch", 1, 8, 0.4),
            ("full_patch", 2, 8, 0.4),
            ("mdas", 1, 8, 0.2),
            ("mdas", 2, 8, 0.2),
            ("mdas", 1, 64, 0.6),
            ("mdas", 2, 64, 0.6),
        ]
    ]
    (folder / "das_sweep.json").write_text(json.dumps({"attribute": "Country", "runs": runs}))
    fig = plots.layer_sweep(plots.Results(folder))
    labels = {t.get_text() for legend in fig.legends for t in legend.get_texts()}
    assert "MDAS (val, Country, k=64)" in labels and "full patch (val, Country)" in labels
    assert not any("k=8" in label for label in labels)


def test_variants_table_has_one_row_per_run_file_and_mode(tmp_path):
    folder = make_results(tmp_path / "fixture")
    plain = json.loads((folder / "hyperdas.json").read_text())
    conflict = {m: {"follows_activations": 0.5, "follows_instruction": 0.1} for m in MODES}
    blind = {m: {"cause": 0.2, "iso": 0.4, "disentangle": 0.3} for m in MODES}
    variant = {
        **plain,
        "config": {
            "hyperdas": {"base_read": "entity", "instruction": "{target_attribute}", "layer": 6, "k": 128},
            "train": {"train_selection": "one_to_one", "selection_entropy": 0.1},
        },
        "faithfulness": {"conflict": conflict, "query_blind": blind},
    }
    (folder / "hyperdas_entity_read.json").write_text(json.dumps(variant))
    (folder / "hyperdas_layers.json").write_text(json.dumps({"15": {"records": []}}))
    table = plots.variants_table(plots.Results(folder)).set_index(["file", "mode"])
    assert len(table) == 6  # two run files x three modes; the per-layer file is not a run
    assert table.loc[("hyperdas.json", "soft"), "base_read"] == "prompt"  # written before base_read existed
    row = table.loc[("hyperdas_entity_read.json", "one-to-one")]
    assert row["base_read"] == "entity" and row["follows_activations"] == 0.5 and row["query_blind_iso"] == 0.4
    assert (row["layer"], row["k"], row["trained"], row["entropy"]) == (6, 128, "one-to-one", 0.1)
    # written before train_selection and selection_entropy existed: soft training, no entropy term
    assert tuple(table.loc[("hyperdas.json", "soft"), ["trained", "entropy"]]) == ("soft", 0.0)
    soft = [r for r in plain["records"] if r["mode"] == "soft"]
    assert table.loc[("hyperdas.json", "soft"), "cause"] == pytest.approx(sum(r["cause"] for r in soft) / 3)
    assert "hyperdas_variants.md" in {p.name for p in plots.write_tables(plots.Results(folder), tmp_path / "out")}
    # a file of several seeds: scores and faithfulness are both the seeds' means
    by_seed = {
        str(s): {"conflict": {m: {"follows_activations": f, "follows_instruction": 0.0} for m in MODES}}
        for s, f in ((0, 0.4), (1, 0.8))
    }
    seeded = [{**r, "seed": s, "cause": c} for s, c in ((0, 0.2), (1, 0.6)) for r in plain["records"]]
    (folder / "hyperdas_seeds.json").write_text(
        json.dumps({**plain, "records": seeded, "faithfulness": by_seed["0"], "faithfulness_by_seed": by_seed})
    )
    row = plots.variants_table(plots.Results(folder)).set_index(["file", "mode"]).loc[("hyperdas_seeds.json", "soft")]
    assert (
        row["n_seeds"] == 2 and row["cause"] == pytest.approx(0.4) and row["follows_activations"] == pytest.approx(0.6)
    )


def test_main_table_pools_the_baselines_conflict_shares_over_attributes(tmp_path):
    folder = make_results(tmp_path / "fixture")
    hyper_layer = json.loads((folder / "hyperdas.json").read_text())["records"][0]["layer"]
    shares = {"Continent": (0.9, 10), "Country": (0.3, 30), "Language": (0.6, 20)}  # (follows_activations, n)
    records = [
        {
            "domain": "city",
            "method": "mdas",
            "attribute": a,
            "layer": hyper_layer,
            "seed": s,
            "cause": 0.5,
            "iso": 0.5,
            "disentangle": 0.5,
            "conflict": {"follows_activations": f + 0.1 * s, "follows_instruction": 0.0, "n": n},
        }
        for s in (0, 1)
        for a, (f, n) in shares.items()
    ]
    (folder / "baselines.json").write_text(json.dumps({"model": "fixture", "records": records}))
    row = plots.main_table(plots.Results(folder)).loc[("city", "mean", "MDAS")]
    pooled = (0.9 * 10 + 0.3 * 30 + 0.6 * 20) / 60  # weighted by pairs, as HyperDAS's 200 pooled pairs
    assert row["follows_activations"] == pytest.approx(pooled + 0.05)  # mean of seeds 0 and 1
    assert row["follows_activations_sd"] == pytest.approx(0.1 / 2**0.5) and row["follows_instruction"] == 0.0


def test_unreadable_inputs_remove_the_tables_and_figures_made_from_earlier_results(tmp_path):
    folder = make_results(tmp_path / "fixture")
    out = tmp_path / "figures"
    assert plots.make_all(plots.Results(folder), out)["main_table"] == "written"
    first = (out / "convergence.pdf").read_bytes()
    assert plots.make_all(plots.Results(folder), out, ["convergence"])["convergence"] == "written"
    assert (out / "convergence.pdf").read_bytes() == first  # no creation date: byte-stable
    (folder / "hyperdas.json").write_text("{cut sh")
    (folder / "train_log.jsonl").write_text("{not json\n")
    status = plots.make_all(plots.Results(folder), out)
    assert status["main_table"].startswith("failed:") and status["main_table"].endswith("earlier results")
    assert not (out / "main_table.md").exists() and not (out / "main_table.tex").exists()
    assert status["convergence"].startswith("failed:") and not list(out.glob("convergence.*"))


@pytest.mark.parametrize("damage", ["another_model", "nan_score", "another_layer"])
def test_mixed_or_nan_results_are_named_not_tabled(tmp_path, damage):
    import json

    folder = make_results(tmp_path / "fixture")
    out = tmp_path / "figures"
    path = folder / "baselines.json"
    data = json.loads(path.read_text())
    if damage == "another_model":
        data["model"] = "qwen2.5-0.5b"
        expected = "holds results of qwen2.5-0.5b, hyperdas.json beside it those of"
    elif damage == "nan_score":
        data["records"][1]["disentangle"] = float("nan")
        expected = "records[1].disentangle=nan (a run that diverged or scored no pairs) must be a number"
    else:
        for r in data["records"]:
            r["layer"] = 99
        expected = "none at HyperDAS's layer"
    path.write_text(json.dumps(data))
    status = plots.make_all(plots.Results(folder), out)
    assert status["main_table"].startswith("failed:") and expected in status["main_table"], status["main_table"]
    assert not (out / "main_table.md").exists()


def test_the_batch_summary_names_a_damaged_results_file_in_one_line(tmp_path):
    from hyperdas.batch import headline

    folder = make_results(tmp_path / "fixture")
    assert headline(folder).startswith("Disentangle: hyperdas")
    (folder / "baselines.json").write_text("{cut sh")
    line = headline(folder)
    assert "baselines.json unreadable (" in line and "is not valid JSON" in line and "\n" not in line


def _drawn(folder):
    """Every figure `folder` has the data for, drawn in the shared style: name -> figure."""
    import matplotlib.pyplot as plt

    results, out = plots.Results(folder), {}
    plots.style()
    for name, make in plots.FIGURES.items():
        results.read = []
        try:
            out[name] = make(results)
        except plots.Missing:
            continue
    yield out
    plt.close("all")


def test_no_figure_drawn_from_fixture_results_has_overlapping_text(tmp_path):
    from hyperdas.experiments.figures.style import overlaps

    for figures in _drawn(make_results(tmp_path / "results" / "fixture")):
        assert set(figures) == set(plots.FIGURES)  # the fixture holds every figure's data
        assert {name: overlaps(fig) for name, fig in figures.items() if overlaps(fig)} == {}


def test_no_figure_drawn_from_the_committed_results_has_overlapping_text():
    from hyperdas.core.results import REPO
    from hyperdas.experiments.figures.style import overlaps

    for figures in _drawn(REPO / "results" / "cpu-seeds" / "smollm2-135m"):  # the README's folder
        assert "main_disentangle" in figures and "ladder" in figures
        assert {name: overlaps(fig) for name, fig in figures.items() if overlaps(fig)} == {}


def test_the_overlap_check_sees_overlapping_labels_and_a_legend_over_data():
    import matplotlib.pyplot as plt

    from hyperdas.experiments.figures.style import overlaps, token_label

    fig, ax = plt.subplots(figsize=(2, 2))
    ax.bar(range(8), [1] * 8)
    ax.set_xticks(range(8), ["a long label"] * 8)
    ax.legend(["bars"], loc="center")
    found = overlaps(fig)
    assert any("overlaps 'a long label'" in f for f in found) and any("hides a bar" in f for f in found)
    plt.close(fig)
    assert [token_label(t) for t in ("ĠParis", "Ġ", "Ċ")] == ["Paris", "␣", "\\n"]
