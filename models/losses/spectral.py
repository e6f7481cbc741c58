"""STFT front end and the multi-resolution STFT loss shared by the codec and TSE tasks.

- ``stft`` / ``stft_magnitude``: Hann-windowed, centred (reflect-padded) STFT in float32, the one
  STFT every spectral loss in ``models/losses/`` uses (``codec.py``'s mel loss,
  ``separation.py``'s complex compressed loss, the loss below).
- ``multi_resolution_stft_loss``: the Parallel WaveGAN multi-resolution STFT loss (Yamamoto et
  al. 2020, arXiv 1910.11480, Sec. 2.3): spectral convergence ``||S_t - S_e||_F / ||S_t||_F``
  plus the L1 distance of the log magnitudes, averaged over (n_fft, hop) resolutions. It returns
  one value per sample so a task can mask samples out (TSE scores only target-present samples;
  the codec task takes the mean).

Read for understanding (not copied): kan-bayashi/ParallelWaveGAN ``parallel_wavegan/losses/
stft_loss.py`` and the asteroid-style MR-STFT.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

# Parallel WaveGAN's three resolutions as (n_fft, hop); hop = n_fft / 4
DEFAULT_RESOLUTIONS: tuple[tuple[int, int], ...] = ((512, 128), (1024, 256), (2048, 512))
# Floor under STFT magnitudes before the log (about -100 dB): silent bins give finite values and
# bounded gradients, and differences below it do not count.
MAGNITUDE_FLOOR = 1e-5


def as_batch(wav: torch.Tensor) -> torch.Tensor:
    """``(B, T)`` or ``(B, 1, T)`` audio -> ``(B, T)`` float32 (STFTs in fp32 even under
    autocast)."""
    if wav.dim() == 3:
        if wav.shape[1] != 1:
            raise ValueError(f"expected mono audio (B, 1, T), got {tuple(wav.shape)}")
        wav = wav[:, 0]
    if wav.dim() != 2:
        raise ValueError(f"expected audio (B, T) or (B, 1, T), got {tuple(wav.shape)}")
    return wav.float()


def check_pair(pred: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Both through :func:`as_batch`; raises ``ValueError`` unless they then have one shape."""
    pred, target = as_batch(pred), as_batch(target)
    if pred.shape != target.shape:
        raise ValueError(
            f"prediction {tuple(pred.shape)} and target {tuple(target.shape)} differ; "
            "crop the estimate to the target's length first"
        )
    return pred, target


def stft(wav: torch.Tensor, n_fft: int, hop: int) -> torch.Tensor:
    """``(B, T)`` -> complex ``(B, n_fft // 2 + 1, frames)``; Hann window of ``n_fft`` samples."""
    window = torch.hann_window(n_fft, device=wav.device, dtype=wav.dtype)
    return torch.stft(
        wav, n_fft, hop, n_fft, window, center=True, pad_mode="reflect", return_complex=True
    )


def stft_magnitude(wav: torch.Tensor, n_fft: int, hop: int, eps: float = 1e-6) -> torch.Tensor:
    """``(B, T)`` -> ``(B, n_fft // 2 + 1, frames)`` magnitude ``sqrt(|S|^2 + eps^2)``."""
    spec = stft(wav, n_fft, hop)
    # sqrt(x + eps^2) instead of abs(): abs has an infinite gradient at exactly zero (silence)
    return (spec.real.pow(2) + spec.imag.pow(2) + eps**2).sqrt()


def multi_resolution_stft_loss(
    est: torch.Tensor,
    target: torch.Tensor,
    *,
    resolutions: Sequence[Sequence[int]] = DEFAULT_RESOLUTIONS,
) -> torch.Tensor:
    """Spectral convergence + log-magnitude L1 averaged over ``resolutions`` of (n_fft, hop):
    ``est, target: (B, T)`` or ``(B, 1, T)``, any sample rate -> ``(B,)`` (zero iff the
    magnitudes match above ``MAGNITUDE_FLOOR``)."""
    est, target = check_pair(est, target)
    if not resolutions:
        raise ValueError("resolutions must name at least one (n_fft, hop) pair")
    total = est.new_zeros(est.shape[0])
    for n_fft, hop in resolutions:
        mag_e = stft_magnitude(est, int(n_fft), int(hop)).clamp_min(MAGNITUDE_FLOOR)
        mag_t = stft_magnitude(target, int(n_fft), int(hop)).clamp_min(MAGNITUDE_FLOOR)
        sc = torch.linalg.vector_norm(mag_t - mag_e, dim=(1, 2)) / torch.linalg.vector_norm(
            mag_t, dim=(1, 2)
        )  # >= MAGNITUDE_FLOOR * sqrt(bins) > 0, no division by zero
        log_mag = (mag_t.log() - mag_e.log()).abs().mean(dim=(1, 2))
        total = total + sc + log_mag
    return total / len(resolutions)
