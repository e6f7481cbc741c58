"""Shared temporal pooling layers: TAP/TSTP/ASTP statistics and NetVLAD/GhostVLAD aggregation."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from models.layers.pooling import ASTP, TAP, TSTP, GhostVLAD, NetVLAD

torch.set_num_threads(2)


def test_tap_tstp_statistics():
    x = torch.randn(3, 5, 40)
    assert torch.allclose(TAP(5)(x), x.mean(-1))
    stats = TSTP(5)(x)
    assert stats.shape == (3, 10)
    assert torch.allclose(stats[:, :5], x.mean(-1), atol=1e-6)
    assert torch.allclose(stats[:, 5:], x.std(-1, unbiased=True), atol=1e-5)


def test_tstp_constant_channel_uses_reference_eps():
    # A channel that is constant over time (common after a ReLU) gets std = sqrt(eps), as in
    # 3D-Speaker/WeSpeaker (eps = 1e-8).
    x = torch.zeros(1, 2, 10)
    assert torch.allclose(TSTP(2)(x)[0, 2:], torch.full((2,), 1e-4))


@pytest.mark.parametrize("pool_cls", [TAP, TSTP, ASTP])
def test_4d_maps_are_flattened_channel_major(pool_cls):
    torch.manual_seed(0)
    pool = pool_cls(6 * 4)
    x = torch.randn(2, 6, 4, 30)  # (B, C, F, T)
    assert torch.allclose(pool(x), pool(x.reshape(2, 24, 30)))
    assert pool(x).shape == (2, pool.out_dim)


def test_astp_shape_and_gradients():
    pool = ASTP(8, bottleneck_dim=4)
    x = torch.randn(2, 8, 25, requires_grad=True)
    out = pool(x)
    assert out.shape == (2, 16)
    out.sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()


def _naive_vlad(pool: NetVLAD, x: torch.Tensor) -> torch.Tensor:
    """Sum over frames of the soft-assigned residuals, written as a direct loop."""
    assign = torch.softmax(pool.assign(x), dim=1)  # (B, K+G, T)
    out = []
    for k in range(pool.num_clusters):
        resid = x - pool.centroids[k][None, :, None]  # (B, C, T)
        out.append(F.normalize((assign[:, k : k + 1] * resid).sum(-1), dim=-1))
    return torch.cat(out, dim=1)


@pytest.mark.parametrize("ghosts", [0, 2])
def test_vlad_matches_direct_formula(ghosts):
    torch.manual_seed(0)
    pool = NetVLAD(12, num_clusters=4, ghost_clusters=ghosts)
    x = torch.randn(3, 12, 17)
    assert torch.allclose(pool(x), _naive_vlad(pool, x), atol=1e-5)


def test_ghostvlad_drops_ghost_clusters_from_output():
    pool = GhostVLAD(16, num_clusters=8, ghost_clusters=2)
    assert pool.assign.out_channels == 10  # ghosts take part in the soft assignment
    assert pool.centroids.shape == (8, 16)  # but have no centroid
    out = pool(torch.randn(2, 16, 50))
    assert pool.out_dim == 8 * 16 and out.shape == (2, 8 * 16)
    # Intra-normalisation: every cluster's residual block has unit norm.
    norms = out.view(2, 8, 16).norm(dim=-1)
    assert torch.allclose(norms, torch.ones_like(norms), atol=1e-5)


def test_ghost_clusters_change_the_result():
    torch.manual_seed(0)
    ghost = GhostVLAD(8, num_clusters=3, ghost_clusters=2)
    plain = NetVLAD(8, num_clusters=3)
    with torch.no_grad():
        plain.assign.weight.copy_(ghost.assign.weight[:3])
        plain.assign.bias.copy_(ghost.assign.bias[:3])
        plain.centroids.copy_(ghost.centroids)
        ghost.assign.bias[3:] = 5.0  # ghosts soak up most of the assignment mass
    x = torch.randn(2, 8, 40)
    assert not torch.allclose(ghost(x), plain(x), atol=1e-3)


def test_vlad_gradients_reach_all_parameters_and_variable_length():
    pool = GhostVLAD(6, num_clusters=4, ghost_clusters=1, normalize_input=True)
    for frames in (1, 7, 130):
        out = pool(torch.randn(2, 6, frames))
        assert out.shape == (2, 24) and torch.isfinite(out).all()
    # A random projection: the squared norm of intra-normalised output is constant (no gradient).
    (pool(torch.randn(2, 6, 20)) * torch.randn(2, 24)).sum().backward()
    for name, p in pool.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_vlad_bad_arguments_raise():
    with pytest.raises(ValueError, match="num_clusters"):
        NetVLAD(4, num_clusters=0)
    with pytest.raises(ValueError, match="ghost_clusters"):
        GhostVLAD(4, num_clusters=2, ghost_clusters=0)
    with pytest.raises(ValueError, match=r"\(B, C, T\)"):
        NetVLAD(4)(torch.randn(4, 10))
