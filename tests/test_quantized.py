"""4-bit (NF4, bf16 compute) target: gradients through it agree with the bf16 target's."""
import pytest
import torch

from hyperdas.hooks import edit_residual
from hyperdas.models import ModelLoadError, load_target


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
