import sys

sys.modules.setdefault("ray", None)

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from datasets.rttm import parse_rttm  # noqa: E402
from datasets.synth import sample_voice, synthesize_utterance  # noqa: E402
from models import build_model  # noqa: E402
from models.metrics import diarization_error_rate  # noqa: E402
from models.pipelines.clustering import ClusteringConfig  # noqa: E402
from models.pipelines.diarize import (  # noqa: E402
    DiarizationConfig,
    DiarizationResult,
    Diarizer,
    Segment,
    assemble,
    name_clusters,
    windows,
)
from models.pipelines.speaker import SpeakerEmbedder  # noqa: E402
from models.pipelines.vad import SileroVAD  # noqa: E402

SR = 16000


def _conversation(seed=0, n_speakers=3, n_turns=9):
    """Alternating synthetic speakers: -> (wav, truth [(start, end, spk)], speech regions).

    Most turns are separated by 0.4-1 s of silence; every third change is immediate (no
    pause), so the assembly must place a speaker change inside one speech region.
    """
    rng = np.random.default_rng(seed)
    voices = [sample_voice(rng) for _ in range(n_speakers)]
    parts, truth, regions, t = [np.zeros(int(0.5 * SR), np.float32)], [], [], 0.5
    order = [k % n_speakers for k in range(n_turns)]
    for i, spk in enumerate(order):
        dur = float(rng.uniform(2.0, 3.5))
        parts.append(synthesize_utterance(voices[spk], dur, SR, rng))
        truth.append((t, t + dur, f"s{spk}"))
        if regions and abs(regions[-1][1] - t) < 1e-9:
            regions[-1] = (regions[-1][0], t + dur)
        else:
            regions.append((t, t + dur))
        t += dur
        gap = 0.0 if i % 3 == 2 else float(rng.uniform(0.4, 1.0))
        parts.append(np.zeros(int(round(gap * SR)), np.float32))
        t = round(t + gap, 6)
        t = sum(len(p) for p in parts) / SR  # sample-exact time
    parts.append(np.zeros(int(0.5 * SR), np.float32))
    return np.concatenate(parts), truth, regions


@pytest.fixture(scope="module")
def conversation():
    return _conversation()


class OracleVAD:
    """Returns the known speech regions (test double for SileroVAD)."""

    def __init__(self, regions):
        self.regions = regions

    def __call__(self, wav, sample_rate):
        return list(self.regions)


class PerfectEmbedder:
    """Embeds the i-th window it is asked for as the one-hot vector of the true speaker that
    talks most in the i-th of the windows the diarizer will cut (test double)."""

    sample_rate = SR
    embed_dim = 8

    def __init__(self, wins, truth, seed=0):
        self.wins, self.truth, self.i = wins, truth, 0
        self.rng = np.random.default_rng(seed)
        self.ids = {spk: k for k, spk in enumerate(sorted({t[2] for t in truth}))}

    def embed_batch(self, clips, sample_rate):
        out = np.zeros((len(clips), self.embed_dim), np.float32)
        for j, clip in enumerate(clips):
            s, e = self.wins[self.i]
            assert len(clip) == int(round((e - s) * sample_rate))
            self.i += 1
            ov = {}
            for a, b, spk in self.truth:
                ov[spk] = ov.get(spk, 0.0) + max(0.0, min(b, e) - max(a, s))
            out[j, self.ids[max(ov, key=ov.get)]] = 1.0
        out += 0.05 * self.rng.standard_normal(out.shape).astype(np.float32)
        return out / np.linalg.norm(out, axis=1, keepdims=True)


def _check_structure(res: DiarizationResult, regions, duration):
    segs = res.segments
    assert all(s.start < s.end for s in segs)
    assert all(segs[i].end <= segs[i + 1].start + 1e-9 for i in range(len(segs) - 1))
    for s in segs:  # inside speech regions (up to the 10 ms frame grid)
        assert any(a - 0.011 <= s.start and s.end <= b + 0.011 for a, b in regions)
    seen = []
    for s in segs:
        if s.speaker not in seen:
            seen.append(s.speaker)
    assert seen == [f"SPEAKER_{k:02d}" for k in range(len(seen))]
    assert res.num_speakers == len(seen) == len(res.cluster_labels)
    assert res.cluster_centroids.shape[0] == res.num_speakers
    np.testing.assert_allclose(np.linalg.norm(res.cluster_centroids, axis=1), 1.0, atol=1e-5)
    assert set(res.timings) == {"vad", "embedding", "clustering"}
    assert res.duration == pytest.approx(duration)


