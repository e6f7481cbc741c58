"""Lyra v2 baseline: SoundStream-style TFLite encoder -> residual VQ -> LyraGAN decoder.

Lyra v2 (Google, github.com/google/lyra, 2022) is a 16 kHz streaming codec built on SoundStream
(Zeghidour et al. 2021, arXiv 2107.03312). Its released TFLite files
(``soundstream_encoder.tflite``, ``quantizer.tflite``, ``lyragan.tflite``) run one 20 ms frame
(320 samples) per call; the quantizer's ``encode`` takes the number of quantizers, each 4 bits,
so 3.2 / 6 / 9.2 kbps are 16 / 30 / 46 quantizers at 50 frames/s. Unused quantizer slots are
passed to ``decode`` as ``-1``, as the reference's C++ wrapper does (``lyra/residual_vector_
quantizer.cc``, read for understanding). The encoder and decoder keep streaming state inside
the interpreters, so each file gets fresh ones.

``ai_edge_litert`` is imported lazily and is not a project dependency: without it
:func:`lyra_available` is False and :func:`evaluate_lyra` returns ``None`` with a logged reason.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from datasets.ray_env import REPO_ROOT

log = logging.getLogger("ray_jobs.evaluate.lyra")

SAMPLE_RATE = 16000
FRAME = 320  # samples per 20 ms frame
BITS_PER_QUANTIZER = 4
MAX_QUANTIZERS = 46
BITRATES_KBPS = (3.2, 6.0, 9.2)
DEFAULT_DIR = REPO_ROOT.parent / "shared" / "data" / "baselines" / "lyra-v2"


def lyra_dir(path: str | os.PathLike | None = None) -> Path:
    return Path(path or os.environ.get("VOXRAY_LYRA_DIR", DEFAULT_DIR))


def lyra_available(path: str | os.PathLike | None = None) -> bool:
    """True when ``ai_edge_litert`` imports and the three TFLite files exist."""
    try:
        import ai_edge_litert.interpreter  # noqa: F401
    except ImportError:
        return False
    d = lyra_dir(path)
    return all(
        (d / f"{n}.tflite").is_file() for n in ("soundstream_encoder", "quantizer", "lyragan")
    )


def quantizers_for(kbps: float) -> int:
    """3.2 -> 16, 6 -> 30, 9.2 -> 46 (4 bits each at 50 frames/s)."""
    n = round(kbps * 1000 / (BITS_PER_QUANTIZER * SAMPLE_RATE / FRAME))
    if not 1 <= n <= MAX_QUANTIZERS:
        raise ValueError(f"Lyra v2 cannot run at {kbps} kbps (1..{MAX_QUANTIZERS} quantizers)")
    return n


class LyraCodec:
    """``roundtrip(wav (T,) float32 at 16 kHz, kbps) -> (T,) float32``: encode, quantise, decode."""

    def __init__(self, path: str | os.PathLike | None = None) -> None:
        from ai_edge_litert.interpreter import Interpreter

        self.dir = lyra_dir(path)
        self._interpreter = Interpreter

    def _runner(self, name: str, signature: str = "serving_default") -> Any:
        it = self._interpreter(model_path=str(self.dir / f"{name}.tflite"))
        return it.get_signature_runner(signature)

    def roundtrip(self, wav: np.ndarray, kbps: float) -> np.ndarray:
        n_q = quantizers_for(kbps)
        enc = self._runner("soundstream_encoder")
        q_enc, q_dec = self._runner("quantizer", "encode"), self._runner("quantizer", "decode")
        gan = self._runner("lyragan")
        x = np.asarray(wav, dtype=np.float32)
        x = np.pad(x, (0, -x.size % FRAME))
        out = []
        for i in range(0, x.size, FRAME):
            feats = enc(input_audio=x[None, i : i + FRAME])["output_0"]  # (1, 1, 64)
            codes = q_enc(input_frames=feats, num_quantizers=np.int32(n_q))["output_0"]
            codes = codes.copy()
            codes[n_q:] = -1  # unused slots
            lossy = q_dec(encoding_indices=codes)["output_0"]  # (1, 1, 64)
            out.append(gan(input_audio=lossy)["output_0"][0])  # (320,)
        return np.concatenate(out)[: wav.size].astype(np.float32)


def evaluate_lyra(
    files: list[str],
    *,
    lyra_dir: str | os.PathLike | None = None,
    bitrates: tuple[float, ...] = BITRATES_KBPS,
) -> list[dict[str, Any]] | None:
    """Mean quality (``ray_jobs.evaluate.codec.quality``) of Lyra per bitrate, or ``None``."""
    from datasets.audio import AudioError, load_audio
    from ray_jobs.evaluate.codec import _summary, quality

    if not lyra_available(lyra_dir):
        log.warning(
            "Lyra baseline skipped: needs the ai-edge-litert package (not a project dependency) "
            "and the TFLite files in %s",
            globals()["lyra_dir"](lyra_dir),
        )
        return None
    codec = LyraCodec(lyra_dir)
    results = []
    for kbps in bitrates:
        rows = []
        for path in files:
            try:
                wav, _ = load_audio(path, target_sr=SAMPLE_RATE)
            except AudioError as exc:
                log.warning("skipped %s: %s", path, exc)
                continue
            rows.append(quality(codec.roundtrip(wav, kbps), wav, SAMPLE_RATE))
        results.append({**_summary(rows), "bitrate_kbps": kbps, "num_files": len(rows)})
    return results
