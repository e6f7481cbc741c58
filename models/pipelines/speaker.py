"""Speaker-embedding facade used by jobs and Serve: waveform in, L2-normalised embedding out.

Bundles a registered ``speaker``-family model with its front end (``models/features.py``: the
Kaldi fbank, or the model's own ``front_end_config`` such as GE2E's mel) and sample rate, the shape of torchaudio's pipeline bundles
(``torchaudio/pipelines/_source_separation_pipeline.py``) and of pyannote's ``Inference`` (the
model knows nothing about audio lengths, batching or devices). It takes waveforms plus a sample
rate, never paths: decoding files is ``datasets/audio.py``'s job.

Scoring is the cosine similarity of normalised embeddings, as in 3D-Speaker and WeSpeaker.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from models.checkpoint import model_from_checkpoint, read_checkpoint
from models.features import (
    FbankConfig,
    FrontEndConfig,
    checkpoint_fbank,
    front_end,
    min_samples,
    num_frames,
)
from models.hub import resolve_checkpoint
from models.pipelines.scoring import cosine
from models.waveform import AudioError, mono_float32, resample


def _hash_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _hash_state_dict(model: nn.Module) -> str:
    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def checkpoint_model_id(path: str | os.PathLike, model: nn.Module) -> str:
    """``"<model name>:<first 12 hex digits of the checkpoint file's sha256>"``."""
    name = getattr(model, "registry_name", type(model).__name__)
    return f"{name}:{_hash_file(Path(path))[:12]}"


def embedder_input(
    wav: np.ndarray | torch.Tensor,
    sample_rate: int,
    fbank: FrontEndConfig,
    min_seconds: float = 0.0,
) -> torch.Tensor:
    """The embedders' input check: one mono clip at ``sample_rate`` Hz -> ``(T',) float32`` at
    ``fbank.sample_rate``. Raises ``AudioError`` for what ``mono_float32`` rejects, clips shorter
    than ``min_seconds`` and clips shorter than one front-end frame. Also used where features are
    computed apart from the embedder (``ray_jobs/extract``), so both reject the same audio."""
    x = mono_float32(wav, sample_rate)
    seconds = x.numel() / sample_rate
    if seconds < min_seconds:
        raise AudioError(
            f"audio is {seconds:.3f} s long; this embedder needs at least {min_seconds:g} s"
        )
    if sample_rate != fbank.sample_rate:
        x = resample(x, int(sample_rate), fbank.sample_rate)
    if x.numel() < min_samples(fbank):
        raise AudioError(
            f"audio is {seconds * 1000:.1f} ms long, shorter than one "
            f"{fbank.frame_length:g} ms fbank frame"
        )
    return x


class WaveformEmbedder:
    """Front end shared by every embedder backend: validation, resampling, features (``fbank``:
    a ``FbankConfig``, or another ``models.features`` front-end config such as
    ``Ge2eMelConfig``), exact length-aware batching, finiteness checks and scoring.

    A backend (``SpeakerEmbedder`` for PyTorch, ``OnnxSpeakerEmbedder`` for ONNX Runtime)
    implements ``embed_feats(feats: (B, T, F)) -> (B, D)`` L2-normalised ``torch.Tensor`` and the
    ``embed_dim`` and ``model_id`` properties; everything from waveforms to embeddings is here.
    """

    def __init__(
        self, fbank: FrontEndConfig, *, max_batch_frames: int = 60_000, min_seconds: float = 0.0
    ) -> None:
        if max_batch_frames < 1:
            raise ValueError(f"max_batch_frames must be >= 1, got {max_batch_frames}")
        self.fbank_cfg = fbank
        self.fbank = front_end(fbank)
        self.max_batch_frames = int(max_batch_frames)
        self.min_seconds = float(min_seconds)

    # -- backend surface ---------------------------------------------------------------------
    def embed_feats(self, feats: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    @property
    def embed_dim(self) -> int:  # pragma: no cover - abstract
        raise NotImplementedError

    @property
    def model_id(self) -> str:  # pragma: no cover - abstract
        raise NotImplementedError

    @property
    def sample_rate(self) -> int:
        """Rate (Hz) the front end runs at; other rates are resampled to it."""
        return self.fbank_cfg.sample_rate

    def _check_feats(self, feats: torch.Tensor) -> None:
        if feats.dim() != 3 or feats.shape[-1] != self.fbank_cfg.num_mel_bins:
            raise ValueError(
                f"expected fbank (B, T, {self.fbank_cfg.num_mel_bins}), got {tuple(feats.shape)}"
            )

    # -- input handling ----------------------------------------------------------------------
    def _prepare(self, wav: np.ndarray | torch.Tensor, sample_rate: int) -> torch.Tensor:
        """Validate one mono clip and resample it: -> ``(T',) float32`` at ``self.sample_rate``."""
        return embedder_input(wav, sample_rate, self.fbank_cfg, self.min_seconds)

    # -- embedding ---------------------------------------------------------------------------
    def embed(self, wav: np.ndarray | torch.Tensor, sample_rate: int) -> np.ndarray:
        """``wav: (T,)`` float at ``sample_rate`` Hz -> ``(D,)`` float32, unit L2 norm.

        Raises ``AudioError`` (a ``ValueError``) for empty, non-finite or too-short audio.
        """
        x = self._prepare(wav, sample_rate)
        with torch.inference_mode():
            feats = self.fbank(x.unsqueeze(0))  # (1, frames, mels)
            emb = self.embed_feats(feats)[0].cpu().numpy()
        self._check_finite(emb[None], [feats.shape[1]])
        return emb

    def embed_batch(
        self, wavs: list[np.ndarray] | list[torch.Tensor], sample_rate: int
    ) -> np.ndarray:
        """``N`` clips ``(T_i,)`` at ``sample_rate`` -> ``(N, D)`` float32, rows in input order.

        Exact by construction: each clip's fbank is computed alone (as in ``embed``), and clips
        are batched through the model only with clips of the *same number of frames*, so no
        padding or cropping ever reaches the statistics pooling. Each row therefore equals
        ``embed(wavs[i])`` up to float reordering in batched kernels (~1e-6). Padding with masks
        would need every architecture to support masks, and cropping to a bucket length changes
        the embedding; exact grouping costs little in practice: large corpora have many clips per
        frame count (10 ms resolution), and callers feeding duration-sorted chunks (as
        ``ray_jobs/evaluate/speaker.py`` does) get full batches. Groups are split so that
        ``batch * frames <= max_batch_frames``. Raises ``AudioError`` naming the index of
        the first unusable clip.
        """
        if len(wavs) == 0:
            return np.zeros((0, self.embed_dim), dtype=np.float32)
        prepared = []
        for i, wav in enumerate(wavs):
            try:
                prepared.append(self._prepare(wav, sample_rate))
            except AudioError as exc:
                raise AudioError(f"clip {i}: {exc}") from exc
        frames = np.array([num_frames(x.numel(), self.fbank_cfg) for x in prepared])
        order = np.argsort(frames, kind="stable")
        out = np.empty((len(prepared), self.embed_dim), dtype=np.float32)
        start = 0
        while start < len(order):
            t = int(frames[order[start]])
            cap = max(1, self.max_batch_frames // t)
            stop = start + 1
            while stop < len(order) and frames[order[stop]] == t and stop - start < cap:
                stop += 1
            idx = order[start:stop]
            with torch.inference_mode():
                feats = torch.cat([self.fbank(prepared[i].unsqueeze(0)) for i in idx])  # (b, t, M)
                out[idx] = self.embed_feats(feats).cpu().numpy()
            start = stop
        self._check_finite(out, frames)
        return out

    def _check_finite(self, emb: np.ndarray, frames: Any) -> None:
        bad = np.flatnonzero(~np.isfinite(emb).all(axis=1))
        if bad.size:
            k = int(bad[0])
            raise AudioError(
                f"clip {k}: the model produced a non-finite embedding from {int(frames[k])} "
                "frames; the clip is probably too short for this model (raise min_seconds)"
            )

    # -- scoring -----------------------------------------------------------------------------
    @staticmethod
    def score(a: np.ndarray | torch.Tensor, b: np.ndarray | torch.Tensor) -> float:
        """Cosine similarity of two embeddings ``(D,)`` (normalised here, so raw ones work too)."""
        return cosine(np.asarray(a), np.asarray(b))

    def verify(
        self,
        wav_a: np.ndarray | torch.Tensor,
        wav_b: np.ndarray | torch.Tensor,
        sample_rate: int,
        threshold: float,
    ) -> dict[str, float | bool]:
        """Same speaker? -> ``{"score": cosine, "same": score >= threshold, "threshold": ...}``.

        ``threshold`` is a tunable operating point, e.g. the ``eer_threshold`` that
        ``ray_jobs/evaluate/speaker.py`` reports for this model.
        """
        emb = self.embed_batch([wav_a, wav_b], sample_rate)
        s = self.score(emb[0], emb[1])
        return {"score": s, "same": bool(s >= threshold), "threshold": float(threshold)}


class SpeakerEmbedder(WaveformEmbedder):
    """Waveform -> L2-normalised speaker embedding, with a PyTorch model.

    ``model`` is a ``speaker``-family module (fbank ``(B, T, feat_dim)`` -> ``(B, embed_dim)``); it
    is put in eval mode and moved to ``device``. ``fbank`` defaults to the model's
    ``front_end_config`` where it has one (GE2E's mel), else the Kaldi fbank at 16 kHz with
    ``num_mel_bins = model.cfg.feat_dim``. ``max_batch_frames`` caps ``batch * frames`` per
    forward in ``embed_batch`` (memory); ``min_seconds`` rejects clips shorter than that (in
    seconds of input audio) on top of the hard minimum of one fbank frame (25 ms).
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        fbank: FrontEndConfig | None = None,
        device: str | torch.device = "cpu",
        max_batch_frames: int = 60_000,
        min_seconds: float = 0.0,
        model_id: str | None = None,
    ) -> None:
        cfg = getattr(model, "cfg", None)
        feat_dim = getattr(cfg, "feat_dim", None)
        own = getattr(model, "front_end_config", None)
        if fbank is None and own is not None:
            fbank = own
        elif fbank is None:
            fbank = FbankConfig() if feat_dim is None else FbankConfig(num_mel_bins=feat_dim)
        elif own is not None and fbank != own:
            raise ValueError(f"{fbank} is not the front end this model reads ({own})")
        elif feat_dim is not None and fbank.num_mel_bins != feat_dim:
            raise ValueError(
                f"fbank.num_mel_bins={fbank.num_mel_bins} but the model expects "
                f"feat_dim={feat_dim} features"
            )
        super().__init__(fbank, max_batch_frames=max_batch_frames, min_seconds=min_seconds)
        self.device = torch.device(device)
        self.model = model.eval().to(self.device)
        self._model_id = model_id
        self._embed_dim: int | None = getattr(cfg, "embed_dim", None)

    @classmethod
    def from_checkpoint(
        cls, path: str | os.PathLike, device: str | torch.device = "cpu", **kwargs: Any
    ) -> SpeakerEmbedder:
        """Load a voxray checkpoint (a file or a model name, ``models.hub.resolve_checkpoint``)
        with the front end it records (``models.features.checkpoint_fbank``); ``model_id`` is
        ``"<model name>:<first 12 hex digits of the file's sha256>"``."""
        path = resolve_checkpoint(path)
        ckpt = read_checkpoint(path)
        model = model_from_checkpoint(ckpt)
        kwargs.setdefault("model_id", checkpoint_model_id(path, model))
        return cls.from_checkpoint_dict(ckpt, device=device, model=model, **kwargs)

    @classmethod
    def from_checkpoint_dict(
        cls,
        ckpt: dict[str, Any],
        device: str | torch.device = "cpu",
        model: nn.Module | None = None,
        **kwargs: Any,
    ) -> SpeakerEmbedder:
        """An embedder of a checkpoint already read (``read_checkpoint``), e.g. one shipped to a
        Ray worker as a dict, with the front end it records: the model's own
        (``front_end_config``, GE2E's mel) or ``models.features.checkpoint_fbank``."""
        model = model_from_checkpoint(ckpt) if model is None else model
        if getattr(model, "front_end_config", None) is None:
            kwargs.setdefault("fbank", checkpoint_fbank(ckpt))
        return cls(model, device=device, **kwargs)

    # -- properties --------------------------------------------------------------------------
    @property
    def embed_dim(self) -> int:
        if self._embed_dim is None:  # a model without cfg.embed_dim: ask it once
            probe = torch.zeros(1, 200, self.fbank_cfg.num_mel_bins, device=self.device)
            with torch.inference_mode():
                self._embed_dim = int(self.model(probe).shape[-1])
        return self._embed_dim

    @property
    def model_id(self) -> str:
        """``name:sha12`` of the checkpoint file, or of the weights for an in-memory model."""
        if self._model_id is None:
            name = getattr(self.model, "registry_name", type(self.model).__name__)
            self._model_id = f"{name}:{_hash_state_dict(self.model)[:12]}"
        return self._model_id

    def embed_feats(self, feats: torch.Tensor) -> torch.Tensor:
        """``feats: (B, T, feat_dim)`` fbank -> ``(B, D)`` L2-normalised embeddings (float32)."""
        self._check_feats(feats)
        with torch.inference_mode():
            emb = self.model(feats.to(self.device, torch.float32))  # (B, D)
            return F.normalize(emb.float(), dim=-1)

    def __repr__(self) -> str:
        return (
            f"SpeakerEmbedder(model_id={self.model_id!r}, sample_rate={self.sample_rate}, "
            f"device={str(self.device)!r})"
        )
