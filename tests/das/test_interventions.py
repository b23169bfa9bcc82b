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