def test_windows_cover_regions_with_equal_lengths():
    cfg = DiarizationConfig(window_seconds=1.5, hop_seconds=0.75, min_window_seconds=0.5)
    wins = windows([(0.0, 4.0), (5.0, 5.2), (9.9, 10.0)], 10.0, cfg)
    long = [w for w in wins if w[1] <= 4.0]
    assert [round(s, 3) for s, _ in long] == [0.0, 0.75, 1.5, 2.25, 2.5]
    assert all(e - s == pytest.approx(1.5) for s, e in long)
    assert wins[-2] == pytest.approx((4.85, 5.35))  # short region extended, centred
    assert wins[-1] == pytest.approx((9.5, 10.0))  # clipped at the end, grown to the left
    assert windows([], 10.0, cfg) == []


def test_assemble_changes_at_midpoint_and_merges():
    cfg = DiarizationConfig(min_segment_seconds=0.3)
    wins = [(0.0, 1.5), (0.75, 2.25), (1.5, 3.0), (2.25, 3.75)]
    segs = assemble(wins, [3, 3, 1, 1], 4.0, cfg)
    # centres 0.75, 1.5 | 2.25, 3.0: change at the midpoint between 1.5 and 2.25
    assert [s.speaker for s in segs] == ["SPEAKER_00", "SPEAKER_01"]
    assert segs[0].start == 0.0 and segs[0].end == pytest.approx(1.875, abs=0.006)
    assert segs[1].start == segs[0].end and segs[1].end == 3.75
    # a tiny isolated turn is absorbed by its touching neighbour
    segs = assemble(wins, [0, 0, 1, 0], 4.0, cfg, regions=[(0.0, 3.75)])
    assert len(segs) >= 1 and segs[0].start == 0.0 and segs[-1].end == 3.75
    tiny = assemble([(0.0, 0.2)], [0], 1.0, cfg)
    assert tiny == []  # isolated and shorter than min_segment_seconds


def test_perfect_embedder_gives_low_der(conversation):
    wav, truth, regions = conversation
    cfg = DiarizationConfig()
    wins = windows(regions, len(wav) / SR, cfg)
    emb = PerfectEmbedder(wins, truth)
    res = Diarizer(emb, vad=OracleVAD(regions), cfg=cfg)(wav, SR)
    assert emb.i == len(wins)
    _check_structure(res, regions, len(wav) / SR)
    assert res.num_speakers == 3
    der = diarization_error_rate(truth, [(s.start, s.end, s.speaker) for s in res.segments])
    assert der.der < 0.05, der
    # AHC recovers the same speakers
    res2 = Diarizer(
        PerfectEmbedder(wins, truth),
        vad=OracleVAD(regions),
        cfg=DiarizationConfig(clustering=ClusteringConfig(method="ahc")),
    )(wav, SR)
    d2 = diarization_error_rate(truth, [(s.start, s.end, s.speaker) for s in res2.segments])
    assert d2.der < 0.05


def test_untrained_model_structure_and_rttm(conversation):
    wav, truth, regions = conversation
    torch.manual_seed(0)
    embedder = SpeakerEmbedder(build_model("ecapa_tdnn-tiny").eval())
    vad = SileroVAD()
    diarizer = Diarizer(embedder, vad=vad)
    detected = vad(wav, SR)
    assert detected, "Silero should detect the synthetic speech"
    res = diarizer(wav, SR, num_speakers=2)
    _check_structure(res, detected, len(wav) / SR)
    assert res.num_speakers == 2
    res1 = diarizer(wav, SR, max_speakers=1)
    assert res1.num_speakers == 1
    back = parse_rttm(res.to_rttm("conv"))["conv"]
    assert len(back) == len(res.segments)
    for (s, e, spk), seg in zip(back, res.segments, strict=True):
        assert (s, spk) == (pytest.approx(seg.start, abs=1e-3), seg.speaker)
        assert e == pytest.approx(seg.end, abs=2e-3)
    js = res.to_json()
    assert js["num_speakers"] == 2 and len(js["segments"]) == len(res.segments)


