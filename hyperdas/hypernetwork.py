"""The HyperDAS hypernetwork body: the target's first N decoder blocks, each given cross-attention
to the base and source hidden states.

A block reads the instruction tokens: self-attention (causal, rotary positions) -> cross-attention
to the source's states -> cross-attention to the base's states -> MLP, each pre-norm and residual.
Every weight is a copy of the target's (the cross-attentions start as copies of the block's
self-attention: separate storage, so training one never moves another), or freshly initialised
with ``init="scratch"``. The attention arithmetic is written here, from the copied projections,
so it works for any Llama / Qwen2 / Gemma-style block (q/k/v/o projections, two norms, an MLP).
"""
from __future__ import annotations

import copy

import torch
from torch import nn


class StructureError(TypeError):
    """A target whose decoder blocks lack the parts the hypernetwork copies."""


_BLOCK_PARTS = ("input_layernorm", "post_attention_layernorm", "mlp", "self_attn")
_ATTN_PARTS = ("q_proj", "k_proj", "v_proj", "o_proj")


def check_block(block: nn.Module, index: int = 0) -> None:
    missing = [p for p in _BLOCK_PARTS if not hasattr(block, p)]
    missing += [f"self_attn.{p}" for p in _ATTN_PARTS if hasattr(block, "self_attn") and not hasattr(block.self_attn, p)]
    if missing:
        raise StructureError(f"decoder block {index} ({type(block).__name__}) lacks {missing}: the hypernetwork "
                             f"copies Llama / Qwen2 / Gemma-style blocks")


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


class Attention(nn.Module):
    """(Grouped-query) multi-head attention built from copies of a target block's projections."""

    def __init__(self, attn: nn.Module, n_heads: int, n_kv_heads: int):
        super().__init__()
        for name in _ATTN_PARTS:
            setattr(self, name, copy.deepcopy(getattr(attn, name)))
        self.n_heads, self.n_kv_heads = n_heads, n_kv_heads
        self.head_dim = self.q_proj.out_features // n_heads
        self.scaling = getattr(attn, "scaling", self.head_dim ** -0.5)

    def forward(self, x: torch.Tensor, kv: torch.Tensor, kv_mask: torch.Tensor,
                rope: tuple[torch.Tensor, torch.Tensor] | None = None, causal: bool = False) -> torch.Tensor:
        """x (B, T, D) attends to kv (B, S, D); kv_mask (B, S) is True where attending is allowed."""
        B, T, _ = x.shape
        S = kv.shape[1]
        q = self.q_proj(x).view(B, T, self.n_heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(kv).view(B, S, self.n_kv_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(kv).view(B, S, self.n_kv_heads, self.head_dim).transpose(1, 2)
        if rope is not None:
            cos, sin = (t.unsqueeze(1) for t in rope)
            q, k = q * cos + _rotate_half(q) * sin, k * cos + _rotate_half(k) * sin
        if self.n_kv_heads != self.n_heads:
            k = k.repeat_interleave(self.n_heads // self.n_kv_heads, dim=1)
            v = v.repeat_interleave(self.n_heads // self.n_kv_heads, dim=1)
        mask = kv_mask[:, None, None, :].expand(B, 1, T, S)
        if causal:
            mask = mask & torch.ones(T, S, dtype=torch.bool, device=x.device).tril()
        out = nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=self.scaling)
        return self.o_proj(out.transpose(1, 2).reshape(B, T, -1))


class HyperBlock(nn.Module):
    """Self-attention over the instruction, then source and base cross-attention, then the MLP."""

    def __init__(self, block: nn.Module, n_heads: int, n_kv_heads: int, source_ca: bool = True, base_ca: bool = True):
        super().__init__()
        self.self_norm = copy.deepcopy(block.input_layernorm)
        self.self_attn = Attention(block.self_attn, n_heads, n_kv_heads)
        self.source_ca = Attention(block.self_attn, n_heads, n_kv_heads) if source_ca else None
        self.source_norm = copy.deepcopy(block.input_layernorm) if source_ca else None
        self.base_ca = Attention(block.self_attn, n_heads, n_kv_heads) if base_ca else None
        self.base_norm = copy.deepcopy(block.input_layernorm) if base_ca else None
        self.mlp_norm = copy.deepcopy(block.post_attention_layernorm)
        self.mlp = copy.deepcopy(block.mlp)

    def forward(self, x, mask, rope, source, source_mask, base, base_mask):
        h = self.self_norm(x)
        x = x + self.self_attn(h, h, mask, rope=rope, causal=True)
        if self.source_ca is not None:
            x = x + self.source_ca(self.source_norm(x), source, source_mask)
        if self.base_ca is not None:
            x = x + self.base_ca(self.base_norm(x), base, base_mask)
        return x + self.mlp(self.mlp_norm(x))
