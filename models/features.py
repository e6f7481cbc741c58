"""Front ends: Kaldi-compatible log-mel filterbanks, SpeechBrain's, and GE2E's power mel spectrogram.

The speaker models of 3D-Speaker and WeSpeaker are trained on Kaldi fbank features computed by
``torchaudio.compliance.kaldi.fbank`` (80 bins, 25 ms window, 10 ms shift, povey window,
pre-emphasis 0.97, DC removal) followed by per-utterance mean normalisation; we use the same
function so their checkpoints see the features they were trained on. 3D-Speaker feeds the
waveform as float in [-1, 1] (no int16 rescaling), and so do we.

``FbankConfig(kind="speechbrain")`` is SpeechBrain's ``speechbrain.lobes.features.Fbank`` as its
ECAPA-TDNN recipes use it (``spkrec-ecapa-voxceleb``), followed by its sentence-level
``InputNormalization`` (mean only): a centred ``torch.stft`` (25 ms hamming window, 10 ms hop,
400-point FFT) power spectrum, SpeechBrain's triangular mel filters (centres equally spaced on
the 2595*log10(1 + f/700) mel scale, each as wide on both sides as the gap to the filter
below it), ``10*log10`` floored at 1e-10 and at 80 dB below the utterance's peak, then the
per-utterance mean of each bin subtracted. The reference is ``speechbrain/processing/features.py``
(``STFT``, ``spectral_magnitude``, ``Filterbank``); ``tests/models/test_hub_importers.py`` checks
ours against it.

The GE2E d-vector encoder (Wan et al. 2018, "Generalized end-to-end loss for speaker
verification"), as trained by Resemble AI's ``resemblyzer`` package, reads a different input:
:class:`Ge2eMel` (see its docstring). A model whose front end is not the Kaldi fbank says so with
a ``front_end_config`` attribute; :func:`front_end` builds the module for either config, and
:func:`num_frames` / :func:`min_samples` answer for either.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
import torchaudio.compliance.kaldi as kaldi
import torchaudio.functional as AF


@dataclass(frozen=True)
class FbankConfig:
    # "kaldi": torchaudio's Kaldi fbank (3D-Speaker, WeSpeaker); "speechbrain": SpeechBrain's
    # STFT + mel filterbank (window_type, dither and waveform_scale do not apply to it).
    kind: str = "kaldi"
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
        if self.kind not in ("kaldi", "speechbrain"):
            raise ValueError(f"unknown fbank kind {self.kind!r}; use 'kaldi' or 'speechbrain'")
        if self.window_type not in ("povey", "hamming", "hanning", "rectangular", "blackman"):
            raise ValueError(f"unknown Kaldi window_type {self.window_type!r}")
        if self.waveform_scale <= 0:
            raise ValueError(f"waveform_scale must be > 0, got {self.waveform_scale}")


def num_frames(num_samples: int, cfg: FrontEndConfig = FbankConfig()) -> int:
    """Frames the front end of ``cfg`` produces for ``num_samples`` (kaldi.fbank: snip_edges=True;
    speechbrain: a centred STFT; GE2E mel: the frames its partial utterances span,
    :func:`ge2e_partial_starts`)."""
    if isinstance(cfg, Ge2eMelConfig):
        return ge2e_partial_starts(num_samples, cfg)[-1] + cfg.partial_frames
    win = int(cfg.sample_rate * cfg.frame_length / 1000)
    hop = int(cfg.sample_rate * cfg.frame_shift / 1000)
    if cfg.kind == "speechbrain":
        return 0 if num_samples < win else 1 + num_samples // hop
    return 0 if num_samples < win else 1 + (num_samples - win) // hop


def min_samples(cfg: FrontEndConfig = FbankConfig()) -> int:
    """One analysis window: the shortest clip the front end accepts."""
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
        if self.cfg.kind == "speechbrain":
            return speechbrain_fbank(wav.float(), self.cfg)
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


def _mel(hz: torch.Tensor) -> torch.Tensor:
    return 2595.0 * torch.log10(1.0 + hz / 700.0)


def _hz(mel: torch.Tensor) -> torch.Tensor:
    return 700.0 * (10.0 ** (mel / 2595.0) - 1.0)


def speechbrain_mel_filters(cfg: FbankConfig) -> torch.Tensor:
    """``(n_fft // 2 + 1, num_mel_bins)`` triangular filters, SpeechBrain's shape: symmetric
    triangles centred on mel-spaced frequencies, half-width the gap to the previous centre."""
    n_fft = int(cfg.sample_rate * cfg.frame_length / 1000)
    nyquist = cfg.sample_rate // 2
    edges = _hz(
        torch.linspace(
            float(_mel(torch.tensor(0.0))),
            float(_mel(torch.tensor(float(nyquist)))),
            cfg.num_mel_bins + 2,
        )
    )
    centre = edges[1:-1]  # (M,)
    band = (edges[1:] - edges[:-1])[:-1]  # (M,): the gap below each centre
    freqs = torch.linspace(0, nyquist, n_fft // 2 + 1)  # (K,)
    slope = (freqs[None, :] - centre[:, None]) / band[:, None]  # (M, K)
    return torch.clamp(torch.minimum(1.0 + slope, 1.0 - slope), min=0.0).T  # (K, M)


def speechbrain_fbank(wav: torch.Tensor, cfg: FbankConfig) -> torch.Tensor:
    """``wav: (B, T)`` -> ``(B, 1 + T // hop, num_mel_bins)``: see the module docstring."""
    win = int(cfg.sample_rate * cfg.frame_length / 1000)
    hop = int(cfg.sample_rate * cfg.frame_shift / 1000)
    spec = torch.stft(
        wav, n_fft=win, hop_length=hop, win_length=win, window=torch.hamming_window(win),
        center=True, pad_mode="constant", normalized=False, onesided=True, return_complex=True,
    )  # fmt: skip
    power = spec.real.square() + spec.imag.square()  # (B, K, frames)
    mels = power.transpose(1, 2) @ speechbrain_mel_filters(cfg)  # (B, frames, M)
    db = 10.0 * torch.log10(torch.clamp(mels, min=1e-10))
    floor = db.amax(dim=(1, 2), keepdim=True) - 80.0  # top_db per utterance
    db = torch.maximum(db, floor)
    return db - db.mean(dim=1, keepdim=True) if cfg.mean_norm else db


def checkpoint_fbank(ckpt: dict) -> FbankConfig:
    """The front end a checkpoint was trained with: ``meta["fbank"]`` (an imported model's, e.g.
    WeSpeaker's hamming window), else the default Kaldi fbank with ``config["feat_dim"]`` bins."""
    from models.config import from_dict

    meta = ckpt.get("meta") or {}
    if meta.get("fbank"):
        return from_dict(FbankConfig, dict(meta["fbank"]), path="meta.fbank")
    feat_dim = (ckpt.get("config") or {}).get("feat_dim")
    return FbankConfig() if feat_dim is None else FbankConfig(num_mel_bins=int(feat_dim))


@dataclass(frozen=True)
class Ge2eMelConfig:
    """resemblyzer's encoder input: its ``preprocess_wav`` volume step, ``wav_to_mel_spectrogram``
    and the zero padding that ``VoiceEncoder.embed_utterance`` gives the last partial utterance."""

    sample_rate: int = 16000  # Hz; input waveforms must already be at this rate
    num_mel_bins: int = 40
    frame_length: float = 25.0  # ms: window and FFT size (400 samples at 16 kHz)
    frame_shift: float = 10.0  # ms: hop (160 samples at 16 kHz)
    # Clips quieter than this RMS level (dBFS) are raised to it, louder ones are left alone
    # (resemblyzer's normalize_volume(-30, increase_only=True)); None turns it off.
    target_dbfs: float | None = -30.0
    partial_frames: int = 160  # frames per partial utterance (1.6 s)
    partial_step: int = 77  # frames between partial starts (resemblyzer's rate=1.3/s: 100/1.3)
    min_coverage: float = 0.75  # a last partial is kept when the clip covers this much of it

    @property
    def win(self) -> int:
        return int(self.sample_rate * self.frame_length / 1000)

    @property
    def hop(self) -> int:
        return int(self.sample_rate * self.frame_shift / 1000)


def ge2e_partial_starts(num_samples: int, cfg: Ge2eMelConfig = Ge2eMelConfig()) -> list[int]:
    """First frames of the partial utterances of a clip of ``num_samples`` (at least one).

    Partials of ``partial_frames`` start every ``partial_step`` frames until one reaches past the
    clip's centred STFT frames (``1 + num_samples // hop``); that last one is kept when the
    clip's samples cover ``min_coverage`` of its span, else dropped (unless it is the only one).
    The rule of resemblyzer's ``VoiceEncoder.compute_partial_slices``.
    """
    frames = 1 + num_samples // cfg.hop
    last = max(0, frames - cfg.partial_frames + cfg.partial_step)
    starts = list(range(0, last + 1, cfg.partial_step))
    span = cfg.partial_frames * cfg.hop
    coverage = (num_samples - starts[-1] * cfg.hop) / span
    if coverage < cfg.min_coverage and len(starts) > 1:
        starts.pop()
    return starts


def raise_volume(wav: torch.Tensor, target_dbfs: float) -> torch.Tensor:
    """``wav: (B, T)`` -> each row scaled up to ``target_dbfs`` RMS if it is quieter (a silent
    row is left as it is). dBFS of a float waveform in [-1, 1]: ``20 log10(rms)``."""
    rms = wav.pow(2).mean(dim=-1, keepdim=True).sqrt()  # (B, 1)
    gain_db = target_dbfs - 20 * torch.log10(rms.clamp_min(1e-20))
    gain = torch.where((gain_db > 0) & (rms > 0), 10 ** (gain_db / 20), torch.ones_like(rms))
    return wav * gain


class Ge2eMel(torch.nn.Module):
    """``wav: (T,) or (B, T) float32 at cfg.sample_rate`` -> ``(B, frames, num_mel_bins)`` power
    mel spectrogram (not log), ``frames = num_frames(T, cfg)``.

    The input resemblyzer's GE2E encoder was trained on: the clip raised to ``target_dbfs``
    (quieter clips only), zero-padded to the span of its partial utterances
    (:func:`ge2e_partial_starts`), then a power spectrogram with a periodic Hann window of
    ``win`` samples (FFT size = window), ``hop`` hop, frames centred on the samples with zeros
    beyond the ends, and ``num_mel_bins`` Slaney-scale, Slaney-normalised triangular filters over
    0 .. sample_rate/2. These are librosa's ``melspectrogram`` defaults; the frames are cut to
    the partials' span, so the model's windows (``models/speaker/ge2e.py``) cover exactly the
    frames resemblyzer feeds. Silence trimming (resemblyzer's webrtcvad step) is not done here:
    callers hand in speech (diarization runs its own VAD first).
    """

    def __init__(self, cfg: Ge2eMelConfig = Ge2eMelConfig()) -> None:
        super().__init__()
        self.cfg = cfg
        n_freqs = cfg.win // 2 + 1
        fb = AF.melscale_fbanks(
            n_freqs,
            f_min=0.0,
            f_max=cfg.sample_rate / 2,
            n_mels=cfg.num_mel_bins,
            sample_rate=cfg.sample_rate,
            norm="slaney",
            mel_scale="slaney",
        )
        self.register_buffer("mel_fb", fb.float(), persistent=False)  # (n_freqs, mels)
        self.register_buffer("window", torch.hann_window(cfg.win), persistent=False)

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        if wav.dim() == 1:
            wav = wav.unsqueeze(0)
        if wav.dim() != 2:
            raise ValueError(f"Ge2eMel expects (T,) or (B, T) audio, got shape {tuple(wav.shape)}")
        cfg = self.cfg
        n = wav.shape[-1]
        if n < min_samples(cfg):
            raise ValueError(
                f"audio of {n} samples is shorter than one {cfg.frame_length} ms frame at "
                f"{cfg.sample_rate} Hz"
            )
        x = wav.float()
        if cfg.target_dbfs is not None:
            x = raise_volume(x, cfg.target_dbfs)
        frames = num_frames(n, cfg)
        x = F.pad(x, (0, max(0, frames * cfg.hop - n)))  # zeros up to the last partial's end
        spec = torch.stft(
            x,
            n_fft=cfg.win,
            hop_length=cfg.hop,
            win_length=cfg.win,
            window=self.window.to(x.device),
            center=True,
            pad_mode="constant",
            return_complex=True,
        )  # (B, n_freqs, 1 + len // hop)
        power = spec.real.pow(2) + spec.imag.pow(2)
        mel = torch.matmul(power.transpose(1, 2), self.mel_fb.to(x.device))  # (B, frames', mels)
        return mel[:, :frames]


FrontEndConfig = FbankConfig | Ge2eMelConfig


def front_end(cfg: FrontEndConfig) -> torch.nn.Module:
    """The front-end module of ``cfg``: :class:`Fbank` or :class:`Ge2eMel`."""
    if isinstance(cfg, Ge2eMelConfig):
        return Ge2eMel(cfg)
    if isinstance(cfg, FbankConfig):
        return Fbank(cfg)
    raise TypeError(f"no front end for {type(cfg).__name__}; expected FbankConfig or Ge2eMelConfig")
