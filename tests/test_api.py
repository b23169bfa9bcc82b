"""The public API: `import hyperdas` names what a user needs, loads no torch until a name is used,
and the README's example runs (on the synthetic model instead of the embedded one)."""

import subprocess
import sys

import pytest

import hyperdas


def test_every_public_name_resolves():
    assert 15 <= len(hyperdas.__all__) <= 25
    for name in hyperdas.__all__:
        assert getattr(hyperdas, name) is not None, name
    with pytest.raises(AttributeError, match="no attribute 'train'"):
        hyperdas.train  # noqa: B018


def test_import_and_help_load_no_torch():
    code = (
        "import sys, hyperdas, hyperdas.cli, hyperdas.batch; print(hyperdas.__all__[:1]); "
        "assert 'torch' not in sys.modules, 'torch imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
    for module in ("hyperdas.cli", "hyperdas.batch"):
        code = HELP_WITHOUT_TORCH.format(module=module)
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        assert done.returncode == 0 and "usage:" in done.stdout, done.stderr


HELP_WITHOUT_TORCH = """
import runpy, sys
sys.argv = ["x", "--help"]
try:
    runpy.run_module("{module}", run_name="__main__")
except SystemExit:
    pass
assert "torch" not in sys.modules, "torch imported"
"""


def test_the_readme_example_runs(synthetic_data, synthetic_known, tmp_path):
    import hyperdas as hd
    from hyperdas.data.dataset import save_pairs
    from hyperdas.data.pairs import PairConfig, build_pairs

    target = hd.load_target("synthetic-llama")
    built = build_pairs(
        synthetic_data, synthetic_known, target.tokenizer, PairConfig(max_pairs={"train": 16, "val": 4, "test": 8})
    )
    pairs = hd.load_pairs(save_pairs(built, tmp_path / "pairs", {}))
    config = hd.HyperDASConfig(layer=0, k=4, n_blocks=1)
    result = hd.train_hyperdas(target, pairs, config, hd.HyperTrainConfig(steps=2, max_val_pairs=4), progress=False)
    test = hd.encoded_pairs(target, pairs["test"])
    scores, _ = hd.evaluate(target, config.layer, hd.Inference(result.model, "one_to_one"), test)
    assert set(scores["overall"]) >= {"cause", "iso", "disentangle"}
