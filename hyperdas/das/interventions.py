"""Interventions on one residual-stream vector: small modules with ``forward(base, source)``.

RotatedSpaceInterchange (DAS/MDAS): ``h' = h_base + Rᵀ R (h_src − h_base)`` with R (k × d) kept
row-orthonormal by torch's orthogonal parametrization, i.e. swap the source's coordinates in a
learned k-dimensional subspace. FullInterchange: the source vector replaces the base vector
(activation patching), the reference every subspace method is compared with.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils import parametrizations


class FullInterchange(nn.Module):
    """Plain activation patching: no parameters."""

    def forward(self, base: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
        return source.to(base.dtype)


class RotatedSpaceInterchange(nn.Module):
    """Interchange the source's coordinates in a learned k-dim subspace of the residual stream."""

    def __init__(self, hidden_size: int, k: int):
        super().__init__()
        if not 0 < k <= hidden_size:
            raise ValueError(f"subspace rank k={k} must lie in 1..hidden size {hidden_size}")
        self.hidden_size, self.k = hidden_size, k
        # matrix_exp, not the default for wide matrices (householder): with torch 2.13 on CPU one
        # AdamW step turned householder's R into zeros (tests/das/test_interventions.py guards this)
        self.rotation = parametrizations.orthogonal(nn.Linear(hidden_size, k, bias=False), orthogonal_map="matrix_exp")

    @property
    def R(self) -> torch.Tensor:  # noqa: N802 (the paper's name)
        return self.rotation.weight  # (k, d), orthonormal rows

    def forward(self, base: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
        R = self.R.to(base.dtype)
        return base + ((source.to(base.dtype) - base) @ R.T) @ R


class FixedSubspaceInterchange(nn.Module):
    """Interchange the source's coordinates in a fixed k-dim subspace (orthonormal rows of `basis`,
    a buffer): the untrained reference points RAVEL reports beside DAS."""

    def __init__(self, basis: torch.Tensor):
        super().__init__()
        self.register_buffer("R", basis.float())

    def forward(self, base: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
        R = self.R.to(base.dtype)
        return base + ((source.to(base.dtype) - base) @ R.T) @ R


def random_subspace(hidden_size: int, k: int, seed: int = 0) -> FixedSubspaceInterchange:
    """A uniformly random k-dim subspace (QR of a seeded Gaussian matrix)."""
    if not 0 < k <= hidden_size:
        raise ValueError(f"subspace rank k={k} must lie in 1..hidden size {hidden_size}")
    gaussian = torch.randn(hidden_size, k, generator=torch.Generator().manual_seed(seed))
    return FixedSubspaceInterchange(torch.linalg.qr(gaussian).Q.T)


def pca_subspace(states: torch.Tensor, k: int) -> FixedSubspaceInterchange:
    """The top-k principal directions of `states` (N, d), e.g. the entity token's residual vectors."""
    if not 0 < k <= min(states.shape):
        raise ValueError(f"PCA of {tuple(states.shape)} states gives at most {min(states.shape)} directions, not k={k}")
    centred = states.float() - states.float().mean(0)
    return FixedSubspaceInterchange(torch.linalg.svd(centred, full_matrices=False).Vh[:k])


def make_intervention(kind: str, hidden_size: int, k: int | None = None) -> nn.Module:
    if kind == "full":
        return FullInterchange()
    if kind == "rotated":
        if k is None:
            raise ValueError("a rotated-space interchange needs its rank k")
        return RotatedSpaceInterchange(hidden_size, k)
    raise ValueError(f"unknown intervention {kind!r}; use 'rotated' or 'full'")
