"""GE2E (``models/speaker/ge2e.py``), its front end (``Ge2eMel``) and the resemblyzer importer,
against the ``resemblyzer`` package on synthetic audio (real speech: ``test_ge2e_parity.py``).

resemblyzer is the reference: its partial-slice rule, mel spectrogram and volume step are what our
front end must reproduce, and its bundled weights are what the importer converts.
"""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

sys.modules.setdefault("ray", None)

from models import build_model, load_model  # noqa: E402
from models.features import (  # noqa: E402
    FbankConfig,
    Ge2eMel,
    Ge2eMelConfig,
    front_end,
    ge2e_partial_starts,
    num_frames,
    raise_volume,
)
from models.hub.importers import importer  # noqa: E402
from models.hub.importers import resemblyzer as rz_importer  # noqa: E402
from models.pipelines.speaker import SpeakerEmbedder  # noqa: E402

rz = pytest.importorskip("resemblyzer")
from resemblyzer import VoiceEncoder, audio  # noqa: E402

SR = 16000


def speechlike(n: int, seed: int = 0, level: float = 0.3) -> np.ndarray:
    """A pitch-modulated harmonic tone with noise: energy in many mel bands, like voiced speech."""
    rng = np.random.default_rng(seed)
    t = np.arange(n) / SR
    f0 = 140 + 30 * np.sin(2 * np.pi * 0.7 * t)
    phase = 2 * np.pi * np.cumsum(f0) / SR
    x = sum(np.sin(k * phase) / k for k in range(1, 12)) * (1 + 0.5 * np.sin(2 * np.pi * 3 * t))
    return (level * x / np.abs(x).max() + 0.003 * rng.standard_normal(n)).astype(np.float32)


@pytest.fixture(scope="module")
def encoder() -> VoiceEncoder:
    return VoiceEncoder("cpu", verbose=False)


@pytest.fixture(scope="module")
def ge2e():
    return rz_importer.import_installed().model


# Clip lengths around every branch of the slice rule: shorter than one window, one window, the
# coverage threshold of the second window (exactly at it and one sample either side), long clips.
LENGTHS = [400, 5000, 25_439, 25_600, 25_601, 31_840, 31_999, 32_000, 32_001, 44_000, 160_123]


@pytest.mark.parametrize("n", LENGTHS)
def test_partial_starts_and_span_follow_resemblyzer(n):
    _, mel_slices = VoiceEncoder.compute_partial_slices(n, rate=1.3, min_coverage=0.75)
    cfg = Ge2eMelConfig()
    assert ge2e_partial_starts(n, cfg) == [s.start for s in mel_slices]
    assert num_frames(n, cfg) == mel_slices[-1].stop


def test_mel_equals_resemblyzers():
    wav = speechlike(3 * SR + 77)
    ref = audio.wav_to_mel_spectrogram(wav)  # (frames, 40) power mel of the unpadded clip
    ours = Ge2eMel(Ge2eMelConfig(target_dbfs=None))(torch.from_numpy(wav))[0].numpy()
    k = min(len(ref), len(ours))
    assert k > 290
    np.testing.assert_allclose(ours[:k], ref[:k], rtol=1e-4, atol=1e-6 * ref.max())


@pytest.mark.parametrize("level", [0.003, 0.3])  # raised to -30 dBFS / left alone
def test_volume_step_equals_normalize_volume(level):
    wav = speechlike(SR, level=level)
    ref = audio.normalize_volume(wav, -30, increase_only=True)
    ours = raise_volume(torch.from_numpy(wav)[None], -30.0)[0].numpy()
    np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-8)
    assert raise_volume(torch.zeros(1, 100), -30.0).abs().sum() == 0  # silence stays silence


def test_model_windows_and_padding():
    torch.manual_seed(0)
    model = build_model("ge2e-tiny").eval()  # 40-frame windows every 20 frames
    x = torch.rand(1, 100, 40)
    with torch.no_grad():
        windows = torch.stack([model.embed_windows(x[:, s : s + 40]) for s in (0, 20, 40, 60)])
        want = torch.nn.functional.normalize(windows.mean(0), dim=-1)
        torch.testing.assert_close(model(x), want)
        # frames past the last window are unused; a short clip is padded with silence (zeros)
        torch.testing.assert_close(model(torch.cat([x, x[:, :19]], 1)), want)
        short = x[:, :25]
        torch.testing.assert_close(
            model(short), model.embed_windows(torch.cat([short, torch.zeros(1, 15, 40)], 1))
        )
    with pytest.raises(ValueError, match=r"mels \(B, T, 40\)"):
        model(torch.rand(1, 100, 80))


