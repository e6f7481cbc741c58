"""Diarization of a real two-person conversation (pyannote's 30 s sample) against its RTTM.

The pipeline is checked with the pretrained GE2E encoder (``pip:resemblyzer``: fixed published
weights, so the result is the same on every machine): DER 0.055 with the count given (collar
+-0.25 s, Silero VAD, 1.5 s windows / 0.75 s hop, spectral clustering), against 0.464 for all
speech as one speaker. The bound 0.15 leaves room for thread-count rounding, none for a
broken pipeline.

Why not the small model the session trains (``tests/speaker_model_fixture.py``): its seeded
training is not bit-reproducible across thread counts and machines, and on these two voices it
sits at the edge. Measured, count given: DER 0.231 in one run, 0.327 and 0.494 in clean-clone
CI runs; untrained 0.47. A bound on it would test the luck of that run, not the pipeline; the
count-estimate test below still uses it, with bounds its runs meet by a wide margin.

Earlier notes on that model:

Measured (collar +-0.25 s, overlap scored, Silero VAD, 1.5 s windows / 0.75 s hop, spectral
clustering with num_speakers=2): ``ecapa_tdnn-tiny`` (40 mel) trained by
``tests/speaker_model_fixture.py`` (400 AdamW steps, seed 0, LibriSpeech speakers only):
DER 0.231 (missed 0.009, confusion 0.222) in one run and 0.327 (missed 0.009, confusion 0.318)
in a clean-clone CI run: the seeded training is not bit-reproducible across thread counts and
machines, and this small model sits near the edge for these two voices. The same architecture
untrained: DER 0.47; the oracle-free single-speaker baseline (all VAD speech to one speaker):
DER 0.464. The bound 0.38 sits above both trained results and well below both baselines; the
second check demands at least 8 points over the single-speaker answer.
"""

import sys

sys.modules.setdefault("ray", None)

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from datasets.audio import load_audio  # noqa: E402
from datasets.rttm import read_rttm  # noqa: E402
from models.metrics import diarization_error_rate  # noqa: E402
from models.pipelines.diarize import Diarizer  # noqa: E402
from models.pipelines.speaker import SpeakerEmbedder  # noqa: E402
from tests.speaker_model_fixture import small_speaker_checkpoint  # noqa: E402, F401

SAMPLE = "diarization/pyannote-sample"
COLLAR = 0.25  # seconds on each side of every reference boundary (md-eval convention)
DER_BOUND = 0.15
SINGLE_SPEAKER_DER = 0.4639  # everything VAD finds given to one speaker (measured, see above)


@pytest.mark.realdata
def test_pretrained_model_diarizes_sample(real_data, tmp_path, monkeypatch):
    monkeypatch.setenv("VOXRAY_CACHE", str(tmp_path / "cache"))  # converted here, not reused
    torch.set_num_threads(2)
    wav, sr = load_audio(real_data / SAMPLE / "sample.wav")
    ref = read_rttm(real_data / SAMPLE / "sample.rttm")["sample"]
    diarizer = Diarizer(SpeakerEmbedder.from_checkpoint("pip:resemblyzer"))
    res = diarizer(wav, sr, num_speakers=2)
    hyp = [(s.start, s.end, s.speaker) for s in res.segments]
    single = diarization_error_rate(ref, [(s, e, "A") for s, e, _ in hyp], collar=COLLAR)
    der = diarization_error_rate(ref, hyp, collar=COLLAR)
    assert res.num_speakers == 2
    assert single.der == pytest.approx(SINGLE_SPEAKER_DER, abs=0.03)
    assert der.der < DER_BOUND, der
    assert der.der < single.der - 0.3  # far better than one speaker for everything


# --- the speaker-count estimate on real excerpts (default settings, count not given) ----------

LIBRI = "speech/librispeech-train-clean-100"
# The estimate before the count guards (models/pipelines/clustering.py): 2 neighbours per row,
# no eigengap check, no minimum cluster duration. It found 8 speakers in most 30-s excerpts.
PLAIN_NME = {
    "clustering.min_neighbours": 2,
    "clustering.eigengap_ratio": 0.0,
    "clustering.min_eigengap": 0.0,
    "clustering.min_cluster_seconds": 0.0,
}


def _libri(real_data, names):
    return [load_audio(real_data / LIBRI / f"{n}.flac", target_sr=16000)[0] for n in names]


def _one_speaker_der(ref, regions):
    return diarization_error_rate(ref, [(s, e, "A") for s, e in regions], collar=COLLAR).der


@pytest.mark.realdata
@pytest.mark.slow  # the session's small trained model takes minutes on a busy 2-core box
def test_estimated_count_on_real_excerpts(real_data, small_speaker_checkpoint):  # noqa: F811
    """One LibriSpeech speaker is one speaker (the plain estimate said several), a two-speaker
    conversation is two, and neither is worse than labelling all speech as one speaker."""
    from datasets.conversations import build_conversation
    from models.pipelines.diarize import diarization_config

    torch.set_num_threads(2)
    embedder = SpeakerEmbedder.from_checkpoint(small_speaker_checkpoint)
    diarizer = Diarizer(embedder)
    plain = Diarizer(embedder, diarizer.vad, diarization_config(PLAIN_NME))
    solo = np.concatenate(_libri(real_data, ["1040-133433-0000", "1069-133699-0000"])[:1])
    assert diarizer(solo, 16000).num_speakers == 1
    assert plain(solo, 16000).num_speakers > 1  # what the guards fix: fragments, not speakers

    recs = _libri(real_data, ["103-1240-0000", "1098-133695-0000"])
    wav, ref = build_conversation(recs, ["a", "b"], 16000, seconds=30.0, seed=3)
    res = diarizer(wav, 16000)
    hyp = [(s.start, s.end, s.speaker) for s in res.segments]
    der = diarization_error_rate(ref, hyp, collar=COLLAR).der
    single = _one_speaker_der(ref, diarizer.vad(wav, 16000))
    assert res.num_speakers == 2
    assert der < single - 0.1, (der, single)
