"""Bad input at the command lines: refused before any model loads (or, once it is loaded, as soon as
the problem shows), as one `error: ...` line that names the problem, with exit status 2."""

import json

import pytest
import torch

from hyperdas import batch, profiles
from hyperdas.cli import main
from hyperdas.core.config import ConfigError
from hyperdas.data.dataset import save_pairs
from hyperdas.experiments import params as P

NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is there")

BEFORE_LOADING = [
    (["--set", "hyper_stepz=3"], "unknown parameter(s) hyper_stepz (did you mean hyper_steps?)"),
    (["--set", "hyper_steps=abc"], "HyperTrainConfig.steps must be int, not str 'abc'"),
    (["--set", "hyper_lr=fast"], "HyperTrainConfig.lr must be float, not str 'fast'"),
    (["--set", "hyper_lr=-1"], "HyperTrainConfig.lr=-1: must be >= 0"),
    (["--set", "hyper_lr_rotation=-0.1"], "HyperTrainConfig.lr_rotation=-0.1: must be >= 0"),
    (["--set", "causal_weight=-3"], "HyperTrainConfig.causal_weight=-3: must be >= 0"),
    (["--set", "iso_weight=-0.5"], "HyperTrainConfig.iso_weight=-0.5: must be >= 0"),
    (["--set", "hyper_batch_size=0"], "HyperTrainConfig.batch_size=0: must be >= 1"),
    (["--set", "hyper_eval_every=0"], "HyperTrainConfig.eval_every=0: must be >= 1"),
    (["--set", "hyper_steps=-5"], "HyperTrainConfig.steps=-5: must be >= 0"),
    (["--set", "k=0"], "HyperDASConfig.k=0: must be >= 1"),
    (["--set", "layer=top"], "HyperDASConfig.layer must be int, not str 'top'"),
    (["--set", "n_blocks=-1"], "HyperDASConfig.n_blocks=-1: must be >= 0"),
    (["--set", "source_ca=maybe"], "HyperDASConfig.source_ca must be bool, not str 'maybe'"),
    (["--set", "subspace=pca"], "HyperDASConfig.subspace='pca'"),
    (["--method", "mdas", "--set", "lr=-0.01"], "DASConfig.lr=-0.01: must be >= 0"),
    (["--method", "mdas", "--set", "patience=0"], "DASConfig.patience=0: must be >= 1"),
    (["--method", "das", "--set", "steps=ten"], "DASConfig.steps must be int, not str 'ten'"),
    (["--set", "dtype=float8"], "ModelConfig.dtype='float8'"),
    (["--set", "device=tpu"], "device 'tpu' is not available here"),
    (["--set", "foo"], "override 'foo' is not of the form key=value"),
    (["--set", "hyper_lr=.inf"], "HyperTrainConfig.lr=inf: must be a finite number >= 0"),
    (["--set", "fresh=true"], "override(s) fresh (use the --fresh flag): hyperdas-train --method hyperdas does not"),
    (["--set", "seeds=[0, 1]"], "override(s) seeds (the CLI trains one seed per run: --set seed=N)"),
    (["--set", "max_pairs=100"], "override(s) max_pairs: hyperdas-train --method hyperdas does not use them"),
    (["--set", "pairs_out=x"], "override(s) pairs_out: hyperdas-train"),
    (["--set", "das_attributes=[Country]"], "override(s) das_attributes: hyperdas-train"),
    (["--set", "steps=5"], "override(s) steps: hyperdas-train --method hyperdas"),  # notebook 02's
    (["--method", "mdas", "--set", "hyper_steps=5"], "override(s) hyper_steps: hyperdas-train --method mdas"),
]


