"""4-bit (NF4, bf16 compute) target: gradients through it agree with the bf16 target's."""

import pytest
import torch

from hyperdas.target.hooks import edit_residual
from hyperdas.target.models import ModelLoadError, load_target


def _bnb_4bit_runs_here() -> str:
    try:
        import bitsandbytes  # noqa: F401
        from bitsandbytes.functional import dequantize_4bit, quantize_4bit

        weight = torch.randn(64, 64, dtype=torch.bfloat16)
        packed, state = quantize_4bit(weight, quant_type="nf4")
        dequantize_4bit(packed, state)
    except Exception as err:  # any failure means: no 4-bit on this machine's CPU
        return f"bitsandbytes 4-bit does not run on this CPU: {type(err).__name__}: {err}"
    return ""


SKIP = _bnb_4bit_runs_here()


def _input_side_gradient(target) -> torch.Tensor:
    """Gradient of the next-token loss w.r.t. a vector added to the residual stream after layer 0."""
    delta = torch.zeros(target.hidden_size, dtype=torch.float32, requires_grad=True)
    batch = target.tokenizer(["The capital of France is", "Rome is in"], return_tensors="pt", padding=True)
    labels = batch["input_ids"][:, 1:]
    with edit_residual(target, 0, lambda h: h + delta.to(h.dtype)):
        logits = target.model(**batch).logits[:, :-1].float()
    mask = batch["attention_mask"][:, 1:].bool()
    loss = torch.nn.functional.cross_entropy(logits[mask], labels[mask])
    loss.backward()
    return delta.grad


@pytest.mark.skipif(bool(SKIP), reason=SKIP or "runs")
def test_4bit_gradients_match_bf16(tiny_folders):
    folder = str(tiny_folders["llama"])
    reference = _input_side_gradient(load_target(folder, dtype="bfloat16"))
    quantized_target = load_target(folder, load_in_4bit=True)
    assert type(quantized_target.model.model.layers[0].mlp.up_proj).__name__ == "Linear4bit"
    assert not quantized_target.model.training
    quantized = _input_side_gradient(quantized_target)
    cosine = torch.nn.functional.cosine_similarity(reference, quantized, dim=0)
    relative = (reference - quantized).norm() / reference.norm()
    # NF4 rounds every weight; the gradient direction survives, its size within ~25%.
    assert cosine > 0.95, cosine
    assert relative < 0.35, relative


def test_4bit_without_bitsandbytes_says_how_to_install(tiny_folders, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_bnb(name, *args, **kwargs):
        if name == "bitsandbytes":
            raise ImportError("no bitsandbytes")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_bnb)
    with pytest.raises(ModelLoadError, match=r"needs bitsandbytes: pip install 'hyperdas\[quant\]'"):
        load_target(str(tiny_folders["llama"]), load_in_4bit=True)


@pytest.fixture(scope="module")
def quantized_pairs(synthetic_pairs):

    return synthetic_pairs(max_pairs={"train": 40, "val": 8, "test": 8})


@pytest.mark.skipif(bool(SKIP), reason=SKIP or "runs")
def test_4bit_on_a_device_bitsandbytes_cannot_serve_is_refused(tiny_folders, monkeypatch):
    import bitsandbytes.functional

    def no_kernel(*args, **kwargs):
        raise NotImplementedError("no kernel for this device\nmore detail")

    monkeypatch.setattr(bitsandbytes.functional, "quantize_4bit", no_kernel)
    with pytest.raises(
        ModelLoadError, match=r"cannot quantize on device 'cpu' \(no kernel for this device\).*load_in_4bit=False"
    ):
        load_target(str(tiny_folders["llama"]), load_in_4bit=True)


def test_hyperdas_gradients_through_a_4bit_target_match_bf16(quantized_pairs):
    from hyperdas.hyper.model import HyperDAS, HyperDASConfig
    from hyperdas.hyper.training import HyperTrainConfig, encoded_pairs, example_weights, make_optimizer, train_step

    bf16, quantized = (
        load_target("synthetic-llama", dtype="bfloat16"),
        load_target("synthetic-llama", load_in_4bit=True),
    )
    with torch.no_grad():  # an eval-mode pass without gradients first: bitsandbytes' CPU repacking must stay off
        quantized.model(**quantized.tokenizer(["Dune Arvel is a city in"], return_tensors="pt"))
    enc = encoded_pairs(bf16, quantized_pairs["train"])
    frozen = HyperTrainConfig(batch_size=8, lr=0.0, lr_rotation=0.0, clip=1e9)  # gradients only, no update
    torch.manual_seed(0)
    model = HyperDAS(bf16, HyperDASConfig(layer=0, k=8, n_blocks=1, selection_heads=4)).train()
    grads = []
    for target in (bf16, quantized):  # the same hypernetwork, read through either target
        train_step(
            target, model, enc, list(range(8)), example_weights(enc, frozen), make_optimizer(model, frozen), frozen, 1
        )
        grads.append(torch.cat([p.grad.float().flatten() for p in model.parameters() if p.grad is not None]))
    cosine = torch.nn.functional.cosine_similarity(grads[0], grads[1], dim=0)
    relative = (grads[0] - grads[1]).norm() / grads[0].norm()
    # measured: cosine 0.993, relative difference 0.12 (NF4 rounds every weight of the target)
    assert cosine > 0.95, cosine
    assert relative < 0.35, relative


@pytest.mark.skipif(bool(SKIP), reason=SKIP or "runs")
def test_hyperdas_trains_with_a_4bit_target_and_a_full_precision_hypernetwork(quantized_pairs):
    from hyperdas.hyper.model import HyperDAS, HyperDASConfig
    from hyperdas.hyper.training import HyperTrainConfig, encoded_pairs, example_weights, make_optimizer, train_step

    quantized = load_target("synthetic-llama", load_in_4bit=True)
    enc = encoded_pairs(quantized, quantized_pairs["train"])
    train = HyperTrainConfig(batch_size=8, lr=1e-3, lr_rotation=1e-2)
    torch.manual_seed(0)
    model = HyperDAS(quantized, HyperDASConfig(layer=0, k=8, n_blocks=1, selection_heads=4)).train()
    assert all(p.is_floating_point() and p.requires_grad for p in model.parameters())  # de-quantised copies
    assert not any(type(m).__name__ == "Linear4bit" for m in model.modules())
    optimizer, weights = make_optimizer(model, train), example_weights(enc, train)
    losses = [
        train_step(quantized, model, enc, list(range(8)), weights, optimizer, train, 1)["loss"] for _ in range(12)
    ]
    assert min(losses[-3:]) < 0.85 * losses[0], losses  # measured: 8.06 -> 5.5


@pytest.mark.skipif(bool(SKIP), reason=SKIP or "runs")
def test_memory_estimate_counts_a_4bit_targets_copied_blocks_de_quantised(tiny_folders):
    from hyperdas.hyper.model import HyperDAS, HyperDASConfig
    from hyperdas.target import memory

    quantized = load_target(str(tiny_folders["llama"]), load_in_4bit=True)
    config = HyperDASConfig(layer=1, k=4, n_blocks=2, selection_heads=4)
    built = sum(p.numel() for p in HyperDAS(quantized, config).parameters())
    assert memory.hypernetwork_parameters(quantized, config) == built
