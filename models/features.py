"""Front ends: Kaldi-compatible log-mel filterbanks.

The speaker models of 3D-Speaker and WeSpeaker are trained on Kaldi fbank features computed by
``torchaudio.compliance.kaldi.fbank`` (80 bins, 25 ms window, 10 ms shift, povey window,
pre-emphasis 0.97, DC removal) followed by per-utterance mean normalisation; we use the same
function so their checkpoints see the features they were trained on. 3D-Speaker feeds the
waveform as float in [-1, 1] (no int16 rescaling), and so do we.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torchaudio.compliance.kaldi as kaldi


@dataclass(frozen=True)
class FbankConfig:
    sample_rate: int = 16000  # Hz; input waveforms must already be at this rate
    num_mel_bins: int = 80
    frame_length: float = 25.0  # ms
    frame_shift: float = 10.0  # ms
    # Gaussian dither in Kaldi's int16 units (1.0 = one LSB); 0 at inference, 1.0 in training.
    # Our waveforms are floats in [-1, 1], so it is scaled by 1/32768 before kaldi.fbank.
    dither: float = 0.0
    mean_norm: bool = True  # subtract the per-utterance mean of each bin (CMN)
    # Kaldi window: "povey" (3D-Speaker, Kaldi's default) or "hamming" (WeSpeaker's inference).
    window_type: str = "povey"
    # Multiply the [-1, 1] waveform by this before the fbank: 32768 feeds int16 units, as
    # WeSpeaker does (torchaudio.load(normalize=False)). Only the log floor of near-silent bins
    # notices it once the mean is subtracted.
    waveform_scale: float = 1.0

    def __post_init__(self) -> None:
        if self.window_type not in ("povey", "hamming", "hanning", "rectangular", "blackman"):
            raise ValueError(f"unknown Kaldi window_type {self.window_type!r}")
        if self.waveform_scale <= 0:
            raise ValueError(f"waveform_scale must be > 0, got {self.waveform_scale}")


def num_frames(num_samples: int, cfg: FbankConfig = FbankConfig()) -> int:
    """Frames kaldi.fbank produces for ``num_samples`` (snip_edges=True)."""
    win = int(cfg.sample_rate * cfg.frame_length / 1000)
    hop = int(cfg.sample_rate * cfg.frame_shift / 1000)
    return 0 if num_samples < win else 1 + (num_samples - win) // hop


def min_samples(cfg: FbankConfig = FbankConfig()) -> int:
    return int(cfg.sample_rate * cfg.frame_length / 1000)


class Fbank(torch.nn.Module):
    """``wav: (T,) or (B, T) float32 at cfg.sample_rate`` -> ``(B, frames, num_mel_bins)``.

    All rows of a batch must have the same length (pad/crop before; see datasets.audio).
    """

    def __init__(self, cfg: FbankConfig = FbankConfig()) -> None:
        super().__init__()
        self.cfg = cfg

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        if wav.dim() == 1:
            wav = wav.unsqueeze(0)
        if wav.dim() != 2:
            raise ValueError(f"Fbank expects (T,) or (B, T) audio, got shape {tuple(wav.shape)}")
        if wav.shape[-1] < min_samples(self.cfg):
            raise ValueError(
                f"audio of {wav.shape[-1]} samples is shorter than one "
                f"{self.cfg.frame_length} ms frame at {self.cfg.sample_rate} Hz"
            )
        feats = [
            kaldi.fbank(
                row.unsqueeze(0).float() * self.cfg.waveform_scale,
                num_mel_bins=self.cfg.num_mel_bins,
                frame_length=self.cfg.frame_length,
                frame_shift=self.cfg.frame_shift,
                dither=self.cfg.dither * self.cfg.waveform_scale / 32768.0,
                sample_frequency=float(self.cfg.sample_rate),
                window_type=self.cfg.window_type,
            )
            for row in wav
        ]
        out = torch.stack(feats)  # (B, frames, mels)
        if self.cfg.mean_norm:
            out = out - out.mean(dim=1, keepdim=True)
        return out


def checkpoint_fbank(ckpt: dict) -> FbankConfig:
    """The front end a checkpoint was trained with: ``meta["fbank"]`` (an imported model's, e.g.
    WeSpeaker's hamming window), else the default Kaldi fbank with ``config["feat_dim"]`` bins."""
    from models.config import from_dict

    meta = ckpt.get("meta") or {}
    if meta.get("fbank"):
        return from_dict(FbankConfig, dict(meta["fbank"]), path="meta.fbank")
    feat_dim = (ckpt.get("config") or {}).get("feat_dim")
    return FbankConfig() if feat_dim is None else FbankConfig(num_mel_bins=int(feat_dim))
