"""Tiny randomly initialised decoders with a character tokenizer, for tests and smoke runs.

They are saved as ordinary HF folders, so loading them exercises the same path as any
user-named model folder. Built deterministically from a seed; no download.
"""

from __future__ import annotations

from pathlib import Path

import torch

from hyperdas.core.cache import cache_root, convert_once

SPECIALS = ("<pad>", "<s>", "</s>", "<unk>")
ARCHS = ("llama", "qwen2", "gemma", "gemma3")

# name -> architecture; built into the cache on first use
TEST_MODELS = {f"tiny-random-{arch}": arch for arch in ARCHS}


def char_tokenizer():
    """Printable-ASCII character tokenizer (any English prompt is representable)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {token: i for i, token in enumerate(SPECIALS)}
    for code in range(32, 127):
        vocab[chr(code)] = len(vocab)
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Split(pattern="", behavior="isolated")
    backend.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token="<pad>", bos_token="<s>", eos_token="</s>", unk_token="<unk>"
    )


def tiny_config(arch: str = "llama", n_layers: int = 4, hidden: int = 64, vocab_size: int = 128):
    from transformers import Gemma3TextConfig, GemmaConfig, LlamaConfig, Qwen2Config

    if arch not in ARCHS:
        raise ValueError(f"unknown tiny architecture {arch!r}; choose one of {ARCHS}")
    common = dict(
        vocab_size=vocab_size,
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=n_layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
        tie_word_embeddings=True,
    )
    if arch.startswith("gemma"):
        common["head_dim"] = hidden // 4
    if arch == "gemma3":  # local (sliding-window) and global attention blocks, as Gemma-3-270M has
        common.update(sliding_window=8, layer_types=["sliding_attention", "full_attention"] * (n_layers // 2))
    config_class = {"llama": LlamaConfig, "qwen2": Qwen2Config, "gemma": GemmaConfig, "gemma3": Gemma3TextConfig}[arch]
    return config_class(**common)


def make_tiny_model(folder: str | Path, arch: str = "llama", seed: int = 0, **config_kwargs) -> Path:
    """Save a seeded random tiny decoder + character tokenizer as a HF folder."""
    from transformers import AutoModelForCausalLM

    folder = Path(folder)
    tokenizer = char_tokenizer()
    config = tiny_config(arch, vocab_size=len(tokenizer), **config_kwargs)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def test_model_folder(name: str) -> Path:
    arch = TEST_MODELS[name]
    return convert_once(cache_root() / "models" / f"{name}-v1", lambda out: make_tiny_model(out, arch))
