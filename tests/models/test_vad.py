import sys

sys.modules.setdefault("ray", None)

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from datasets.audio import load_audio  # noqa: E402
from models.pipelines.vad import SileroVAD, VADConfig  # noqa: E402
from models.waveform import resample  # noqa: E402

LIBRI = "speech/librispeech-train-clean-100/103-1240-0000.flac"


@pytest.fixture(scope="module")
def vad():
    return SileroVAD()


@pytest.fixture(scope="module")
def padded_speech(real_data):
    wav, sr = load_audio(real_data / LIBRI)
    wav = wav[: 6 * sr]  # 6 s is plenty and keeps the test fast
    rng = np.random.default_rng(0)
    pad = (1e-4 * rng.standard_normal(2 * sr)).astype(np.float32)
    # speech onset inside the clip: first 20 ms frame 20 dB above the recording's noise floor
    frames = wav[: len(wav) // 320 * 320].reshape(-1, 320)
    energy = 10 * np.log10(np.mean(frames**2, axis=1) + 1e-12)
    onset = 2.0 + np.flatnonzero(energy > np.percentile(energy, 10) + 20)[0] * 0.02
    return np.concatenate([pad, wav, pad]), sr, onset


@pytest.mark.realdata
def test_one_region_at_speech_onset(vad, padded_speech):
    wav, sr, onset = padded_speech
    regions = vad(wav, sr)
    assert len(regions) >= 1
    assert abs(regions[0][0] - onset) < 0.3
    assert regions[-1][1] <= len(wav) / sr - 1.7  # trailing 2 s of silence stays silent
    starts = [s for s, _ in regions]
    assert starts == sorted(starts)
    assert all(s < e for s, e in regions)
    assert all(regions[i][1] < regions[i + 1][0] for i in range(len(regions) - 1))
    assert sum(e - s for s, e in regions) > 3.0  # of 5.5 s after the onset, with pauses


@pytest.mark.realdata
@pytest.mark.parametrize("rate", [8000, 44100])
def test_other_sample_rates(vad, padded_speech, rate):
    wav, sr, onset = padded_speech
    regions = vad(resample(wav, sr, rate), rate)
    assert regions and abs(regions[0][0] - onset) < 0.3
    assert regions[-1][1] <= len(wav) / sr - 1.7


def test_silence_and_noise_give_nothing(vad):
    rng = np.random.default_rng(0)
    assert vad(np.zeros(3 * 16000, dtype=np.float32), 16000) == []
    assert vad((3e-3 * rng.standard_normal(3 * 16000)).astype(np.float32), 16000) == []
    assert vad(np.zeros(0, dtype=np.float32), 16000) == []
    assert vad(np.zeros(100, dtype=np.float32), 16000) == []  # shorter than one chunk


def test_validation_and_threads():
    with pytest.raises(ValueError, match="threshold"):
        SileroVAD(VADConfig(threshold=1.5))
    with pytest.raises(ValueError, match="num_threads"):
        SileroVAD(VADConfig(num_threads=0))
    vad = SileroVAD(VADConfig(num_threads=2))
    with pytest.raises(ValueError, match="mono"):
        vad(np.zeros((2, 16000), dtype=np.float32), 16000)
    assert vad(np.zeros(16000, dtype=np.float32), 16000) == []
    assert vad._model.session.get_session_options().intra_op_num_threads == 2
