"""HyperDAS training on the synthetic world: logs, schedules, checkpoints that reload exactly, resume."""

import json

import pytest
import torch

from hyperdas.core.config import ConfigError
from hyperdas.core.files import checked_path
from hyperdas.hyper.model import HyperDASConfig, Inference
from hyperdas.hyper.training import HyperTrainConfig, encoded_pairs, load_hyperdas, train_hyperdas
from hyperdas.target.evaluate import evaluate

MODEL = HyperDASConfig(layer=0, k=8, n_blocks=1, selection_heads=4)
TRAIN = HyperTrainConfig(steps=6, batch_size=8, lr=1e-3, eval_every=3, max_val_pairs=16)


@pytest.fixture(scope="module")
def pairs(synthetic_pairs):
    return synthetic_pairs(max_pairs={"train": 90, "val": 30, "test": 30})


def test_sparsity_and_temperature_schedules():
    config = HyperTrainConfig(steps=100)
    assert config.sparsity_weight(50) == 0 and config.sparsity_weight(51) > 0.15
    assert config.sparsity_weight(100) == pytest.approx(1.5)
    assert config.temperature(0) == 50 and config.temperature(100) == pytest.approx(0.1)
    assert config.lr_factor(1) == config.lr_factor(100) == 1.0
    linear = HyperTrainConfig(steps=100, lr_schedule="linear")
    assert linear.lr_factor(1) == 1.0 and linear.lr_factor(51) == 0.5 and linear.lr_factor(100) == pytest.approx(0.01)
    with pytest.raises(ConfigError, match=r"lr_schedule='cosine': use one of \('constant', 'linear'\)"):
        HyperTrainConfig(lr_schedule="cosine")
    with pytest.raises(ConfigError, match=r"unknown mode\(s\) \['argmax'\]"):
        HyperTrainConfig(eval_modes=("argmax",))


def test_checkpoint_reloads_to_identical_outputs_and_log_has_every_step(synthetic_target, pairs, tmp_path):
    result = train_hyperdas(synthetic_target, pairs, MODEL, TRAIN, out_dir=tmp_path, progress=False)
    lines = [json.loads(line) for line in (tmp_path / "train_log.jsonl").read_text().splitlines()]
    assert [line["step"] for line in lines] == list(range(1, 7))
    assert set(lines[2]["val"]) == {"soft", "one_to_many", "one_to_one"}
    loaded, saved = load_hyperdas(tmp_path, synthetic_target)
    assert saved["model"] == MODEL.to_dict()
    test = encoded_pairs(synthetic_target, pairs["test"])
    for mode in ("soft", "one_to_one"):
        ours = evaluate(synthetic_target, 0, Inference(result.model, mode), test)[0]
        theirs = evaluate(synthetic_target, 0, Inference(loaded.eval(), mode), test)[0]
        assert ours == theirs
    names = {p.name for p in tmp_path.iterdir() if not p.name.startswith(".")}  # .lock: the writer lock
    assert names == {"hyperdas.safetensors", "config.json", "resume.pt", "resume.pt.checksums.json", "train_log.jsonl"}
    # only the hypernetwork's weights are saved, never the frozen target's; bit-exact
    mine, reloaded = result.model.state_dict(), loaded.state_dict()
    assert mine.keys() == reloaded.keys() and all(torch.equal(mine[k], reloaded[k]) for k in mine)
    with pytest.raises(ValueError, match=r"another HyperDAS configuration \(differs in \['k'\]\)"):
        load_hyperdas(tmp_path, synthetic_target, expect=MODEL.replace(k=4))