def test_silence_empty_and_short_audio():
    torch.manual_seed(0)
    embedder = SpeakerEmbedder(build_model("ecapa_tdnn-tiny").eval())
    d = Diarizer(embedder)
    for wav in (np.zeros(0, np.float32), np.zeros(2 * SR, np.float32)):
        res = d(wav, SR)
        assert res.segments == [] and res.num_speakers == 0
        assert res.cluster_centroids.shape == (0, embedder.embed_dim)
        assert res.to_rttm("x") == ""
    # 1 s of speech, shorter than one window: one window covering it
    rng = np.random.default_rng(3)
    clip = synthesize_utterance(sample_voice(rng), 1.0, SR, rng)
    wav = np.concatenate([np.zeros(SR // 4, np.float32), clip])
    res = Diarizer(embedder, vad=OracleVAD([(0.25, 1.25)]))(wav, SR)
    assert res.num_speakers == 1
    assert res.segments == [Segment(0.25, 1.25, "SPEAKER_00")]


def test_name_clusters_open_set():
    eye = np.eye(4)
    centroids = np.stack([eye[1], eye[0] + 0.1 * eye[2], eye[3]])
    gallery = {"alice": eye[0], "bob": eye[1], "carol": eye[2]}
    names = name_clusters(centroids, gallery, threshold=0.5)
    assert names == {0: "bob", 1: "alice", 2: None}  # cluster 2 matches nobody enrolled
    # one-to-one: two clusters near alice, only one gets her; the other's match is too weak
    names = name_clusters(np.stack([eye[0], eye[0] + 0.2 * eye[1]]), gallery, threshold=0.5)
    assert names == {0: "alice", 1: None}
    res = DiarizationResult(
        [Segment(0, 1, "SPEAKER_00"), Segment(1, 2, "SPEAKER_01")],
        2,
        2.0,
        {},
        np.stack([eye[1], eye[3]]).astype(np.float32),
        ["SPEAKER_00", "SPEAKER_01"],
    )
    named = res.with_names(name_clusters(res.cluster_centroids, gallery, threshold=0.5))
    assert [s.speaker for s in named.segments] == ["bob", "SPEAKER_01"]
    assert named.cluster_labels == ["bob", "SPEAKER_01"]
    assert res.segments[0].speaker == "SPEAKER_00"  # the original is untouched
    assert name_clusters(res.cluster_centroids, {}, 0.5) == {0: None, 1: None}


class CloseVoicesEmbedder(PerfectEmbedder):
    """``PerfectEmbedder`` whose first two speakers' directions have cosine 0.65 (similar
    voices): whether they are one speaker is the threshold's decision."""

    def embed_batch(self, clips, sample_rate):
        out = super().embed_batch(clips, sample_rate)
        mix = np.eye(self.embed_dim, dtype=np.float32)
        mix[1, 0] = 0.65 / np.sqrt(1 - 0.65**2)  # speaker 1 leans towards speaker 0
        out = out @ mix
        return out / np.linalg.norm(out, axis=1, keepdims=True)


def test_clustering_threshold_from_the_calibration_record(conversation, tmp_path):
    from models.calibration import (
        calibration_from_metrics,
        eer_threshold,
        read_calibration,
        write_calibration,
    )
    from models.pipelines.diarize import calibrated_threshold

    wav, truth, regions = conversation
    ahc = DiarizationConfig(clustering=ClusteringConfig(method="ahc"))
    wins = windows(regions, len(wav) / SR, ahc)

    def run(t_eer, cfg=ahc):
        d = Diarizer(CloseVoicesEmbedder(wins, truth), OracleVAD(regions), cfg, t_eer)
        return d, d(wav, SR).num_speakers

    ckpt = tmp_path / "m.pt"
    metrics = {"eer": 0.05, "eer_threshold": 0.8, "num_trials": 10}
    write_calibration(ckpt, "m:1", calibration_from_metrics(metrics, data="dev"))
    strict = eer_threshold(read_calibration(ckpt, "m:1"))
    d, k = run(strict)  # same speaker needs cosine >= 0.8: the similar voices stay apart
    assert d.threshold_source == "calibration"
    assert d.cfg.clustering.threshold == pytest.approx(1 - 0.8) == calibrated_threshold(0.8)
    assert k == 3
    assert run(0.5)[1] == 2  # a lenient model: cosine 0.65 is the same speaker
    explicit = DiarizationConfig(clustering=ClusteringConfig(method="ahc", threshold=0.5))
    d, k = run(0.8, explicit)  # an explicit threshold wins over the record
    assert (d.threshold_source, d.cfg.clustering.threshold, k) == ("config", 0.5, 2)
    d, _ = run(None)
    assert (d.threshold_source, d.cfg.clustering.threshold) == ("default", 0.5)
    assert calibrated_threshold(0.6, offset=0.1) == pytest.approx(0.5)