def test_network_and_utterance_embedding_equal_resemblyzer(encoder, ge2e):
    """Synthetic but exact: the same weights on the same frames, and whole clips at two
    volumes (one raised by the front end's volume step) through the speaker pipeline."""
    mels = torch.from_numpy(np.stack([audio.wav_to_mel_spectrogram(speechlike(SR * 2, s))[:160]
                                      for s in range(3)]))  # fmt: skip
    with torch.no_grad():
        assert (ge2e(mels) - encoder(mels)).abs().max() < 1e-5
    embedder = SpeakerEmbedder(ge2e)
    assert embedder.fbank_cfg == ge2e.front_end_config and embedder.embed_dim == 256
    for n, level in [(2 * SR + 555, 0.3), (5 * SR + 1234, 0.002), (SR // 2, 0.1)]:
        wav = speechlike(n, seed=n, level=level)
        ref = encoder.embed_utterance(audio.normalize_volume(wav, -30, increase_only=True))
        assert np.abs(embedder.embed(wav, SR) - ref).max() < 1e-4, (n, level)


def test_pipeline_takes_the_models_front_end(ge2e):
    cfg = ge2e.front_end_config
    assert isinstance(front_end(cfg), Ge2eMel)
    with pytest.raises(ValueError, match="not the front end this model reads"):
        SpeakerEmbedder(ge2e, fbank=FbankConfig(num_mel_bins=40))
    # batches group clips by frame count: equal to one-at-a-time embeddings
    embedder = SpeakerEmbedder(ge2e)
    wavs = [speechlike(n, seed=n) for n in (SR, 3 * SR, SR + 40, 3 * SR)]
    batch = embedder.embed_batch(wavs, SR)
    single = np.stack([embedder.embed(w, SR) for w in wavs])
    np.testing.assert_allclose(batch, single, atol=1e-5)
    # other rates are resampled to 16 kHz first
    assert embedder.embed(speechlike(8000, seed=1), 8000).shape == (256,)


def test_importer_detects_and_converts_voice_encoder_weights(ge2e, tmp_path):
    assert importer("resemblyzer") is rz_importer
    path = rz_importer.installed_weights()
    state = rz_importer.read_weights(path)
    assert rz_importer.detect(state) == "voice_encoder"
    assert rz_importer.detect({"xvector.weight": torch.zeros(1)}) is None
    imported = rz_importer.convert(state)
    assert imported.model.cfg == build_model("resemblyzer/voice_encoder").cfg
    assert imported.meta["dropped_keys"] == ["similarity_bias", "similarity_weight"]
    for k, v in imported.model.state_dict().items():
        assert torch.equal(v, state[k])
    # other sizes import too (read off the shapes), a bad arch or layout fails clearly
    small = {k: v for k, v in build_model("ge2e-tiny").state_dict().items()}
    assert rz_importer.convert(small).model.cfg.hidden_dim == 32
    with pytest.raises(KeyError, match="voice_encoder"):
        rz_importer.convert(state, arch="resnet34")
    with pytest.raises(ValueError, match="not a resemblyzer VoiceEncoder"):
        rz_importer.convert({"linear.weight": torch.zeros(2, 2)})
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"no")
    with pytest.raises(ValueError, match="not a readable"):
        rz_importer.read_weights(bad)


def test_import_checkpoint_cli(tmp_path, ge2e, caplog):
    from ray_jobs.import_checkpoint.cli import main

    out = tmp_path / "ge2e.pt"
    assert main(["--from", "resemblyzer", str(out)]) == 0
    model = load_model(out)
    ckpt = torch.load(out, weights_only=True)
    assert ckpt["model_name"] == "ge2e" and ckpt["meta"]["hub"] == "pip:resemblyzer"
    assert ckpt["meta"]["package_version"] == "0.1.4"
    for k, v in model.state_dict().items():
        assert torch.equal(v, ge2e.state_dict()[k])
    # an explicit VoiceEncoder weights file works too
    assert main(["--from", "resemblyzer", str(rz_importer.installed_weights()), str(out)]) == 0
    assert main(["--from", "resemblyzer", str(tmp_path / "none.pt"), str(out)]) == 2
    assert "does not exist" in caplog.text
    assert main(["--from", "3dspeaker", str(out)]) == 2  # 3dspeaker ships no weights: IN needed
    assert "give the published file IN" in caplog.text


def test_extraction_core_uses_the_ge2e_front_end(ge2e, tmp_path):
    """``ray_jobs.extract``'s Ray-free stages (featurize in CPU tasks, embed in model actors)
    with a GE2E model: each stored embedding equals ``SpeakerEmbedder.embed`` of its file."""
    import pyarrow.parquet as pq

    from datasets.audio import load_audio, write_audio
    from datasets.manifests import scan_tree
    from ray_jobs.extract.core import local_stream, run_extraction
    from ray_jobs.extract.output import OutputState

    for spk, seeds in {"a": (1, 2), "b": (3, 4)}.items():
        for s in seeds:
            write_audio(tmp_path / "data" / spk / f"u{s}.wav", speechlike(SR + 900 * s, s), SR)
    embedder = SpeakerEmbedder(ge2e)
    state = OutputState(model_id=embedder.model_id, embed_dim=embedder.embed_dim)
    run_extraction(scan_tree(tmp_path / "data"), tmp_path / "out", state, local_stream(embedder))
    rows = pq.read_table(tmp_path / "out" / "utterances.parquet").to_pylist()
    assert len(rows) == 4
    for r in rows:
        wav, sr = load_audio(r["path"], target_sr=SR)
        np.testing.assert_allclose(r["embedding"], embedder.embed(wav, sr), atol=1e-5)
