"""HyperDAS training on the synthetic world: logs, schedules, checkpoints that reload exactly, resume."""

import json

import pytest
import torch

from hyperdas.core.config import ConfigError
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
    assert names == {"hyperdas.safetensors", "config.json", "resume.pt", "train_log.jsonl"}
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
    torch.save(saved, tmp_path / "resume.pt")
    assert train_hyperdas(synthetic_target, pairs, MODEL, TRAIN, out_dir=tmp_path, progress=False).resumed_from == 3
    with pytest.raises(ValueError, match="another configuration"):  # a saved value still counts
        train_hyperdas(synthetic_target, pairs, MODEL.replace(sink="keep"), TRAIN, out_dir=tmp_path, progress=False)
    # a field whose default changed since counts as what runs were made with before it existed
    saved = torch.load(tmp_path / "resume.pt", weights_only=True)
    del saved["train"]["train_selection"], saved["config"]["base_read"]
    torch.save(saved, tmp_path / "resume.pt")
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
