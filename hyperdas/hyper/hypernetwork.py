"""The HyperDAS hypernetwork body: the target's first N decoder blocks, each given cross-attention
to the base and source hidden states.

A block reads the instruction tokens: self-attention (causal, rotary positions) -> cross-attention
to the source's states -> cross-attention to the base's states -> MLP, each pre-norm and residual.
Every weight is a copy of the target's (the cross-attentions start as copies of the block's
self-attention: separate storage, so training one never moves another), or freshly initialised
with ``init="scratch"``. A 4-bit target's linears are copied de-quantised (bf16), so the
hypernetwork trains in full precision while the frozen target stays in 4-bit. The attention
arithmetic is written here, from the copied projections, so it works for any Llama / Qwen2 /
Gemma-style block (q/k/v/o projections, two norms, an MLP).
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from hyperdas.core.errors import HyperDASError
from hyperdas.hyper.selection import rotate_half


class StructureError(HyperDASError, TypeError):
    """A target whose decoder blocks lack the parts the hypernetwork copies."""


_BLOCK_PARTS = ("input_layernorm", "post_attention_layernorm", "mlp", "self_attn")
_ATTN_PARTS = ("q_proj", "k_proj", "v_proj", "o_proj")


def check_block(block: nn.Module, index: int = 0) -> None:
    missing = [p for p in _BLOCK_PARTS if not hasattr(block, p)]
    missing += [
        f"self_attn.{p}" for p in _ATTN_PARTS if hasattr(block, "self_attn") and not hasattr(block.self_attn, p)
    ]
    if missing:
        raise StructureError(
            f"decoder block {index} ({type(block).__name__}) lacks {missing}: the hypernetwork "
            f"copies Llama / Qwen2 / Gemma-style blocks"
        )


def _parameters(module: nn.Module) -> list[str]:
    import inspect

    return list(inspect.signature(module.forward).parameters)


def _is_4bit(module: nn.Module) -> bool:
    return isinstance(module, nn.Linear) and getattr(module.weight, "quant_state", None) is not None


def _dequantized(linear: nn.Linear) -> nn.Linear:
    """A plain, trainable nn.Linear with a bitsandbytes 4-bit linear's weights de-quantised (in its
    compute dtype, bf16 for the 4-bit profiles)."""
    from bitsandbytes.functional import dequantize_4bit

    weight = dequantize_4bit(linear.weight.data, linear.weight.quant_state)
    plain = nn.Linear(
        linear.in_features, linear.out_features, bias=linear.bias is not None, dtype=weight.dtype, device=weight.device
    )
    with torch.no_grad():
        plain.weight.copy_(weight.reshape(plain.weight.shape))
        if linear.bias is not None:
            plain.bias.copy_(linear.bias.to(weight.dtype))
    return plain


def trainable_copy(module: nn.Module) -> nn.Module:
    """A separate copy of a target module that can be trained: 4-bit linears of a quantised target
    become plain linears with the de-quantised weights; everything else is deep-copied."""
    if _is_4bit(module):
        return _dequantized(module)
    copied = copy.deepcopy(module)
    for name, child in list(copied.named_modules()):
        if name and _is_4bit(child):
            parent, _, leaf = name.rpartition(".")
            setattr(copied.get_submodule(parent) if parent else copied, leaf, _dequantized(child))
    return copied


class Attention(nn.Module):
    """(Grouped-query) multi-head attention built from copies of a target block's projections."""

    def __init__(self, attn: nn.Module, n_heads: int, n_kv_heads: int):
        super().__init__()
        for name in _ATTN_PARTS:
            setattr(self, name, trainable_copy(getattr(attn, name)))
        self.n_heads, self.n_kv_heads = n_heads, n_kv_heads
        self.head_dim = self.q_proj.out_features // n_heads
        self.scaling = getattr(attn, "scaling", self.head_dim**-0.5)
        # Gemma 3 normalises each head's queries and keys before the rotation
        self.q_norm = trainable_copy(attn.q_norm) if hasattr(attn, "q_norm") else None
        self.k_norm = trainable_copy(attn.k_norm) if hasattr(attn, "k_norm") else None

    def _keys_values(self, kv: torch.Tensor, kv_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """k/v projections of the allowed positions only (masked ones stay 0, never attended): the
        cross-attended states are mostly padding past each row's entity, and these projections
        over every layer's states are most of the hypernetwork's cost."""
        keep = kv_mask.reshape(-1)
        if bool(keep.all()):
            return self.k_proj(kv), self.v_proj(kv)
        rows = keep.nonzero().squeeze(1)
        flat = kv.reshape(-1, kv.shape[-1]).index_select(0, rows)
        out = []
        for proj in (self.k_proj, self.v_proj):
            values = proj(flat)
            full = values.new_zeros(keep.shape[0], values.shape[-1]).index_copy(0, rows, values)
            out.append(full.view(*kv.shape[:2], -1))
        return out[0], out[1]

    def forward(
        self,
        x: torch.Tensor,
        kv: torch.Tensor,
        kv_mask: torch.Tensor,
        rope: tuple[torch.Tensor, torch.Tensor] | None = None,
        causal: bool = False,
        kv_rope: tuple[torch.Tensor, torch.Tensor] | None = None,
        window: int | None = None,
    ) -> torch.Tensor:
        """x (B, T, D) attends to kv (B, S, D); kv_mask (B, S) is True where attending is allowed.
        `rope`: (cos, sin) at x's positions, for the queries and (self-attention) the keys;
        `kv_rope`: the keys' own (cross-attention with key positions)."""
        B, T, _ = x.shape
        S = kv.shape[1]
        q = self.q_proj(x).view(B, T, self.n_heads, self.head_dim).transpose(1, 2)
        k, v = self._keys_values(kv, kv_mask)
        k = k.view(B, S, self.n_kv_heads, self.head_dim).transpose(1, 2)
        v = v.view(B, S, self.n_kv_heads, self.head_dim).transpose(1, 2)
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        if rope is not None:
            cos, sin = (t.unsqueeze(1) for t in rope)
            q = q * cos + rotate_half(q) * sin
            if kv_rope is not None:
                cos, sin = (t.unsqueeze(1) for t in kv_rope)
            k = k * cos + rotate_half(k) * sin
        mask = kv_mask[:, None, None, :].expand(B, 1, T, S)
        if causal:
            mask = mask & torch.ones(T, S, dtype=torch.bool, device=x.device).tril()
            if window is not None:  # a sliding-window block (Gemma 3's local layers)
                mask = mask & torch.ones(T, S, dtype=torch.bool, device=x.device).triu(-(window - 1))
        # grouped-query heads shared inside the kernel: repeating k/v over ~30 layers' states
        # cost about 0.07 s of a SmolLM2 step (copies forward, sums backward)
        out = nn.functional.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, scale=self.scaling, enable_gqa=self.n_kv_heads != self.n_heads
        )
        return self.o_proj(out.transpose(1, 2).reshape(B, T, -1))