@pytest.mark.parametrize("schedule", ["constant", "linear"])  # linear: the resumed steps' rates are set again
def test_interrupted_run_resumes_to_the_same_numbers(
    synthetic_target, pairs, tmp_path, monkeypatch, interrupt, schedule
):
    import hyperdas.hyper.training as module

    train = TRAIN.replace(lr_schedule=schedule)
    whole = train_hyperdas(synthetic_target, pairs, MODEL, train, progress=False)
    restore = interrupt(monkeypatch, module, "intervened_logits", 5)
    with pytest.raises(KeyboardInterrupt):
        train_hyperdas(synthetic_target, pairs, MODEL, train, out_dir=tmp_path, progress=False)
    restore()
    resumed = train_hyperdas(synthetic_target, pairs, MODEL, train, out_dir=tmp_path, progress=False)
    assert resumed.resumed_from == 3
    saved = torch.load(tmp_path / "resume.pt", weights_only=True)
    assert resumed.seconds_all_runs > resumed.seconds > 0  # the interrupted run's seconds count too
    assert saved["seconds"] <= resumed.seconds_all_runs
    logged = [json.loads(line)["step"] for line in (tmp_path / "train_log.jsonl").read_text().splitlines()]
    assert logged == list(range(1, 7))
    assert [h["loss"] for h in resumed.history] == pytest.approx([h["loss"] for h in whole.history], abs=1e-6)
    for a, b in zip(resumed.model.state_dict().values(), whole.model.state_dict().values()):
        assert torch.allclose(a, b, atol=1e-6)
    with pytest.raises(ValueError, match="another configuration"):
        train_hyperdas(synthetic_target, pairs, MODEL, train.replace(lr=0.5), out_dir=tmp_path, progress=False)


def test_a_run_saved_before_a_field_existed_resumes_at_what_it_was_made_with(
    synthetic_target, pairs, tmp_path, monkeypatch, interrupt
):
    import hyperdas.hyper.training as module

    restore = interrupt(monkeypatch, module, "intervened_logits", 5)
    with pytest.raises(KeyboardInterrupt):
        train_hyperdas(synthetic_target, pairs, MODEL, TRAIN, out_dir=tmp_path, progress=False)
    restore()
    saved = torch.load(tmp_path / "resume.pt", weights_only=True)
    del saved["train"]["lr_schedule"], saved["config"]["sink"]  # as a run saved before these fields
    with checked_path(tmp_path / "resume.pt") as path:  # as training writes it, with its checksums
        torch.save(saved, path)
    assert train_hyperdas(synthetic_target, pairs, MODEL, TRAIN, out_dir=tmp_path, progress=False).resumed_from == 3
    with pytest.raises(ValueError, match="another configuration"):  # a saved value still counts
        train_hyperdas(synthetic_target, pairs, MODEL.replace(sink="keep"), TRAIN, out_dir=tmp_path, progress=False)
    # a field whose default changed since counts as what runs were made with before it existed
    saved = torch.load(tmp_path / "resume.pt", weights_only=True)
    del saved["train"]["train_selection"], saved["config"]["base_read"]
    with checked_path(tmp_path / "resume.pt") as path:  # as training writes it, with its checksums
        torch.save(saved, path)
    for model, train in ((MODEL, TRAIN.replace(train_selection="soft")), (MODEL.replace(base_read="prompt"), TRAIN)):
        with pytest.raises(ValueError, match="another configuration"):
            train_hyperdas(synthetic_target, pairs, model, train, out_dir=tmp_path, progress=False)
    old = MODEL.replace(base_read="prompt"), TRAIN.replace(train_selection="soft")
    assert train_hyperdas(synthetic_target, pairs, *old, out_dir=tmp_path, progress=False).resumed_from == 6


@pytest.mark.parametrize("base_read", ["entity", "prompt"])
@pytest.mark.parametrize("store", ["none", "memory"])
def test_the_entropy_term_averages_over_the_whole_batch_read_width(
    synthetic_target, pairs, monkeypatch, base_read, store
):
    """The width the training step passes to column_entropy is the soft A's own for a whole batch
    (so micro-batches add up to it, tests/target/test_distributed.py)."""
    import hyperdas.hyper.training as module

    seen, real = [], module.column_entropy
    monkeypatch.setattr(module, "column_entropy", lambda A, width: seen.append((A.shape[2], width)) or real(A, width))
    model, train = MODEL.replace(base_read=base_read), TRAIN.replace(steps=3, activation_store=store)
    train_hyperdas(synthetic_target, pairs, model, train, progress=False)
    assert len(seen) == 3 and all(a == w for a, w in seen)


