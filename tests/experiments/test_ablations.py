"""The leakage ablations on the synthetic world: every function runs on the tiny model, the conflict
control tells a faithful intervention from a leaky one, and bad requests fail by name."""

import json

import pytest
import torch

from hyperdas.core.config import ConfigError
from hyperdas.das.interventions import FullInterchange
from hyperdas.experiments import ablations
from hyperdas.experiments.ablation_runner import AblationConfig, AblationRunner, main_model
from hyperdas.experiments.leakage import (
    FixedSelection,
    InstructionLeak,
    LookupTable,
    conflict_outcomes,
    conflict_rows,
    entity_vectors,
    swapped,
)
from hyperdas.experiments.selection_analysis import entity_span, token_role
from hyperdas.hyper.model import HyperDASConfig
from hyperdas.hyper.training import HyperTrainConfig, save_hyperdas

MODEL = HyperDASConfig(layer=0, k=8, n_blocks=1, selection_heads=4)
TRAIN = HyperTrainConfig(batch_size=8, lr=1e-3, max_val_pairs=8)
SETTINGS = AblationConfig(
    steps=2, max_test_pairs=24, n_blocks=(0, 1), cross_attention=("both", "neither"), n_selections=2
)


@pytest.fixture(scope="module")
def pairs(synthetic_pairs):
    return synthetic_pairs(max_pairs={"train": 80, "val": 16, "test": 60}, generalisation_sets=True)


@pytest.fixture(scope="module")
def runner(synthetic_target, pairs, tmp_path_factory):
    torch.manual_seed(0)
    return AblationRunner(
        synthetic_target, pairs, MODEL, TRAIN, SETTINGS, folder=tmp_path_factory.mktemp("ablations"), progress=False
    )


def _metrics_ok(record):
    assert set(record["overall"]) == {"cause", "iso", "disentangle"}
    assert record["overall"]["disentangle"] is not None  # cause or iso may be None: a subset without that kind
    assert all(v is None or 0 <= v <= 1 for v in record["overall"].values())
    assert record["per_attribute"] and record["seed"] == 0 and "config" in record
    # every HyperDAS variant carries its faithfulness: the conflict shares on the same conflict pairs
    assert 0 <= record["follows_activations"] <= 1 and 0 <= record["follows_instruction"] <= 1


@pytest.mark.parametrize("name", sorted(ablations.ABLATIONS))
def test_every_ablation_runs_on_the_tiny_model(runner, name):
    records = ablations.run(name, runner)
    assert records and all(r["ablation"] == name for r in records)
    for r in records:
        if "overall" in r:
            _metrics_ok(r)
    lines = ablations.describe(name, records)
    assert lines and any(ch.isdigit() for ch in "".join(lines))


def test_grid_shapes_and_shared_training(synthetic_target, pairs):
    runner = AblationRunner(synthetic_target, pairs, MODEL, TRAIN, SETTINGS, progress=False)
    grid = ablations.blocks_cross_attention(runner)
    assert [r["variant"] for r in grid] == ["N=0, n/a", "N=1, both", "N=1, neither"]
    before = len(runner._trained)
    ablations.initialisation(runner)  # "target" equals the grid's N=1, both: trained once
    assert len(runner._trained) == before + 1
    sparse = {r["variant"]: r for r in ablations.sparsity(runner)}
    assert sparse["off"]["sparsity_to"] == 0 and sparse["strong"]["sparsity_to"] == pytest.approx(15.0)
    for r in sparse.values():
        assert 0 <= r["last_token_mass"] <= 1 and r["selection_entropy"] >= 0
        A = torch.tensor(r["selections"][0]["A"])
        assert A.shape == (len(r["selections"][0]["source_tokens"]), len(r["selections"][0]["base_tokens"]))
        assert torch.allclose(A.sum(0), torch.ones(A.shape[1]), atol=1e-4)


def test_a_lookup_table_run_alone_equals_the_same_run_after_others(synthetic_target, pairs, runner):
    alone = AblationRunner(synthetic_target, pairs, MODEL, TRAIN, SETTINGS, progress=False)
    torch.rand(7)  # whatever ran before must not change the variant's initial weights
    assert ablations.lookup_table(alone) == ablations.lookup_table(runner)


def test_symmetric_picks_are_distributions(runner):
    records = ablations.symmetric(runner)
    assert [(r["variant"], r["config"]["position_offsets"]) for r in records] == [
        ("asymmetric", 8),  # the default head has offset features: the third variant takes them away
        ("symmetric", 8),
        ("asymmetric, no offsets", 0),
    ]
    for r in records:
        for sides in r["picks"].values():
            for roles in sides.values():
                assert sum(roles.values()) == pytest.approx(1.0)
                assert set(roles) <= {"first", "middle", "last", "other", "none"}