@pytest.mark.parametrize("extra, message", BEFORE_LOADING, ids=[m[:40] for _, m in BEFORE_LOADING])
def test_cli_refuses_before_loading_a_model(extra, message, capsys, monkeypatch):
    import hyperdas.target.models as models

    monkeypatch.setattr(models, "load_target", lambda *a, **k: pytest.fail("a model was loaded"))
    assert main(["--config", "smoke", "--no-progress", *extra]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1, err


@NO_CUDA
def test_cuda_on_a_cpu_only_torch_is_refused_by_name(capsys):
    assert main(["--config", "smoke", "--set", "device=cuda"]) == 2
    assert "device 'cuda' is not available" in capsys.readouterr().err


def test_an_unknown_profile_and_a_profile_with_a_typo(tmp_path, capsys):
    assert main(["--config", "nope"]) == 2
    assert "no profile 'nope'" in capsys.readouterr().err
    profile = tmp_path / "mine.yaml"
    profile.write_text("model: synthetic-llama\nhyper_stepz: 3\n")
    assert main(["--config", str(profile)]) == 2
    assert "unknown parameter(s) hyper_stepz" in capsys.readouterr().err


@pytest.fixture(scope="module")
def pairs_folder(synthetic_pairs, tmp_path_factory):
    pairs = synthetic_pairs(max_pairs={"train": 20, "val": 6, "test": 6})
    return save_pairs(pairs, tmp_path_factory.mktemp("pairs") / "pairs", {})


AFTER_LOADING = [
    (["--set", "layer=999"], "layer 999"),
    (["--set", "k=100000", "--method", "mdas"], "k=100000 exceeds the hidden size"),
    (["--set", "pairs_in=/nonexistent/pairs"], "/nonexistent/pairs"),
]


@pytest.mark.parametrize("extra, message", AFTER_LOADING, ids=[m for _, m in AFTER_LOADING])
def test_cli_names_what_shows_once_the_model_is_loaded(extra, message, pairs_folder, tmp_path, capsys):
    args = ["--config", "smoke", "--results", str(tmp_path), "--no-progress", "--set", f"pairs_in={pairs_folder}"]
    assert main(args + extra) == 2
    err = capsys.readouterr().err  # transformers' loading bar may come first
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and message in errors[0] and "Traceback" not in err, err


def test_debug_shows_the_traceback():
    with pytest.raises(ConfigError, match="must be >= 0"):
        main(["--config", "smoke", "--set", "hyper_lr=-1", "--debug"])


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["--set", "hyper_lr=-1"], "HyperTrainConfig.lr=-1: must be >= 0"),
        (["--set", "hyper_stepz=3"], "unknown override(s) hyper_stepz"),
        (["--set", "k=abc"], "HyperDASConfig.k must be int"),
        (["--set", "n_conflict=-5"], "parameter n_conflict=-5: must be >= 1"),
        (["--set", "max_pairs=abc"], "parameter max_pairs='abc': must be dict like the notebook's default"),
        (["--set", "sweep_layers=abc"], "parameter sweep_layers='abc': must be list"),
        (["--set", "sweep_layers=[1, x]"], "parameter sweep_layers=[1, 'x']: must be a list of integers"),
        (["--set", "generation=1"], "parameter generation=1: must be bool"),
        (["--set", "hyper_lr=.inf"], "HyperTrainConfig.lr=inf: must be a finite number >= 0"),
    ],
)
def test_batch_runner_refuses_before_the_first_notebook(overrides, message, tmp_path, capsys):
    assert batch.main(["--profile", "smoke", "--results", str(tmp_path), *overrides]) == 2
    assert message in capsys.readouterr().err
    assert not list(tmp_path.iterdir())  # nothing ran, nothing was written


def test_a_chain_without_notebook_01_refuses_domains_its_pairs_were_not_built_for(tmp_path, capsys):
    model_dir = tmp_path / "synthetic-llama"
    model_dir.mkdir()
    (model_dir / "data_summary.json").write_text(json.dumps({"config": {"attributes": {"city": ["Country"]}}}))
    profile = tmp_path / "verb.yaml"  # a profile (not an override: 02 and 03 declare no `attributes`)
    profile.write_text((profiles.CONFIGS / "smoke.yaml").read_text() + "\nattributes: {verb: [Past Tense]}\n")
    assert batch.main(["--profile", str(profile), "--results", str(tmp_path), "--notebooks", "02", "03"]) == 2
    err = capsys.readouterr().err
    assert "names verb/Past Tense, which the pairs in" in err and "(notebook 01 built city)" in err
    assert [p.name for p in model_dir.iterdir()] == ["data_summary.json"]  # nothing ran
    profile.write_text((profiles.CONFIGS / "smoke.yaml").read_text() + "\nattributes: {city: [Country]}\n")
    assert profiles.check_built_pairs(profiles.load_profile(str(profile)), tmp_path, profiles.chain(["02"])) is None