def test_bad_checkpoint_layer_and_data(synthetic_target, tiny_llama, pairs, tmp_path):
    from hyperdas.hyper.model import HyperDAS
    from hyperdas.hyper.training import save_hyperdas
    from hyperdas.target.hooks import LayerIndexError

    with pytest.raises(FileNotFoundError, match="no HyperDAS checkpoint"):
        load_hyperdas(tmp_path, synthetic_target)
    with pytest.raises(LayerIndexError, match="layer 9 is out of range"):
        train_hyperdas(synthetic_target, pairs, MODEL.replace(layer=9), TRAIN, progress=False)
    save_hyperdas(tmp_path, HyperDAS(synthetic_target, MODEL))
    with pytest.raises(ValueError, match="trained on synthetic-llama .* not on "):
        load_hyperdas(tmp_path, tiny_llama)
    causal_only = {**pairs, "train": pairs["train"].filter(lambda r: r["attribute_type"] == "causal")}
    with pytest.raises(ValueError, match="iso_weight=0.5 but the training pairs hold no isolate rows"):
        train_hyperdas(synthetic_target, causal_only, MODEL, TRAIN, progress=False)
    assert (
        train_hyperdas(
            synthetic_target, causal_only, MODEL, TRAIN.replace(steps=1, iso_weight=0.0), progress=False
        ).history[0]["step"]
        == 1
    )


def test_a_run_the_device_cannot_hold_is_refused_before_training(synthetic_target, pairs, monkeypatch, capsys):
    from hyperdas.target import memory

    monkeypatch.setattr(memory, "available", lambda device: 1024)  # 1 KiB free
    with pytest.raises(MemoryError, match="HyperDAS training needs about"):
        train_hyperdas(synthetic_target, pairs, MODEL, TRAIN, progress=True)
    assert "memory estimate on cpu" in capsys.readouterr().out


def test_checkpointing_the_target_changes_no_number(synthetic_target, pairs):
    plain = train_hyperdas(synthetic_target, pairs, MODEL, TRAIN.replace(eval_every=100), progress=False)
    saved = train_hyperdas(
        synthetic_target, pairs, MODEL, TRAIN.replace(eval_every=100, checkpoint_target=True), progress=False
    )
    assert [e["loss"] for e in plain.history] == pytest.approx([e["loss"] for e in saved.history], rel=1e-5)


def test_a_diverging_run_stops_at_its_first_non_finite_step_and_keeps_its_log_json(synthetic_target, pairs, tmp_path):
    from hyperdas.core.errors import TrainingDiverged

    wild = TRAIN.replace(lr=1e30, lr_rotation=1e30, clip=1e30, steps=9)
    # the loss turns non-finite, or (on some CPUs) the rotation's Cayley solve fails on weights grown huge first
    diverged = r"training diverged at step \d+: (loss|the rotation's map failed) .*lower hyper_lr"
    with pytest.raises(TrainingDiverged, match=diverged) as caught:
        train_hyperdas(synthetic_target, pairs, MODEL, wild, out_dir=tmp_path, progress=False)
    step = int(str(caught.value).split("at step ")[1].split(":")[0])

    def no_constant(name):
        raise ValueError(f"bare {name} in the train log")

    lines = [
        json.loads(line, parse_constant=no_constant) for line in (tmp_path / "train_log.jsonl").read_text().splitlines()
    ]
    assert [line["step"] for line in lines] == list(range(1, step))  # every finite step, nothing after
    if step > wild.eval_every:  # a best checkpoint existed before the failure, and it is kept
        assert "stays in" in str(caught.value) and (tmp_path / "hyperdas.safetensors").is_file()


def test_a_failed_rotation_map_is_reported_as_divergence(synthetic_target, pairs, tmp_path, monkeypatch):
    from hyperdas.core.errors import TrainingDiverged
    from hyperdas.hyper import training

    def singular(*args, **kwargs):
        raise torch.linalg.LinAlgError("torch.linalg.solve: The solver failed because the input matrix is singular.")

    monkeypatch.setattr(training, "weighted_step", singular)
    with pytest.raises(TrainingDiverged, match=r"at step 1: the rotation's map failed \(torch.linalg.solve") as err:
        train_hyperdas(synthetic_target, pairs, MODEL, TRAIN.replace(steps=2), out_dir=tmp_path, progress=False)
    assert "\n" not in str(err.value) and "lower hyper_lr" in str(err.value)


