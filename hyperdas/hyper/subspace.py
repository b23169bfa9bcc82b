"""Subspace modules of HyperDAS: the orthonormal W (B, D, k) through which source information is
swapped in, ``h' = h + W Wᵀ (s − h)``.

householder (default): a shared R with orthonormal columns, reflected by an instruction-chosen
  Householder vector, W = (I − 2vvᵀ) R (still orthonormal);
shared: W = R for every instruction;
mask: R's columns scaled by an instruction-conditioned sigmoid mask (temperature annealed);
none: no subspace, the full vector is mixed (W Wᵀ = I).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils import parametrizations

KINDS = ("householder", "shared", "mask", "none")
# R's orthogonal map: "cayley" (this package: one solve, ~17x cheaper than matrix_exp at D=576);
# "householder" (the official code's, torch's default for a non-square R); "matrix_exp"
ROTATION_MAPS = ("cayley", "householder", "matrix_exp")
# the instruction head: "gelu" (LayerNorm-Linear-GELU-Linear, this package's); "swiglu" (the official
# RMSNorm then SwiGLU MLP D -> width -> D)
HEADS = ("gelu", "swiglu")


class SwiGLU(nn.Module):
    """RMSNorm, then down(silu(gate(x)) * up(x)): the official subspace head."""

    def __init__(self, hidden: int, width: int, out: int):
        super().__init__()
        self.norm = nn.RMSNorm(hidden, eps=1e-5)
        self.gate, self.up = nn.Linear(hidden, width, bias=False), nn.Linear(hidden, width, bias=False)
        self.down = nn.Linear(width, out, bias=False)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        z = self.norm(z)
        return self.down(nn.functional.silu(self.gate(z)) * self.up(z))


class Subspace(nn.Module):
    def __init__(
        self,
        kind: str,
        hidden: int,
        k: int,
        rotation_map: str = "cayley",
        head: str = "gelu",
        head_width: int | None = None,
    ):
        super().__init__()
        if kind not in KINDS:
            raise ValueError(f"unknown subspace module {kind!r}; use one of {KINDS}")
        if kind != "none" and not 0 < k <= hidden:
            raise ValueError(f"subspace rank k={k} must lie in 1..hidden size {hidden}")
        self.kind, self.hidden, self.k = kind, hidden, k
        self.temperature = 1.0  # the mask's; the training loop anneals it
        if kind != "none":
            # (D, k) with orthonormal columns
            linear = nn.Linear(k, hidden, bias=False)
            self.rotation = parametrizations.orthogonal(linear, orthogonal_map=rotation_map)
        if kind in ("householder", "mask"):
            out = hidden if kind == "householder" else k
            if head == "swiglu":
                self.head = SwiGLU(hidden, head_width or hidden, out)
            else:
                self.head = nn.Sequential(
                    nn.LayerNorm(hidden), nn.Linear(hidden, hidden), nn.GELU(), nn.Linear(hidden, out)
                )

    @property
    def R(self) -> torch.Tensor:  # noqa: N802 (the paper's name)
        return self.rotation.weight

    def householder_vector(self, z: torch.Tensor) -> torch.Tensor:
        return nn.functional.normalize(self.head(z), dim=-1)

    def forward(self, z: torch.Tensor) -> torch.Tensor | None:
        """W (B, D, k) for instruction states z (B, D); None for kind "none" (identity)."""
        if self.kind == "none":
            return None
        R = self.R.expand(z.shape[0], -1, -1)
        if self.kind == "shared":
            return R
        if self.kind == "householder":
            v = self.householder_vector(z)
            return R - 2 * v[:, :, None] * (v[:, None, :] @ R)
        mask = torch.sigmoid(self.head(z) / self.temperature)
        return R * mask[:, None, :]


def interchange(base: torch.Tensor, source: torch.Tensor, A: torch.Tensor, W: torch.Tensor | None) -> torch.Tensor:
    """h_j' = h_j + W Wᵀ (s_j − h_j), s_j = Σ_i A[i,j] source_i + A[keep,j] h_j, at every base position.

    base (B, Tb, D), source (B, Ts, D), A (B, Ts+1, Tb), W (B, D, k) or None (full vector).
    """
    mixed = torch.einsum("bij,bid->bjd", A[:, :-1], source) + A[:, -1, :, None] * base
    delta = mixed - base
    if W is not None:
        delta = (delta @ W) @ W.transpose(1, 2)
    return base + delta
