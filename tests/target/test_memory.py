"""The memory estimate printed before HyperDAS training: exact parameter counts, sensible scaling,
and a clear refusal when the device cannot hold the run."""

import pytest

from hyperdas.hyper.model import HyperDAS, HyperDASConfig
from hyperdas.target import memory


@pytest.mark.parametrize("arch", ["llama", "qwen2", "gemma"])
@pytest.mark.parametrize(
    "config",
    [
        HyperDASConfig(layer=1, k=4, n_blocks=2, selection_heads=4),
        HyperDASConfig(layer=1, k=4, n_blocks=1, selection_heads=4, subspace="mask", source_ca=False),
        HyperDASConfig(layer=1, k=4, n_blocks=0, selection_heads=4, subspace="none"),
    ],
    ids=["householder", "mask-no-source-ca", "none-N0"],
)
def test_parameter_count_is_exact_without_building(tiny_folders, arch, config):
    from hyperdas.target.models import load_target

    target = load_target(str(tiny_folders[arch]))
    built = sum(p.numel() for p in HyperDAS(target, config).parameters())
    assert memory.hypernetwork_parameters(target, config) == built


def test_estimate_scales_with_the_batch_and_refuses_what_cannot_fit(tiny_llama):
    config = HyperDASConfig(layer=1, k=4, n_blocks=2, selection_heads=4)
    small = memory.estimate(tiny_llama, config, 4, 20, 20)
    large = memory.estimate(tiny_llama, config, 64, 20, 20)
    assert 0 < small.added < large.added and large.hypernetwork == small.hypernetwork
    assert small.in_use > 0 and "GiB" in small.describe()
    last = memory.estimate(tiny_llama, config.replace(layer=-1), 4, 20, 20)  # negative layers count from the top
    assert last.edited_pass < small.edited_pass
    memory.check_fits(large, free=10 * large.added)
    with pytest.raises(MemoryError, match=r"needs about .* GiB more .* lower hyper_batch_size"):
        memory.check_fits(large, free=large.added // 2)


def test_checkpointing_lowers_the_edited_pass_estimate(tiny_llama):
    config = HyperDASConfig(layer=0, k=4, n_blocks=1, selection_heads=4)
    plain = memory.estimate(tiny_llama, config, 16, 20, 20)
    saved = memory.estimate(tiny_llama, config, 16, 20, 20, checkpoint_target=True)
    assert saved.edited_pass < plain.edited_pass and saved.hypernetwork == plain.hypernetwork


def test_allocator_overhead_follows_the_device_type():
    """CPU and CUDA allocators were calibrated apart (hyperdas/memory.py); an unknown type takes the CPU's."""
    parts = dict(
        in_use=1000,
        target_weights=500,
        hypernetwork=700,
        read_states=100,
        hypernetwork_activations=100,
        edited_pass=100,
    )
    for device, (state, activations) in (("cpu", (1.3, 1.3)), ("cuda:0", (1.0, 1.1)), ("mps", (1.3, 1.3))):
        found = memory.MemoryEstimate(device=device, **parts)
        assert found.added == int(700 * state + 300 * activations) and found.total == 1000 + found.added
        assert f"x{state} on the hypernetwork, x{activations} on the activations" in found.describe()


def test_das_training_is_checked_too(synthetic_target, synthetic_pairs, monkeypatch):
    from hyperdas.core.errors import ResourceError
    from hyperdas.das.training import DASConfig, train_das

    small = memory.estimate_das(synthetic_target, 0, 4, batch_size=4, base_tokens=10, source_tokens=10)
    large = memory.estimate_das(synthetic_target, 0, 4, batch_size=8, base_tokens=10, source_tokens=10)
    assert (
        0 < small.activations < large.activations
        and small.hypernetwork == large.hypernetwork == 4 * synthetic_target.hidden_size * 4 * 4
    )
    monkeypatch.setattr(memory, "available", lambda device: 1024)
    pairs = synthetic_pairs(max_pairs={"train": 16, "val": 4, "test": 4})
    with pytest.raises(ResourceError, match=r"DAS/MDAS training needs about .* GiB more .*lower batch_size"):
        train_das(synthetic_target, pairs, DASConfig(method="mdas", layer=0, k=4, steps=1), progress=False)