@pytest.mark.parametrize("field", ["lr", "lr_rotation", "clip", "selection_entropy"])
def test_non_finite_numbers_are_refused(field):
    with pytest.raises(ConfigError, match=rf"HyperTrainConfig.{field}=inf: must be a finite number"):
        HyperTrainConfig(**{field: float("inf")})
    with pytest.raises(ConfigError, match=rf"HyperTrainConfig.{field}=nan: must be a finite number"):
        HyperTrainConfig(**{field: float("nan")})


def test_snapshot_steps_keep_the_weights_of_each_rung(synthetic_target, pairs, tmp_path):
    from hyperdas.hyper.training import snapshot_folder

    result = train_hyperdas(
        synthetic_target, pairs, MODEL, TRAIN.replace(snapshot_steps=[3, 6]), out_dir=tmp_path, progress=False
    )
    for step in (3, 6):
        model, saved = load_hyperdas(snapshot_folder(tmp_path, step), synthetic_target, expect=MODEL)
        assert saved["step"] == step and saved["val"] == result.history[step - 1]["val"]
    last, _ = load_hyperdas(snapshot_folder(tmp_path, 6), synthetic_target)
    final = {k: v for k, v in result.model.state_dict().items()}
    if result.best_step == 6:
        assert all(torch.equal(final[k], v) for k, v in last.state_dict().items())
    for bad in ([2], [3, 3], [9], [0]):  # not a val step, twice, past the run, before it
        with pytest.raises(ConfigError, match="snapshot_steps"):
            TRAIN.replace(snapshot_steps=bad)


def test_a_frozen_embedding_is_never_trained_and_starts_from_the_same_loss(synthetic_target, pairs):
    from hyperdas.hyper.model import HyperDAS

    frozen = MODEL.replace(freeze_embedding=True)
    torch.manual_seed(0)
    initial = HyperDAS(synthetic_target, frozen).hypernetwork.embed.weight.detach().clone()
    found = {}
    for name, config in (("trained", MODEL), ("frozen", frozen)):
        torch.manual_seed(0)
        found[name] = train_hyperdas(synthetic_target, pairs, config, TRAIN.replace(steps=3), progress=False)
    assert found["frozen"].history[0]["loss"] == pytest.approx(found["trained"].history[0]["loss"], rel=1e-6)
    assert torch.equal(found["frozen"].model.hypernetwork.embed.weight, initial)
    assert not torch.equal(found["trained"].model.hypernetwork.embed.weight, initial)
    trainable = lambda m: sum(p.numel() for p in m.parameters() if p.requires_grad)  # noqa: E731
    assert trainable(found["trained"].model) - trainable(found["frozen"].model) == initial.numel()


def test_a_checkpoint_is_scored_only_on_the_pairs_it_was_trained_on(synthetic_target, pairs, synthetic_pairs, tmp_path):
    from hyperdas.core.errors import ProvenanceError
    from hyperdas.experiments.ablation_runner import AblationConfig, AblationRunner, main_model

    train_hyperdas(synthetic_target, pairs, MODEL, TRAIN.replace(steps=3), out_dir=tmp_path, progress=False)
    load_hyperdas(tmp_path, synthetic_target, expect=MODEL, pairs=pairs)  # the same pairs: loads
    other = synthetic_pairs(max_pairs={"train": 80, "val": 30, "test": 30})  # notebook 01 rerun with other pairs
    with pytest.raises(ProvenanceError, match=r"was trained on other pairs: train it again on these pairs"):
        load_hyperdas(tmp_path, synthetic_target, expect=MODEL, pairs=other)
    with pytest.raises(ProvenanceError, match="other pairs"):  # notebook 04's scorers load it this way
        main_model(AblationRunner(synthetic_target, other, MODEL, TRAIN, AblationConfig(), progress=False), tmp_path)