class HyperBlock(nn.Module):
    """Self-attention over the instruction, then source and base cross-attention, then the MLP."""

    def __init__(
        self,
        block: nn.Module,
        n_heads: int,
        n_kv_heads: int,
        source_ca: bool = True,
        base_ca: bool = True,
        tie_attention: bool = False,
    ):
        super().__init__()
        self.self_norm = trainable_copy(block.input_layernorm)
        self.self_attn = Attention(block.self_attn, n_heads, n_kv_heads)

        def cross() -> Attention:  # tied (the official code's aliasing): the self-attention's projections
            return self.self_attn if tie_attention else Attention(block.self_attn, n_heads, n_kv_heads)

        self.source_ca = cross() if source_ca else None
        self.source_norm = trainable_copy(block.input_layernorm) if source_ca else None
        self.base_ca = cross() if base_ca else None
        self.base_norm = trainable_copy(block.input_layernorm) if base_ca else None
        # Gemma 2/3 blocks are sandwiched: a norm before and after each sub-layer
        sandwich = hasattr(block, "pre_feedforward_layernorm")
        self.mlp_norm = trainable_copy(block.pre_feedforward_layernorm if sandwich else block.post_attention_layernorm)
        self.mlp = trainable_copy(block.mlp)

        def after(name: str, present: bool = True) -> nn.Module | None:
            return trainable_copy(getattr(block, name)) if sandwich and present else None

        self.self_after, self.mlp_after = after("post_attention_layernorm"), after("post_feedforward_layernorm")
        # the cross-attentions are copies of the self-attention: each gets its own post-norm copy too
        self.source_after = after("post_attention_layernorm", source_ca)
        self.base_after = after("post_attention_layernorm", base_ca)
        self.window = getattr(block.self_attn, "sliding_window", None)

    def forward(self, x, mask, rope, source, source_mask, base, base_mask, kv_ropes=None):
        """`kv_ropes`: (source, base) key rotations when the cross-attentions use positions."""
        h = self.self_norm(x)
        x = x + _then(self.self_after, self.self_attn(h, h, mask, rope=rope, causal=True, window=self.window))
        source_rope, base_rope = kv_ropes if kv_ropes is not None else (None, None)
        if self.source_ca is not None:
            ca_rope = rope if source_rope is not None else None
            out = self.source_ca(self.source_norm(x), source, source_mask, rope=ca_rope, kv_rope=source_rope)
            x = x + _then(self.source_after, out)
        if self.base_ca is not None:
            ca_rope = rope if base_rope is not None else None
            x = x + _then(
                self.base_after, self.base_ca(self.base_norm(x), base, base_mask, rope=ca_rope, kv_rope=base_rope)
            )
        return x + _then(self.mlp_after, self.mlp(self.mlp_norm(x)))


