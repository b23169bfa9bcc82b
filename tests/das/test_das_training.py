"""DAS/MDAS training on the synthetic world: checkpoints reload exactly; bad input is named."""

import pytest
import torch

from hyperdas.das.training import DASConfig, load_checkpoint, select_rows, train_das
from hyperdas.target.evaluate import encode, evaluate
from hyperdas.target.hooks import LayerIndexError

SHORT = DASConfig(target_attribute="Country", layer=1, k=8, batch_size=8, steps=6, eval_every=3, max_val_pairs=24)


@pytest.fixture(scope="module")
def pairs(synthetic_pairs):
    return synthetic_pairs(max_pairs={"train": 120, "val": 60, "test": 60})


def test_checkpoint_reloads_to_identical_outputs(synthetic_target, pairs, tmp_path):
    result = train_das(synthetic_target, pairs, SHORT.replace(method="mdas"), checkpoint_dir=tmp_path, progress=False)
    assert result.best_val["iso"] is not None and [h["step"] for h in result.history] == list(
        range(1, len(result.history) + 1)
    )
    loaded, config = load_checkpoint(tmp_path, synthetic_target.hidden_size)
    assert config == SHORT.replace(method="mdas")
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith(".")) == [
        "config.json",
        "intervention.safetensors",
        "meta.json",
        "resume.pt",
        "resume.pt.checksums.json",
    ]
    test = encode(synthetic_target.tokenizer, pairs["test"])
    ours, _ = evaluate(synthetic_target, SHORT.layer, result.intervention, test)
    theirs, _ = evaluate(synthetic_target, SHORT.layer, loaded, test)
    assert ours == theirs
    assert torch.equal(loaded.R, result.intervention.R.detach())


def test_das_trains_on_causal_rows_only_mdas_adds_isolate(pairs):
    das, mdas = select_rows(pairs["train"], SHORT), select_rows(pairs["train"], SHORT.replace(method="mdas"))
    assert set(das["attribute_type"]) == {"causal"} and set(mdas["attribute_type"]) == {"causal", "isolate"}
    assert set(das["target_attribute"]) == set(mdas["target_attribute"]) == {"Country"}


def test_same_seed_same_numbers(synthetic_target, pairs):
    run = lambda: [
        h["loss"]
        for h in train_das(
            synthetic_target,
            pairs,
            SHORT.replace(steps=3, eval_every=99),  # noqa: E731
            progress=False,
        ).history
    ]
    assert run() == run()


def test_bad_input_is_named(synthetic_target, pairs, tmp_path):
    with pytest.raises(ValueError, match="k=129 exceeds the hidden size 128"):
        train_das(synthetic_target, pairs, SHORT.replace(k=129), progress=False)
    with pytest.raises(LayerIndexError):
        train_das(synthetic_target, pairs, SHORT.replace(layer=7), progress=False)
    with pytest.raises(ValueError, match="no causal rows for attribute 'Size'"):
        train_das(synthetic_target, pairs, SHORT.replace(target_attribute="Size"), progress=False)
    with pytest.raises(ValueError, match=r"lacks required field\(s\) \['target'\]"):
        select_rows(pairs["train"].remove_columns("target"), SHORT)
    train_das(synthetic_target, pairs, SHORT.replace(steps=1), checkpoint_dir=tmp_path, progress=False)
    with pytest.raises(ValueError, match="hidden size 128, not 576"):
        load_checkpoint(tmp_path, 576)


def test_interrupted_run_resumes_to_the_same_numbers(synthetic_target, pairs, tmp_path, monkeypatch, interrupt):
    import hyperdas.das.training as train_module

    config = SHORT.replace(method="mdas", steps=9, eval_every=3, patience=9)
    whole = train_das(synthetic_target, pairs, config, progress=False)
    restore = interrupt(monkeypatch, train_module, "intervened_logits", 5)
    with pytest.raises(KeyboardInterrupt):
        train_das(synthetic_target, pairs, config, checkpoint_dir=tmp_path, progress=False)
    restore()
    resumed = train_das(synthetic_target, pairs, config, checkpoint_dir=tmp_path, progress=False)
    assert resumed.resumed_from == 3
    assert resumed.history == whole.history and resumed.best_step == whole.best_step
    assert torch.equal(resumed.intervention.R, whole.intervention.R)
    again = train_das(synthetic_target, pairs, config, checkpoint_dir=tmp_path, progress=False)
    assert again.history == whole.history  # a finished run is not trained again
    with pytest.raises(ValueError, match="another configuration"):
        train_das(synthetic_target, pairs, config.replace(lr=0.5), checkpoint_dir=tmp_path, progress=False)
