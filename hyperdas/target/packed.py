"""Rows packed into one sequence without padding, for the edited run that starts from stored states.

On a CPU a padded token costs as much as a real one, and about a third of a training batch is
padding. Packed, the projections and MLPs see only real tokens. Attention is the exception: over
one packed sequence it would cost (sum of lengths)^2 and need a block mask, so the target's
attention runs row by row instead: its queries, keys and values are scattered into a right-padded
batch, attended causally (`scaled_dot_product_attention`), and gathered back (`_rows_attention`).

The row layout travels as a keyword argument through transformers' decoder to each attention
call, so a block recomputed in backward (`hooks.checkpointed`) sees it too. The target's attention
implementation is switched once, for good, to `ROWS`, which behaves as "sdpa" in every call that
does not carry a layout (its masks are sdpa's).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

ROWS = "hyperdas_rows"  # sdpa, or row by row when the call carries a `RowLayout`
LAYOUT_KWARG = "hyperdas_rows"


@dataclass(frozen=True)
class RowLayout:
    """Where each packed position sits in a right-padded (rows, width) batch."""

    flat: torch.Tensor  # (n_tokens,) row * width + position
    rows: int
    width: int

    @classmethod
    def of(cls, lengths: list[int], device) -> RowLayout:
        width = max(lengths)
        flat = torch.cat([torch.arange(n) + r * width for r, n in enumerate(lengths)])
        return cls(flat.to(device), len(lengths), width)

    def padded(self, x: torch.Tensor) -> torch.Tensor:
        """(1, heads, n_tokens, d) packed -> (rows, heads, width, d) right-padded with zeros."""
        heads, dim = x.shape[1], x.shape[3]
        out = x.new_zeros(self.rows * self.width, heads, dim).index_copy(0, self.flat, x[0].transpose(0, 1))
        return out.view(self.rows, self.width, heads, dim).transpose(1, 2)


def _causal_window(width: int, window: int, device) -> torch.Tensor:
    i = torch.arange(width, device=device)
    return ((i[None, :] <= i[:, None]) & (i[:, None] - i[None, :] < window))[None, None]


def _rows_attention(module, query, key, value, attention_mask, dropout=0.0, scaling=None, **kwargs):
    layout = kwargs.pop(LAYOUT_KWARG, None)
    if layout is None:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout, scaling, **kwargs)
    window = kwargs.pop("sliding_window", None)
    # right padding: a causal row never sees the pads after it; a sliding window shorter than the
    # widest row needs its band spelled out
    mask = _causal_window(layout.width, window, query.device) if window and window < layout.width else None
    out, _ = sdpa_attention_forward(
        module,
        layout.padded(query),
        layout.padded(key),
        layout.padded(value),
        mask,
        dropout,
        scaling,
        is_causal=mask is None,
        **kwargs,
    )  # (rows, width, heads, d)
    return out.reshape(layout.rows * layout.width, *out.shape[2:]).index_select(0, layout.flat)[None], None


AttentionInterface.register(ROWS, _rows_attention)
AttentionMaskInterface.register(ROWS, sdpa_mask)


def _configs(model) -> list:
    seen = {}
    for module in model.modules():
        config = getattr(module, "config", None)
        if config is not None and hasattr(config, "_attn_implementation"):
            seen[id(config)] = config
    return list(seen.values())


def can_pack(model) -> bool:
    """True when the rows of `model` can run packed: its attention is sdpa (or already `ROWS`) with
    no logit soft-capping (which sdpa lacks); otherwise callers keep the padded batch."""
    configs = _configs(model)
    return bool(configs) and all(
        c._attn_implementation in ("sdpa", ROWS) and getattr(c, "attn_logit_softcapping", None) is None for c in configs
    )


def use_rows_attention(model) -> None:
    """Switch `model`'s attention to `ROWS` for good (sdpa unless a call carries a layout)."""
    for config in _configs(model):
        if config._attn_implementation != ROWS:
            config._attn_implementation = ROWS


def packed(states: torch.Tensor, lengths: list[int]) -> torch.Tensor:
    """Right-padded (B, T, D) `states` as one (1, sum(lengths), D) sequence of each row's first
    `lengths[b]` positions (the layout of `packed_answer_logits`)."""
    return torch.cat([states[b, :n] for b, n in enumerate(lengths)])[None]


def packed_answer_logits(model, rows: list[list[int]], wanted: list[tuple[int, int]]) -> torch.Tensor:
    """`hyperdas.core.scoring.answer_logits` of `rows` packed into one sequence without padding
    (position ids restart at each row, attention row by row); `wanted`: (row, position) pairs.
    `model` must pass `can_pack`."""
    device = next(model.parameters()).device
    use_rows_attention(model)
    lengths = [len(row) for row in rows]
    starts = torch.tensor([0] + lengths[:-1]).cumsum(0).tolist()
    ids = torch.tensor([[t for row in rows for t in row]], device=device)
    positions = torch.cat([torch.arange(n) for n in lengths])[None].to(device)
    layout = RowLayout.of(lengths, device)
    body = model.get_decoder()
    hidden = body(input_ids=ids, position_ids=positions, use_cache=False, **{LAYOUT_KWARG: layout}).last_hidden_state
    index = torch.tensor([starts[r] + p for r, p in wanted], device=device)
    return model.get_output_embeddings()(hidden[0, index])