def _then(norm: nn.Module | None, x: torch.Tensor) -> torch.Tensor:
    return x if norm is None else norm(x)


INITS = ("target", "scratch")


class HyperNetwork(nn.Module):
    """Instruction encoder: the target's embeddings and first `n_blocks` blocks (copies) with
    cross-attention to source and base states; returns the last instruction token's state z.
    `positions`: the cross-attention keys get rotary positions over the flattened (token, layer)
    axis, counting allowed keys only, and the queries their instruction positions (official)."""

    def __init__(
        self,
        target,
        n_blocks: int,
        source_ca: bool = True,
        base_ca: bool = True,
        init: str = "target",
        positions: bool = False,
        tie_attention: bool = False,
    ):
        super().__init__()
        self.positions = positions
        if init not in INITS:
            raise ValueError(f"unknown hypernetwork init {init!r}; use one of {INITS}")
        layers = target.layers
        if not 0 <= n_blocks <= len(layers):
            raise ValueError(f"n_blocks={n_blocks}: the target has {len(layers)} decoder blocks to copy")
        for i, block in enumerate(layers[:n_blocks]):
            check_block(block, i)
        config = target.model.config
        inner = target.model.get_decoder()
        if not hasattr(inner, "rotary_emb") or not hasattr(inner, "norm"):
            raise StructureError(
                f"{type(inner).__name__} lacks rotary_emb / norm: not a Llama / Qwen2 / Gemma-style model"
            )
        n_heads = config.num_attention_heads
        n_kv = getattr(config, "num_key_value_heads", None) or n_heads
        self.embed = copy.deepcopy(target.model.get_input_embeddings())
        # Gemma scales its embeddings by sqrt(hidden size): inside the embedding module in recent
        # transformers, in the model's forward in older ones (plain nn.Embedding); do the same
        gemma_plain = config.model_type.startswith("gemma") and type(self.embed) is nn.Embedding
        self.embed_scale = config.hidden_size**0.5 if gemma_plain else 1.0
        self.rotary = copy.deepcopy(inner.rotary_emb)
        # Gemma 3 rotates its local and global blocks with different bases: one rotation per block type
        types = getattr(config, "layer_types", None)
        self.layer_types = list(types[:n_blocks]) if types and "layer_type" in _parameters(self.rotary) else None
        self.blocks = nn.ModuleList(
            HyperBlock(b, n_heads, n_kv, source_ca, base_ca, tie_attention) for b in layers[:n_blocks]
        )
        self.norm = copy.deepcopy(inner.norm)
        self.requires_grad_(True)
        if init == "scratch":
            self.apply(_reinitialise)

    def hidden(self, ids, mask, source=None, source_mask=None, base=None, base_mask=None) -> torch.Tensor:
        """(B, T, D) instruction states after the last block (before the final norm)."""
        x = self.embed(ids) * torch.tensor(self.embed_scale, dtype=self.embed.weight.dtype)
        positions = torch.arange(ids.shape[1], device=ids.device).expand(ids.shape[0], -1)
        mask = mask.bool()
        for i, block in enumerate(self.blocks):
            rotate = self._rotation(i)
            kv_ropes = None
            if self.positions:
                kv_ropes = tuple(
                    None if m is None else rotate(x, m.long().cumsum(1) * m.long()) for m in (source_mask, base_mask)
                )
            x = block(x, mask, rotate(x, positions), source, source_mask, base, base_mask, kv_ropes)
        return x

    def _rotation(self, block: int):
        if self.layer_types is None:
            return self.rotary
        return lambda x, positions: self.rotary(x, positions, self.layer_types[block])

    def forward(self, ids, mask, source, source_mask, base, base_mask) -> torch.Tensor:
        x = self.norm(self.hidden(ids, mask, source, source_mask, base, base_mask))
        last = mask.long().sum(dim=1) - 1  # right padding: the last real token
        return x[torch.arange(ids.shape[0], device=ids.device), last]


def _reinitialise(module: nn.Module) -> None:
    if isinstance(module, (nn.Linear, nn.Embedding)):
        nn.init.normal_(module.weight, std=0.02)
        if getattr(module, "bias", None) is not None:
            nn.init.zeros_(module.bias)
    elif hasattr(module, "weight") and isinstance(module.weight, nn.Parameter) and module.weight.dim() == 1:
        # norms: Gemma stores w with (1 + w) applied, so zeros; others ones
        nn.init.zeros_(module.weight) if "Gemma" in type(module).__name__ else nn.init.ones_(module.weight)