def test_notebooks_build_their_configs_through_the_same_checks():
    with pytest.raises(ConfigError, match="HyperTrainConfig.lr=-0.1: must be >= 0"):
        P.hyperdas_configs({"hyper_lr": -0.1})
    with pytest.raises(ConfigError, match="DASConfig.max_val_pairs=0: must be >= 1"):
        P.das_config({"max_val_pairs": 0})


def test_a_malformed_profile_names_its_file_and_line(tmp_path, capsys):
    profile = tmp_path / "broken.yaml"
    profile.write_text("model: synthetic-llama\nk: [8\nlayer: 0\n")
    assert main(["--config", str(profile)]) == 2
    err = capsys.readouterr().err
    assert "broken.yaml line" in err and "is not valid YAML" in err and err.count("\n") == 1, err


@pytest.mark.parametrize(
    "content, message",
    [
        (b"model: synthetic-llama\nk: 8\nlayer: 0\nk: 16\n", "line 4 gives 'k' a second time: keep one of them"),
        ("model: synthetic-llama\nnote: caf\u00e9\n".encode("latin-1"), "is not UTF-8 text (byte 32): save it"),
    ],
)
def test_a_profile_with_a_repeated_key_or_another_encoding_is_named(content, message, tmp_path, capsys):
    profile = tmp_path / "odd.yaml"
    profile.write_bytes(content)
    assert main(["--config", str(profile)]) == 2
    assert batch.main(["--profile", str(profile), "--results", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert err.count(message) == 2 and err.count("\n") == 2, err


def test_resume_and_already_done_reuse_a_checkpoint_only_for_what_built_it(
    synthetic_target, synthetic_pairs, tmp_path, monkeypatch
):
    from hyperdas.core.errors import CheckpointError
    from hyperdas.das.training import DASConfig, train_das

    config = DASConfig(method="mdas", layer=0, k=4, steps=2, eval_every=2)
    pairs = synthetic_pairs(max_pairs={"train": 16, "val": 4, "test": 4})
    first = train_das(synthetic_target, pairs, config, checkpoint_dir=tmp_path, progress=False)
    again = train_das(synthetic_target, pairs, config, checkpoint_dir=tmp_path, progress=False)
    assert again.history == first.history  # already done: reused
    other_pairs = synthetic_pairs(max_pairs={"train": 20, "val": 4, "test": 4})
    with pytest.raises(CheckpointError, match=r"trained on other pairs: rerun with --fresh"):
        train_das(synthetic_target, other_pairs, config, checkpoint_dir=tmp_path, progress=False)
    monkeypatch.setattr(synthetic_target, "_weights_sha256", "another model's weights", raising=False)
    with pytest.raises(CheckpointError, match=r"trained on another model"):
        train_das(synthetic_target, pairs, config, checkpoint_dir=tmp_path, progress=False)
    fresh = train_das(synthetic_target, other_pairs, config, checkpoint_dir=tmp_path, progress=False, resume=False)
    assert fresh.resumed_from == 0


def test_cli_refuses_a_checkpoint_of_other_pairs_until_fresh(synthetic_pairs, tmp_path, capsys):
    base = ["--config", "smoke", "--results", str(tmp_path), "--no-progress", "--set", "hyper_steps=2"]
    base += ["--set", "hyper_eval_every=2", "--set", "n_blocks=1", "--set", "k=4"]
    for n, size in enumerate((20, 24)):
        folder = save_pairs(synthetic_pairs(max_pairs={"train": size, "val": 4, "test": 4}), tmp_path / f"p{n}", {})
        code = main([*base, "--set", f"pairs_in={folder}"])
    assert code == 2 and "trained on other pairs: rerun with --fresh" in capsys.readouterr().err
    assert main([*base, "--set", f"pairs_in={folder}", "--fresh"]) == 0
    # 4 test pairs hold no conflict pair: training still succeeds, and says what is missing
    assert "warning: no faithfulness scores: cannot build a conflict set" in capsys.readouterr().err


def test_pairs_built_for_another_tokenizer_are_refused(synthetic_pairs, synthetic_target, tiny_llama, tmp_path):
    from hyperdas.data.dataset import load_pairs
    from hyperdas.data.ravel import RavelDataError

    pairs = synthetic_pairs(max_pairs={"train": 8, "val": 4, "test": 4})
    folder = save_pairs(pairs, tmp_path / "pairs", {"model": "synthetic-llama"}, tokenizer=synthetic_target.tokenizer)
    assert len(load_pairs(folder, tokenizer=synthetic_target.tokenizer)["train"]) == len(pairs["train"])
    with pytest.raises(RavelDataError, match="built with the tokenizer of synthetic-llama.*build pairs for it"):
        load_pairs(folder, tokenizer=tiny_llama.tokenizer)


def test_a_truncated_pairs_file_is_named(synthetic_pairs, tmp_path):
    from hyperdas.data.dataset import load_pairs
    from hyperdas.data.ravel import RavelDataError

    folder = save_pairs(synthetic_pairs(max_pairs={"train": 8, "val": 4, "test": 4}), tmp_path / "pairs", {})
    arrow = next((folder / "train").glob("*.arrow"))
    arrow.write_bytes(arrow.read_bytes()[:100])
    with pytest.raises(RavelDataError, match=r"the pairs in .* cannot be read .*rebuild them with notebook 01"):
        load_pairs(folder)["train"][:]


def test_a_truncated_model_file_is_named(tiny_folders, tmp_path):
    import shutil

    from hyperdas.target.models import ModelLoadError, load_target

    folder = shutil.copytree(tiny_folders["llama"], tmp_path / "tiny")
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:64])
    with pytest.raises(ModelLoadError, match=r"the model folder .*tiny cannot be read .*check its files"):
        load_target(str(folder))


