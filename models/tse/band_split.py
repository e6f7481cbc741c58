"""Band-split encoder and band-merge (complex ratio mask) decoder for 48 kHz spectra.

The band-split front end follows BSRNN (Luo & Yu 2023, "Music Source Separation with Band-Split
RNN", arXiv 2209.15174; reference: the authors' description and the ESPnet / ``lucidrains``
re-implementations, read for understanding, not copied): each sub-band's real and imaginary parts
are normalised and linearly projected to a shared feature dimension ``N``, and a per-band head
predicts that band's complex mask. Unlike BSRNN, the bands here overlap, so the per-band masks are
overlap-added and divided by how many bands cover each bin.

Default band layout (``n_fft = 2048`` at 48 kHz: 1025 bins, 23.4375 Hz per bin), 53 bands:

============  ===========  =====  ================  ==============================
region        Hz           bands  nominal width     bins (before overlap)
============  ===========  =====  ================  ==============================
fine          0 - 1000     11     ~91 Hz (~3.9)     0 - 43
medium        1000 - 8000  24     ~292 Hz (~12.5)   43 - 341
coarse        8000 - 24000 18     ~889 Hz (~37.9)   341 - 1025 (Nyquist included)
============  ===========  =====  ================  ==============================

Nominal band ``k`` of a region spans ``[e_k, e_{k+1})`` with the region's edges evenly spaced
(rounded to bins); each band is then widened by ``max(1, round(overlap * width / 2))`` bins on each
side (clipped to ``[0, n_freq)``), so neighbouring bands — including across region borders —
always share bins. ``band_edges`` returns the final ``(start, end)`` bin ranges.
"""

from __future__ import annotations

import torch
from torch import nn


def band_edges(
    n_fft: int,
    sample_rate: int,
    region_edges_hz: tuple[float, ...],
    bands_per_region: tuple[int, ...],
    overlap: float,
) -> list[tuple[int, int]]:
    """Overlapping sub-band bin ranges ``[(start, end), ...]`` (end exclusive).

    ``region_edges_hz`` has one more entry than ``bands_per_region``; the last edge is taken to be
    Nyquist (bin ``n_fft // 2`` included). ``overlap`` is the fraction of a band's nominal width
    added in total (half on each side, at least one bin per side).
    """
    n_freq = n_fft // 2 + 1
    if len(region_edges_hz) != len(bands_per_region) + 1:
        raise ValueError("region_edges_hz needs one more entry than bands_per_region")
    hz_per_bin = sample_rate / n_fft
    bins = [round(hz / hz_per_bin) for hz in region_edges_hz]
    bins[-1] = n_freq  # the last region runs to Nyquist inclusive
    bands: list[tuple[int, int]] = []
    for (lo, hi), count in zip(
        zip(bins[:-1], bins[1:], strict=True), bands_per_region, strict=True
    ):
        if hi - lo < count:
            raise ValueError(f"region of {hi - lo} bins cannot hold {count} bands")
        edges = [lo + round(k * (hi - lo) / count) for k in range(count + 1)]
        for a, b in zip(edges[:-1], edges[1:], strict=True):
            pad = max(1, round(overlap * (b - a) / 2))
            bands.append((max(0, a - pad), min(n_freq, b + pad)))
    return bands


class BandSplit(nn.Module):
    """Complex spectrum -> per-band features.

    ``forward(spec: (B, F, T) complex) -> (B, T, Q, N)`` float, with ``Q = len(bands)`` sub-bands
    and feature dimension ``N``. Each band's ``(re, im)`` values (``2 * width`` numbers per frame)
    go through their own LayerNorm and Linear. One instance encodes both mixture and reference.
    """

    def __init__(self, bands: list[tuple[int, int]], feature_dim: int) -> None:
        super().__init__()
        self.bands = list(bands)
        self.norms = nn.ModuleList(nn.LayerNorm(2 * (e - s)) for s, e in self.bands)
        self.projs = nn.ModuleList(nn.Linear(2 * (e - s), feature_dim) for s, e in self.bands)

    def forward(self, spec: torch.Tensor) -> torch.Tensor:
        x = torch.view_as_real(spec).transpose(1, 2)  # (B, T, F, 2)
        feats = []
        for (s, e), norm, proj in zip(self.bands, self.norms, self.projs, strict=True):
            band = x[:, :, s:e].flatten(2)  # (B, T, 2 * width)
            feats.append(proj(norm(band)))  # (B, T, N)
        return torch.stack(feats, dim=2)  # (B, T, Q, N)


class BandMerge(nn.Module):
    """Per-band features -> complex ratio mask over all bins.

    ``forward(h: (B, T, Q, N)) -> (B, F, T)`` complex. Each band has LayerNorm -> Linear(N, 2 *
    width), giving an unbounded ``(re, im)`` per bin (BSRNN's GLU head is dropped to keep the v1/v2
    parameter budgets); overlapping bands are averaged (overlap-add divided by the per-bin band
    count).
    """

    def __init__(self, bands: list[tuple[int, int]], feature_dim: int, n_freq: int) -> None:
        super().__init__()
        self.bands = list(bands)
        self.n_freq = n_freq
        self.heads = nn.ModuleList(
            nn.Sequential(nn.LayerNorm(feature_dim), nn.Linear(feature_dim, 2 * (e - s)))
            for s, e in self.bands
        )
        count = torch.zeros(n_freq)
        for s, e in self.bands:
            count[s:e] += 1
        if (count == 0).any():
            raise ValueError("the bands do not cover every frequency bin")
        self.register_buffer("inv_count", 1.0 / count, persistent=False)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        b, t, _, _ = h.shape
        mask = h.new_zeros(b, t, self.n_freq, 2)
        for q, ((s, e), head) in enumerate(zip(self.bands, self.heads, strict=True)):
            m = head(h[:, :, q])  # (B, T, 2 * width)
            mask[:, :, s:e] = mask[:, :, s:e] + m.view(b, t, e - s, 2)
        mask = mask * self.inv_count[:, None]  # average where bands overlap
        return torch.view_as_complex(mask.transpose(1, 2).contiguous())  # (B, F, T)
