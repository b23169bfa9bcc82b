"""Token-position selection: which source token (or none) feeds each base token.

For every (source i, base j) pair a feature ``Linear([h_base_j ; h_source_i])`` (2D -> D), plus one
"keep base" row per base position whose feature is h_base_j; the instruction's state z attends over
them (scores averaged over heads). A softmax over the Ts+1 rows of each base column gives
A (B, Ts+1, Tb): row i < Ts is source token i, the last row is "keep the base vector".

`positions="rotary"` (the official head): the keys get rotary position embeddings over the flattened
pair index (source-major, positions counting the allowed pairs only, as `cumsum(mask)·mask`); the
query stays at position 0, or (`HyperDASConfig.selection_query="instruction"`, the official code's)
is rotated to its instruction's last position (its length, counting from 1). The score of (i, j)
then depends on the pair jointly, not as a base term plus a source term, so different base columns
can prefer different source tokens. Without it
(`"none"`) every base column ranks the source tokens the same way.

`offsets` > 0 (our addition, off by default): each pair feature also gets a learned vector for how
far the source token, and one for how far the base token, sits before its prompt's last selectable
token (the entity's last token unless the suffix is read), bucketed at `offsets`. They start at zero,
so training starts from the paper's head. Token states alone do not always say where a prompt's
entity ends: on held-out templates the paper's head can prefer a template word whose state it never
saw (measured on the synthetic world, see tests/hyper/test_hyper_known_answers.py).
"""

from __future__ import annotations

import torch
from torch import nn

MODES = ("soft", "one_to_many", "one_to_one")
POSITIONS = ("none", "rotary")
BIDDING_FLOOR = 0.1