def test_lookup_table_reports_held_out_entities(runner):
    records = ablations.lookup_table(runner)
    by = {r["variant"]: r for r in records}
    assert {"lookup table / test / unseen keys", "hyperdas / test / unseen keys"} <= set(by)
    assert any(r["split"] == "test_entity" for r in records)
    for r in records:  # the two methods are scored on the same pairs
        twin = by[r["variant"].replace("lookup table", "hyperdas")] if r["variant"].startswith("lookup") else None
        assert twin is None or twin["n_pairs"] == r["n_pairs"]


def test_conflict_control_tells_faithful_from_leaky(synthetic_target, pairs):
    rows = conflict_rows(pairs["test"], seed=0)
    assert rows and all(r["counterfactual_target"] != r["instruction_target"] for r in rows)
    faithful = conflict_outcomes(synthetic_target, 0, FullInterchange(), rows)
    assert faithful["follows_activations"] >= 0.9 and faithful["verdict"] == "activations"
    leak = InstructionLeak(entity_vectors(synthetic_target, 0, pairs["test"]))
    leaky = conflict_outcomes(synthetic_target, 0, leak, rows)
    assert leaky["follows_instruction"] >= 0.9 and leaky["verdict"] == "instruction"


def test_fixed_selection_links_the_entity_last_tokens():
    base_mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]], dtype=torch.bool)
    source_mask = torch.tensor([[1, 1, 0], [1, 1, 1]], dtype=torch.bool)
    A = FixedSelection()(None, torch.zeros(2, 4, 5), base_mask, torch.zeros(2, 3, 5), source_mask)
    assert A[0, 1, 2] == 1 and A[1, 2, 1] == 1
    assert torch.equal(A.sum(1), torch.ones(2, 4))


def test_lookup_table_unknown_keys_share_row_zero():
    table = LookupTable([[5, 6], [7]], hidden=4)
    ids = torch.tensor([[5, 6, 0], [7, 0, 0], [9, 9, 0]])
    mask = torch.tensor([[1, 1, 0], [1, 0, 0], [1, 1, 0]])
    assert table.rows(ids, mask).tolist() == [1, 2, 0]


def test_swapped_restores_parts_even_after_an_error(runner):
    model = runner.trained(MODEL).model
    original = model.selection
    with pytest.raises(RuntimeError):
        with swapped(model, selection=FixedSelection()):
            assert isinstance(model.selection, FixedSelection)
            raise RuntimeError("boom")
    assert model.selection is original
    with pytest.raises(ValueError, match="no part"):
        with swapped(model, steering=FixedSelection()):
            pass


def test_entity_span_and_roles(synthetic_target):
    span = entity_span(synthetic_target.tokenizer, "Travel guide : Dune Arvel", " , a city in", "Dune Arvel")
    assert span[1] == span[0] + 1
    assert [token_role(t, (3, 5)) for t in (3, 4, 5, 1)] == ["first", "middle", "last", "other"]


def test_bad_requests_fail_by_name(runner, tmp_path):
    with pytest.raises(ValueError, match="unknown ablation 'dropout'"):
        ablations.run("dropout", runner)
    with pytest.raises(ConfigError, match="n_blocks is empty"):
        AblationConfig(n_blocks=())
    with pytest.raises(ConfigError, match=r"unknown value\(s\) \['half'\]"):
        AblationConfig(cross_attention=("half",))
    with pytest.raises(ValueError, match="grid is empty"):
        ablations.blocks_cross_attention(runner, n_blocks=[])
    with pytest.raises(ValueError, match="out of range"):
        ablations.blocks_cross_attention(runner, n_blocks=[99])
    with pytest.raises(FileNotFoundError, match="run notebooks/03"):
        main_model(runner, tmp_path / "nothing")
    other = runner.trained(MODEL).model
    save_hyperdas(tmp_path / "k4", type(other)(runner.target, MODEL.replace(k=4)))
    with pytest.raises(ValueError, match=r"differs in \['k'\].*must match notebook 03"):
        main_model(runner, tmp_path / "k4")


def test_run_each_yields_after_every_ablation_and_the_file_keeps_what_it_has(runner, tmp_path):
    with pytest.raises(ValueError, match=r"unknown ablation\(s\) \['sparsty'\]"):
        next(ablations.run_each(["sparsty"], runner))
    records = []
    for name, found, seconds, sentences in ablations.run_each(["lookup_table"], runner):
        records += found
        path = ablations.write_results(
            tmp_path / "r" / "m" / "ablations.json",
            model_name="m",
            seed=0,
            records=records,
            timings={name: seconds},
            interpretation={name: sentences},
            configs={"ablations": [name]},
            checkpoint=tmp_path / "r" / "m" / "checkpoints" / "hyperdas",
            pairs_folder=tmp_path / "elsewhere",
            results_root=tmp_path / "r",
        )
    written = json.loads(path.read_text())
    assert written["records"] == records and written["interpretation"]["lookup_table"] == sentences
    assert written["config"]["checkpoint"] == "<results>/m/checkpoints/hyperdas"
