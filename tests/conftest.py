import os

import pytest
import torch

from hyperdas.target.models import load_target
from hyperdas.target.tiny import make_tiny_model

torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(scope="session")
def tiny_folders(tmp_path_factory):
    """Tiny random Llama / Qwen2 / Gemma models saved as HF folders in a temp dir."""
    root = tmp_path_factory.mktemp("tiny-models")
    return {arch: make_tiny_model(root / arch, arch=arch, seed=0) for arch in ("llama", "qwen2", "gemma", "gemma3")}


@pytest.fixture(scope="session")
def tiny_llama(tiny_folders):
    target = load_target(str(tiny_folders["llama"]))
    # transformers installs its own (permanent) capture hooks on first use of output_hidden_states;
    # install them now so tests see a stable set of foreign hooks
    with torch.no_grad():
        target.model(**target.tokenizer(["warm up"], return_tensors="pt"), output_hidden_states=True)
    return target


@pytest.fixture()
def fresh_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HYPERDAS_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def hook_ids(model: torch.nn.Module) -> set:
    """Every forward (pre-)hook registered anywhere in `model`."""
    found = set()
    for name, module in model.named_modules():
        found |= {(name, "forward", key) for key in module._forward_hooks}
        found |= {(name, "pre", key) for key in module._forward_pre_hooks}
    return found


@pytest.fixture(scope="session")
def synthetic_target():
    """The tiny Llama trained on the synthetic RAVEL world (built into the cache once)."""
    return load_target("synthetic-llama")


@pytest.fixture(scope="session")
def synthetic_data():
    from hyperdas.data.ravel import load_domain

    return load_domain("city", "synthetic")


@pytest.fixture(scope="session")
def synthetic_known(synthetic_target, synthetic_data):
    """Every template on every entity of the synthetic world, query-blind ones too (about 2 s)."""
    from hyperdas.data.filter import FilterConfig, filter_domain

    config = FilterConfig(templates_per_attribute=None, max_entities=None, query_blind_entities=10**6)
    return filter_domain(synthetic_target, synthetic_data, config, progress=False)


@pytest.fixture()
def interrupt():
    """interrupt(monkeypatch, module, name, n): make module.name raise KeyboardInterrupt on its n-th
    call (a run killed mid-training); returns a function that puts the real one back."""

    def install(monkeypatch, module, name, n):
        real, calls = getattr(module, name), {"n": 0}

        def dies(*args, **kwargs):
            calls["n"] += 1
            if calls["n"] == n:
                raise KeyboardInterrupt
            return real(*args, **kwargs)

        monkeypatch.setattr(module, name, dies)
        return lambda: monkeypatch.setattr(module, name, real)

    return install


@pytest.fixture(scope="session")
def synthetic_pairs(synthetic_data, synthetic_known, synthetic_target):
    """synthetic_pairs(**PairConfig fields): base/source pairs of the synthetic world."""
    from hyperdas.data.pairs import PairConfig, build_pairs

    def build(**fields):
        return build_pairs(synthetic_data, synthetic_known, synthetic_target.tokenizer, PairConfig(**fields))

    return build
