"""GE2E parity on real speech: our import of resemblyzer's weights (``pip:resemblyzer``) gives
``resemblyzer.VoiceEncoder``'s embeddings within 1e-4 (max abs per dimension) on LibriSpeech.

Three levels, each on the same input for both:
- the network alone, on resemblyzer's own mel frames (1.6-s partials);
- utterance embeddings (``embed_utterance``: partials, mean, L2) of resemblyzer's fully
  preprocessed waveform (``preprocess_wav``: -30 dBFS volume step + webrtcvad silence
  trimming), through our speaker pipeline (``SpeakerEmbedder.embed``: our mel, our windows);
- the raw recording through our pipeline, against resemblyzer on the same recording after its
  volume step (our front end has that step; silence trimming is the one step it leaves out).

Measured (torch 2.11, librosa 0.11, 2 CPU threads): max abs difference about 2e-7 at every
level; the network alone is bit-identical.
"""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

sys.modules.setdefault("ray", None)

from datasets.audio import load_audio  # noqa: E402
from models.hub.importers import resemblyzer as rz_importer  # noqa: E402
from models.pipelines.speaker import SpeakerEmbedder  # noqa: E402

rz = pytest.importorskip("resemblyzer")

LIBRISPEECH = "speech/librispeech-train-clean-100"
# The shortest file (1.6 s: padded to one partial), short ones (2 partials, the second kept or
# dropped by the coverage rule) and a longer one (6.2 s: 7 partials).
FILES = ["1447-130550-0000", "403-126855-0000", "328-129766-0000", "1183-124566-0000"]
TOL = 1e-4


@pytest.fixture(scope="module")
def models():
    torch.set_num_threads(2)
    return rz.VoiceEncoder("cpu", verbose=False), SpeakerEmbedder(
        rz_importer.import_installed().model
    )


@pytest.mark.realdata
@pytest.mark.parametrize("name", FILES)
def test_embeddings_equal_resemblyzer_on_librispeech(real_data, models, name):
    encoder, embedder = models
    wav, sr = load_audio(real_data / LIBRISPEECH / f"{name}.flac", target_sr=16000)
    assert sr == 16000 and wav.size > 1.6 * sr

    pre = rz.preprocess_wav(wav)  # volume + VAD trimming, resemblyzer's recipe
    mel = rz.wav_to_mel_spectrogram(pre)
    mel = np.pad(mel, ((0, max(0, 160 - len(mel))), (0, 0)))  # trimmed below one window
    starts = range(0, max(1, len(mel) - 160 + 1), 77)
    frames = torch.from_numpy(np.stack([mel[s : s + 160] for s in starts if s + 160 <= len(mel)]))
    with torch.no_grad():  # (K, 160, 40): K clips of one window each
        net = (embedder.model(frames) - encoder(frames)).abs().max()
    assert net <= TOL, "network on the same frames"

    ours = embedder.embed(pre, 16000)
    ref = encoder.embed_utterance(pre)
    assert np.abs(ours - ref).max() <= TOL, "utterance embedding (preprocessed speech)"
    assert abs(np.linalg.norm(ours) - 1) < 1e-5

    raw = embedder.embed(wav, 16000)
    ref_raw = encoder.embed_utterance(rz.normalize_volume(wav, -30, increase_only=True))
    assert np.abs(raw - ref_raw).max() <= TOL, "utterance embedding (raw recording)"
    # and the two preprocessings are close but not the same input: the check above is not vacuous
    assert 0 < np.abs(raw - ours).max()
