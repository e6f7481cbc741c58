"""GE2E d-vector speaker encoder: a stacked LSTM over mel frames, embedded partial by partial.

Paper: L. Wan, Q. Wang, A. Papir, I. Lopez Moreno, "Generalized End-to-End Loss for Speaker
Verification", ICASSP 2018, arXiv:1710.10467 (and Heigold et al. 2016 for the d-vector LSTM).

Reference implementation: Resemble AI's ``resemblyzer`` package (``resemblyzer/voice_encoder.py``,
``VoiceEncoder``; Apache-2.0), whose wheel ships trained weights (``resemblyzer/pretrained.pt``;
imported by ``models/hub/importers/resemblyzer.py``). Parameter names follow that state dict
(``lstm.*``, ``linear.*``) so it loads with ``strict=True``.

Network: ``num_layers`` LSTM layers over ``(B, frames, feat_dim)`` power-mel frames
(``models.features.Ge2eMel``); the last layer's final hidden state -> linear -> ReLU -> L2
normalisation is the embedding of one window. Inference scheme (as the reference's
``embed_utterance``): windows ("partial utterances") of ``partial_frames`` frames start every
``partial_step`` frames, and the utterance embedding is the L2-normalised mean of the windows'
embeddings. The front end already zero-pads a clip to the span of its windows
(``models.features.ge2e_partial_starts``), so the model needs only the frames it is given.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from models.features import Ge2eMelConfig
from models.registry import register_model, register_preset


@dataclass(frozen=True)
class Ge2eConfig:
    feat_dim: int = 40  # mel bands of the input (resemblyzer: 40)
    hidden_dim: int = 256  # LSTM units per layer
    num_layers: int = 3  # stacked LSTM layers
    embed_dim: int = 256  # d-vector size (the linear layer's output)
    sample_rate: int = 16000  # Hz of the front end
    partial_frames: int = 160  # frames per partial utterance (1.6 s at the 10 ms hop)
    # Frames between partial starts: resemblyzer's default rate of 1.3 partials per second
    # (round(100 / 1.3) = 77 frames, about half a window of overlap).
    partial_step: int = 77
    min_coverage: float = 0.75  # a clip's last partial is kept if the clip covers 75% of it
    # The front end raises clips quieter than this (dBFS RMS) to it; None: no volume step.
    target_dbfs: float | None = -30.0


@register_model("ge2e", Ge2eConfig, family="speaker")
class GE2E(nn.Module):
    """GE2E d-vector encoder.

    ``forward(mels: (B, T, feat_dim) power mel, Ge2eMel) -> (B, embed_dim)`` L2-normalised: the
    normalised mean of the embeddings of windows ``[s, s + partial_frames)`` for
    ``s = 0, partial_step, ...`` while they fit in ``T``. A ``T`` shorter than one window is
    zero-padded (mel power 0 is silence), as the reference pads a short clip.
    """

    def __init__(self, cfg: Ge2eConfig) -> None:
        super().__init__()
        if not 0 < cfg.partial_step <= cfg.partial_frames:
            raise ValueError(
                f"partial_step must be in 1..partial_frames ({cfg.partial_frames}), "
                f"got {cfg.partial_step}: windows must cover every frame"
            )
        if not 0 < cfg.min_coverage <= 1:
            raise ValueError(f"min_coverage must be in (0, 1], got {cfg.min_coverage}")
        self.cfg = cfg
        self.lstm = nn.LSTM(cfg.feat_dim, cfg.hidden_dim, cfg.num_layers, batch_first=True)
        self.linear = nn.Linear(cfg.hidden_dim, cfg.embed_dim)

    @property
    def front_end_config(self) -> Ge2eMelConfig:
        """The front end this model reads (``models.pipelines.speaker`` builds it from here)."""
        cfg = self.cfg
        return Ge2eMelConfig(
            sample_rate=cfg.sample_rate,
            num_mel_bins=cfg.feat_dim,
            target_dbfs=cfg.target_dbfs,
            partial_frames=cfg.partial_frames,
            partial_step=cfg.partial_step,
            min_coverage=cfg.min_coverage,
        )

    def embed_windows(self, mels: torch.Tensor) -> torch.Tensor:
        """``mels: (N, frames, feat_dim)`` -> ``(N, embed_dim)``: one L2-normalised embedding
        per sequence (the reference's ``VoiceEncoder.forward``)."""
        _, (hidden, _) = self.lstm(mels)  # hidden: (num_layers, N, hidden_dim)
        return F.normalize(F.relu(self.linear(hidden[-1])), dim=-1)

    def forward(self, mels: torch.Tensor) -> torch.Tensor:
        """``mels: (B, T, feat_dim)`` -> ``(B, embed_dim)`` L2-normalised."""
        if mels.dim() != 3 or mels.shape[-1] != self.cfg.feat_dim:
            raise ValueError(
                f"GE2E expects mels (B, T, {self.cfg.feat_dim}), got {tuple(mels.shape)}"
            )
        size = self.cfg.partial_frames
        if mels.shape[1] < size:
            mels = F.pad(mels, (0, 0, 0, size - mels.shape[1]))
        windows = mels.unfold(1, size, self.cfg.partial_step)  # (B, K, feat_dim, size)
        b, k = windows.shape[:2]
        windows = windows.permute(0, 1, 3, 2).reshape(b * k, size, self.cfg.feat_dim)
        emb = self.embed_windows(windows).view(b, k, -1)  # (B, K, D)
        return F.normalize(emb.mean(dim=1), dim=-1)


register_preset(
    "ge2e-tiny",
    "ge2e",
    Ge2eConfig(hidden_dim=32, num_layers=2, embed_dim=32, partial_frames=40, partial_step=20),
    "GE2E with a 2-layer 32-unit LSTM and 0.4-s windows, for smoke tests",
)
register_preset(
    "resemblyzer/voice_encoder",
    "ge2e",
    Ge2eConfig(),
    "resemblyzer's VoiceEncoder (pretrained.pt in its wheel): 3 x 256 LSTM on 40 mels, 256-d",
)
