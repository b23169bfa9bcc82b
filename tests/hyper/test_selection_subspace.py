"""HyperDAS pieces as pure modules: selection head, inference modes, sparsity, subspaces, interchange."""

import pytest
import torch

from hyperdas.hyper.selection import SelectionHead, harden, sparsity_penalty
from hyperdas.hyper.subspace import Subspace, interchange


def _inputs(B=3, Tb=5, Ts=4, D=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    base, source, z = (
        torch.randn(B, Tb, D, generator=g),
        torch.randn(B, Ts, D, generator=g),
        torch.randn(B, D, generator=g),
    )
    base_mask = torch.ones(B, Tb, dtype=torch.bool)
    base_mask[:, -2:] = False  # e.g. answer tokens: never selectable
    source_mask = torch.ones(B, Ts, dtype=torch.bool)
    source_mask[0, -1] = False  # padding of a shorter source
    return z, base, base_mask, source, source_mask


def test_selection_is_a_distribution_per_base_column_and_respects_masks():
    torch.manual_seed(0)
    z, base, base_mask, source, source_mask = _inputs()
    A = SelectionHead(16, 4)(z, base, base_mask, source, source_mask)
    assert A.shape == (3, 5, 5)
    assert torch.allclose(A.sum(dim=1), torch.ones(3, 5))
    assert (A[0, 3] == 0).all()  # the padded source token is never picked
    assert (A[:, -1, 3:] == 1).all() and (A[:, :-1, 3:] == 0).all()  # unselectable base columns keep base


def test_symmetric_pair_features_do_not_tell_base_from_source():
    torch.manual_seed(0)
    head = SelectionHead(8, 2, symmetric=True)
    a, b = torch.randn(1, 1, 8), torch.randn(1, 1, 8)
    assert torch.allclose(head.pair_features(a, b)[0, 0, 0], head.pair_features(b, a)[0, 0, 0])


@pytest.mark.parametrize("symmetric,offsets", [(False, 0), (True, 0), (False, 3)])
def test_split_scores_equal_the_pair_by_pair_attention(symmetric, offsets):
    torch.manual_seed(0)
    z, base, base_mask, source, source_mask = _inputs()
    head = SelectionHead(16, 4, symmetric, offsets)
    if offsets:  # trained offset vectors (they start at zero)
        torch.nn.init.normal_(head.base_offset), torch.nn.init.normal_(head.source_offset)
    B, Tb, D = base.shape
    feats = head.pair_features(base, source, base_mask, source_mask)  # (B, Ts+1, Tb, D)
    q = head.query(z).view(B, 4, D // 4)
    k = head.key(feats).view(B, feats.shape[1], Tb, 4, D // 4)
    reference = torch.einsum("bhd,bijhd->bij", q, k)  # every pair, every head
    assert torch.allclose(head.scores(z, base, source, base_mask, source_mask), reference, atol=1e-4)


def test_offset_features_count_back_from_the_last_selectable_token():
    head = SelectionHead(4, 1, offsets=3)
    with torch.no_grad():
        head.source_offset.copy_(torch.arange(3.0)[:, None].expand(3, 4))  # bucket b -> the vector (b, b, b, b)
    mask = torch.tensor([[True, True, True, True, True, False], [True, True, False, False, False, False]])
    distance = head.offset_features(mask, head.source_offset)[..., 0]
    # the last selectable token is 0 back, farther ones share the last bucket, unselectable ones get 0
    assert distance.tolist() == [[2, 2, 2, 1, 0, 0], [1, 0, 0, 0, 0, 0]]


def test_offset_head_starts_as_the_papers_head():
    z, base, base_mask, source, source_mask = _inputs()
    torch.manual_seed(0)
    paper = SelectionHead(16, 4)
    torch.manual_seed(0)
    with_offsets = SelectionHead(16, 4, offsets=8)
    assert torch.equal(
        paper(z, base, base_mask, source, source_mask), with_offsets(z, base, base_mask, source, source_mask)
    )
    with pytest.raises(ValueError, match="offsets=-1"):
        SelectionHead(16, 4, offsets=-1)
    with pytest.raises(ValueError, match="needs the base and source masks"):
        with_offsets.scores(z, base, source)


def test_hard_modes():
    A = torch.tensor([[[0.6, 0.5, 0.05], [0.3, 0.1, 0.05], [0.1, 0.4, 0.9]]])  # rows: 2 sources + keep
    many = harden(A, "one_to_many")
    assert many.tolist() == [[[1, 1, 0], [0, 0, 0], [0, 0, 1]]]
    one = harden(A, "one_to_one")
    # both sources bid only for their best column (0); column 1 has no bidder left and keeps base
    assert one.tolist() == [[[1, 0, 0], [0, 0, 0], [0, 1, 1]]]
    assert torch.equal(harden(A, "soft"), A)
    with pytest.raises(ValueError, match="unknown selection mode 'argmax'"):
        harden(A, "argmax")


def test_sparsity_penalty_counts_sources_used_more_than_once():
    A = torch.tensor([[[0.9, 0.8], [0.1, 0.1], [0.0, 0.1]]])  # source 0 used 1.7 times, source 1 0.2
    assert sparsity_penalty(A).item() == pytest.approx(1.7)


@pytest.mark.parametrize("kind", ["householder", "shared", "mask"])
def test_subspace_shapes_and_orthonormality(kind):
    torch.manual_seed(0)
    module, z = Subspace(kind, 16, 4), torch.randn(3, 16)
    W = module(z)
    assert W.shape == (3, 16, 4)
    if kind != "mask":
        assert torch.allclose(W.transpose(1, 2) @ W, torch.eye(4).expand(3, 4, 4), atol=1e-5)
    if kind == "householder":  # the instruction changes W
        assert not torch.allclose(W[0], W[1])


def test_interchange_keep_source_and_full_vector():
    z, base, _, source, _ = _inputs()
    keep = torch.zeros(3, 5, 5)
    keep[:, -1] = 1
    assert torch.equal(interchange(base, source, keep, Subspace("shared", 16, 4)(z)), base)
    take = torch.zeros(3, 5, 5)
    take[:, 2] = 1  # every base token reads source token 2
    assert torch.allclose(interchange(base, source, take, None), source[:, 2:3].expand(-1, 5, -1))
    W = Subspace("shared", 16, 4)(z)
    out = interchange(base, source, take, W)
    # only the subspace changed: outside it the base stays, inside it the source is read
    proj = W @ W.transpose(1, 2)
    assert torch.allclose(out @ proj, source[:, 2:3].expand(-1, 5, -1) @ proj, atol=1e-5)
    assert torch.allclose(out - out @ proj, base - base @ proj, atol=1e-5)


def test_bad_subspace_requests():
    with pytest.raises(ValueError, match="unknown subspace module 'pca'"):
        Subspace("pca", 16, 4)
    with pytest.raises(ValueError, match="k=32 must lie in 1..hidden size 16"):
        Subspace("householder", 16, 32)