def test_a_broken_environment_is_not_blamed_on_the_model_folder(tiny_folders, monkeypatch):
    from transformers import AutoModelForCausalLM

    from hyperdas.target.models import ModelLoadError, load_target

    def broken(*args, **kwargs):
        raise ModuleNotFoundError("Could not import module 'LlamaConfig'. Are this object's requirements defined?")

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", broken)
    with pytest.raises(ModelLoadError, match=r"could not import .*LlamaConfig.*environment is broken.*make setup"):
        load_target(str(tiny_folders["llama"]))


def test_a_damaged_checkpoint_is_not_reported_as_done(pairs_folder, tmp_path, capsys):
    args = ["--config", "smoke", "--results", str(tmp_path), "--no-progress", "--set", f"pairs_in={pairs_folder}"]
    args += ["--set", "hyper_steps=2", "--set", "hyper_eval_every=2", "--set", "n_blocks=1", "--set", "k=4"]
    assert main(args) == 0
    weights = tmp_path / "synthetic-llama" / "checkpoints" / "hyperdas" / "hyperdas.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    capsys.readouterr()
    assert main(args) == 2
    assert "hyperdas.safetensors (100 bytes) cannot be read" in capsys.readouterr().err
    assert main([*args, "--fresh"]) == 0


def test_a_subspace_wider_than_the_model_is_one_line(pairs_folder, tmp_path, capsys):
    args = ["--config", "smoke", "--results", str(tmp_path), "--no-progress", "--set", f"pairs_in={pairs_folder}"]
    assert main([*args, "--set", "k=100000"]) == 2
    assert "k=100000 exceeds the hidden size" in capsys.readouterr().err
