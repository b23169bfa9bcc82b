import os

import pytest
import torch

from hyperdas.models import load_target
from hyperdas.tiny import make_tiny_model

torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(scope="session")
def tiny_folders(tmp_path_factory):
    """Tiny random Llama / Qwen2 / Gemma models saved as HF folders in a temp dir."""
    root = tmp_path_factory.mktemp("tiny-models")
    return {arch: make_tiny_model(root / arch, arch=arch, seed=0) for arch in ("llama", "qwen2", "gemma")}


@pytest.fixture(scope="session")
def tiny_llama(tiny_folders):
    return load_target(str(tiny_folders["llama"]))


@pytest.fixture()
def fresh_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HYPERDAS_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def assert_no_hooks(model: torch.nn.Module) -> None:
    for name, module in model.named_modules():
        assert not module._forward_hooks, f"{name} still has forward hooks"
        assert not module._forward_pre_hooks, f"{name} still has forward pre-hooks"
