"""Interventions as modules, and the evaluation entry point, on known answers."""

import pytest
import torch

from hyperdas.das.interventions import FullInterchange, RotatedSpaceInterchange, make_intervention


def test_rotation_rows_stay_orthonormal_after_a_step():
    torch.manual_seed(0)
    module = RotatedSpaceInterchange(16, 4)
    optimizer = torch.optim.AdamW(module.parameters(), lr=0.1)
    base, source = torch.randn(8, 16), torch.randn(8, 16)
    module(base, source).pow(2).sum().backward()
    optimizer.step()
    R = module.R
    assert torch.allclose(R @ R.T, torch.eye(4), atol=1e-5)


def test_interchange_swaps_only_the_subspace():
    torch.manual_seed(0)
    module = RotatedSpaceInterchange(16, 4)
    base, source = torch.randn(3, 16), torch.randn(3, 16)
    out = module(base, source).detach()
    R = module.R.detach()
    assert torch.allclose(out @ R.T, source @ R.T, atol=1e-5)  # subspace coordinates from the source
    P = torch.eye(16) - R.T @ R
    assert torch.allclose(out @ P, base @ P, atol=1e-5)  # the complement from the base


def test_full_rank_interchange_is_full_patching():
    torch.manual_seed(0)
    base, source = torch.randn(2, 8), torch.randn(2, 8)
    assert torch.allclose(RotatedSpaceInterchange(8, 8)(base, source), source, atol=1e-5)
    assert torch.equal(FullInterchange()(base, source), source)


def test_bad_rank_and_kind():
    with pytest.raises(ValueError, match="k=32 must lie in 1..hidden size 16"):
        RotatedSpaceInterchange(16, 32)
    with pytest.raises(ValueError, match="unknown intervention 'x'"):
        make_intervention("x", 16, 4)


def test_random_and_pca_subspaces_are_orthonormal_and_pca_finds_the_spread():
    from hyperdas.das.interventions import pca_subspace, random_subspace

    rand = random_subspace(16, 4, seed=3)
    assert torch.allclose(rand.R @ rand.R.T, torch.eye(4), atol=1e-5)
    assert torch.equal(rand.R, random_subspace(16, 4, seed=3).R) and not list(rand.parameters())
    states = torch.randn(200, 16) * 0.01
    states[:, 5] += torch.randn(200) * 10  # nearly all the variance along axis 5
    pca = pca_subspace(states, 1)
    assert abs(pca.R[0, 5]) > 0.99
    base, source = torch.zeros(16), torch.ones(16)
    assert torch.allclose(pca(base, source), pca.R[0] * pca.R[0].sum(), atol=1e-6)  # only that coordinate moves
    with pytest.raises(ValueError, match="at most 16 directions, not k=17"):
        pca_subspace(states, 17)
