"""Diarization of a real two-person conversation (pyannote's 30 s sample) against its RTTM.

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
DER_BOUND = 0.38
SINGLE_SPEAKER_DER = 0.4639  # everything VAD finds given to one speaker (measured, see above)


@pytest.mark.realdata
@pytest.mark.slow
def test_trained_model_diarizes_sample(real_data, small_speaker_checkpoint):  # noqa: F811
    torch.set_num_threads(2)
    wav, sr = load_audio(real_data / SAMPLE / "sample.wav")
    ref = read_rttm(real_data / SAMPLE / "sample.rttm")["sample"]
    diarizer = Diarizer(SpeakerEmbedder.from_checkpoint(small_speaker_checkpoint))
    res = diarizer(wav, sr, num_speakers=2)
    hyp = [(s.start, s.end, s.speaker) for s in res.segments]
    single = diarization_error_rate(ref, [(s, e, "A") for s, e, _ in hyp], collar=COLLAR)
    der = diarization_error_rate(ref, hyp, collar=COLLAR)
    assert res.num_speakers == 2
    assert single.der == pytest.approx(SINGLE_SPEAKER_DER, abs=0.03)
    assert der.der < DER_BOUND, der
    assert der.der < single.der - 0.08  # clearly better than one speaker for everything