def rotary(positions: torch.Tensor, dim: int, theta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(cos, sin) of shape (*positions.shape, dim) for rotary embeddings at integer `positions`."""
    inv_freq = 1.0 / theta ** (torch.arange(0, dim, 2, device=positions.device, dtype=torch.float32) / dim)
    angles = positions.float()[..., None] * inv_freq
    angles = torch.cat([angles, angles], dim=-1)
    return angles.cos(), angles.sin()


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


class SelectionHead(nn.Module):
    def __init__(
        self,
        hidden: int,
        n_heads: int,
        symmetric: bool = False,
        offsets: int = 0,
        positions: str = "none",
        theta: float = 10000.0,
    ):
        super().__init__()
        if hidden % n_heads:
            raise ValueError(f"hidden size {hidden} is not divisible by {n_heads} selection heads")
        if offsets < 0:
            raise ValueError(f"offsets={offsets}: the number of position-offset buckets must be >= 0")
        if positions not in POSITIONS:
            raise ValueError(f"unknown selection positions {positions!r}; use one of {POSITIONS}")
        self.positions, self.theta = positions, theta
        self.n_heads, self.symmetric = n_heads, symmetric
        self.pair = nn.Linear(2 * hidden, hidden)
        self.query = nn.Linear(hidden, hidden)
        self.key = nn.Linear(hidden, hidden)
        self.offsets = offsets
        if offsets:
            self.base_offset = nn.Parameter(torch.zeros(offsets, hidden))
            self.source_offset = nn.Parameter(torch.zeros(offsets, hidden))

    def offset_features(self, mask: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
        """(B, T, D): the learned vector of each position's distance before its row's last
        selectable position (`mask` is True on a prefix of each row), the last bucket shared by all
        farther ones; zero where unselectable."""
        if mask is None:
            raise ValueError("a selection head with position offsets needs the base and source masks")
        at = torch.arange(mask.shape[1], device=mask.device)[None]
        last = (at * mask).amax(dim=1, keepdim=True)  # the last True (the first may be masked: the sink)
        distance = (last - torch.arange(mask.shape[1], device=mask.device)[None]).clamp(0, self.offsets - 1)
        return table[distance] * mask[..., None]

    def side_maps(self, D: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The pair map's base and source halves, (D, D) each."""
        w_base, w_source = self.pair.weight[:, :D], self.pair.weight[:, D:]
        if self.symmetric:  # the same map on both sides: the feature cannot tell base from source
            w_source = w_base
        return w_base, w_source

    def token_parts(self, base, source, base_mask=None, source_mask=None) -> tuple[torch.Tensor, torch.Tensor]:
        """Each token's share of its pair features, (B, Tb, D) and (B, Ts, D), offsets included."""
        w_base, w_source = self.side_maps(base.shape[-1])
        base_part, source_part = base @ w_base.T, source @ w_source.T
        if self.offsets:
            base_part = base_part + self.offset_features(base_mask, self.base_offset)
            source_part = source_part + self.offset_features(source_mask, self.source_offset)
        return base_part, source_part

    def pair_features(
        self,
        base: torch.Tensor,
        source: torch.Tensor,
        base_mask: torch.Tensor | None = None,
        source_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """(B, Ts+1, Tb, D): Linear([h_base_j ; h_source_i]) for every pair (plus the offset vectors
        when the head has them; the masks say where each row's selectable prefix ends), then the
        keep-base row."""
        base_part, source_part = self.token_parts(base, source, base_mask, source_mask)
        feats = base_part[:, None, :, :] + source_part[:, :, None, :] + self.pair.bias
        return torch.cat([feats, base[:, None]], dim=1)

    def scores(
        self,
        z: torch.Tensor,
        base: torch.Tensor,
        source: torch.Tensor,
        base_mask: torch.Tensor | None = None,
        source_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """(B, Ts+1, Tb) head-summed scores of z against key(pair_features(...)), unscaled.

        Key and pair map are linear, so a pair's key is key_b(h_base_j) + key_s(h_source_i) + c:
        summing q·k over heads, the scores split into a base term and a source term, computed
        per position instead of per pair (equal to the pair-by-pair sum; tested)."""
        w_base, w_source = self.side_maps(base.shape[-1])
        q = self.query(z)  # (B, D)
        kq = q @ self.key.weight  # q·(K x) = (Kᵀq)·x
        base_term = base @ (w_base.T @ kq[:, :, None])  # (B, Tb, 1)
        source_term = source @ (w_source.T @ kq[:, :, None])  # (B, Ts, 1)
        if self.offsets:  # the offset vectors enter the pair feature, hence the key, linearly too
            base_term = base_term + self.offset_features(base_mask, self.base_offset) @ kq[:, :, None]
            source_term = source_term + self.offset_features(source_mask, self.source_offset) @ kq[:, :, None]
        constant = (q * (self.pair.bias @ self.key.weight.T + self.key.bias)).sum(-1)
        pairs = base_term.transpose(1, 2) + source_term + constant[:, None, None]
        keep = (base @ kq[:, :, None]).transpose(1, 2) + (q * self.key.bias).sum(-1)[:, None, None]
        return torch.cat([pairs, keep], dim=1)

    def forward(
        self,
        z: torch.Tensor,
        base: torch.Tensor,
        base_mask: torch.Tensor,
        source: torch.Tensor,
        source_mask: torch.Tensor,
        query_position: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Soft selection A (B, Ts+1, Tb); masked sources get 0, unselectable base columns keep base.
        `query_position` (B,): the rotary position of the query (rotary scores; default 0)."""
        B, Tb, D = base.shape
        allowed = torch.cat([source_mask, torch.ones_like(source_mask[:, :1])], dim=1)[:, :, None].expand(-1, -1, Tb)
        allowed = (
            allowed & base_mask[:, None, :]
            | _keep_row(B, source.shape[1] + 1, Tb, base.device) & ~base_mask[:, None, :]
        )
        if self.positions == "rotary":
            scores = self.rotary_scores(z, base, source, base_mask, source_mask, allowed, query_position)
        else:
            scores = self.scores(z, base, source, base_mask, source_mask)
        scores = scores / ((D // self.n_heads) ** 0.5 * self.n_heads)
        return scores.masked_fill(~allowed, float("-inf")).softmax(dim=1)

    def rotary_scores(self, z, base, source, base_mask, source_mask, allowed, query_position=None) -> torch.Tensor:
        """(B, Ts+1, Tb) head-summed scores with rotary keys over the flattened pair index (see
        module doc). The rotation makes the scores inseparable, but a pair's key before it is still
        key_b(h_base_j) + key_s(h_source_i) + c: built from per-token parts, not from the (pair x D x D)
        product of the pair-by-pair features (equal; tested)."""
        D = base.shape[-1]
        base_part, source_part = self.token_parts(base, source, base_mask, source_mask)
        kb, ks = base_part @ self.key.weight.T, source_part @ self.key.weight.T
        constant = self.pair.bias @ self.key.weight.T + self.key.bias
        pairs = ks[:, :, None] + kb[:, None] + constant
        keep = self.key(base)[:, None]
        B, Tb, R = base.shape[0], base.shape[1], source.shape[1] + 1
        d = D // self.n_heads
        keys = torch.cat([pairs, keep], dim=1).view(B, R * Tb, self.n_heads, d)
        flat = allowed.reshape(B, R * Tb).long()
        cos, sin = rotary(flat.cumsum(1) * flat, d, self.theta)
        keys = keys * cos[:, :, None].to(keys.dtype) + rotate_half(keys) * sin[:, :, None].to(keys.dtype)
        q = self.query(z).view(B, 1, self.n_heads, d)
        if query_position is not None:  # the official query: rotated to the instruction's last position
            cos, sin = rotary(query_position[:, None], d, self.theta)
            q = q * cos[:, :, None].to(q.dtype) + rotate_half(q) * sin[:, :, None].to(q.dtype)
        return (keys * q).sum(dim=(2, 3)).view(B, R, Tb)


def _keep_row(B: int, rows: int, Tb: int, device) -> torch.Tensor:
    keep = torch.zeros(B, rows, Tb, dtype=torch.bool, device=device)
    keep[:, -1] = True
    return keep


def harden(A: torch.Tensor, mode: str, straight_through: bool = False) -> torch.Tensor:
    """Inference modes: soft (A as is), one_to_many (one-hot argmax per base column), one_to_one
    (each source row keeps only its best base column, the keep row floored at 0.1, then one-hot
    argmax per column). `straight_through`: the hard selection forward, the soft one's gradient
    backward (training in a hard mode)."""
    if mode not in MODES:
        raise ValueError(f"unknown selection mode {mode!r}; use one of {MODES}")
    if mode == "soft":
        return A
    hard = _hard(A.detach() if straight_through else A, mode)
    return hard + A - A.detach() if straight_through else hard


def _hard(A: torch.Tensor, mode: str) -> torch.Tensor:
    if mode == "one_to_one":
        best = A[:, :-1].argmax(dim=2, keepdim=True)
        sources = torch.zeros_like(A[:, :-1]).scatter(2, best, A[:, :-1].gather(2, best))
        A = torch.cat([sources, A[:, -1:].clamp(min=BIDDING_FLOOR)], dim=1)
    return torch.zeros_like(A).scatter(1, A.argmax(dim=1, keepdim=True), 1.0)


def sparsity_penalty(A: torch.Tensor) -> torch.Tensor:
    """Batch mean of sum_i r_i [r_i > 1], r_i = how much of source token i is used over base tokens."""
    used = A[:, :-1].sum(dim=2)
    return (used * (used > 1)).sum(dim=1).mean()


def column_entropy(A: torch.Tensor, width: int | None = None) -> torch.Tensor:
    """Batch mean of each base column's entropy over its Ts+1 rows, averaged over `width` columns
    (default A's; columns that can only keep base have 0): low when every column picks one row, as
    the hard modes will. When A is one part of a batch (micro-batches, processes), pass the whole
    batch's width: the parts then add up to the batch's value whatever each part is padded to."""
    terms = -(A * A.clamp_min(1e-12).log()).sum(dim=1)  # (B, Tb)
    return terms.sum(dim=1).mean() / (width or A.shape[2])
