"""Hostile inputs against the decoding, codec and path defences, over real HTTP on loopback.

One Serve app for the module: a tiny CAM++ speaker model, a tiny codec, an allowed folder.
Each test builds its own hostile input (decode bombs, 65 of them in one request, a codec stream
claiming an hour, a folder swapped for a symlink during requests, a symlink loop in an import
folder) and asserts the refusal code, a bounded time and, for the bombs, a bounded peak RSS of
the ingress replica (the process that decodes), read from ``/proc/<pid>/status`` (VmHWM, reset
through ``clear_refs`` before each attack).
"""

from __future__ import annotations

import io
import os
import shutil
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from tests.hostile_audio import flac_bomb, wav_bomb
from tests.serve.helpers import PRODUCT, app_args, b64, expect_error, running_app

pytestmark = pytest.mark.ray

APP = "security_decode"
MIB = 2**20


def _wav(seconds: float) -> bytes:
    x = 0.1 * np.random.default_rng(int(seconds * 10)).standard_normal(int(seconds * 16000))
    buf = io.BytesIO()
    sf.write(buf, x.astype(np.float32), 16000, format="WAV", subtype="PCM_16")
    return buf.getvalue()


@pytest.fixture(scope="module")
def env(ray_cluster, tmp_path_factory):
    import torch

    import models

    root = tmp_path_factory.mktemp("secdec")
    torch.manual_seed(0)
    speaker = models.save_checkpoint(models.build_model("campplus-tiny"), root / "s.pt")
    codec = models.save_checkpoint(models.build_model("tinystream-ultra_tiny"), root / "c.pt")
    allowed = root / "allowed"
    outside = root / "outside"
    allowed.mkdir()
    outside.mkdir()
    args = app_args(
        speaker,
        root,
        codecs={"tiny": {"checkpoint": str(codec), **PRODUCT}},
        allowed_roots=[str(allowed)],
        max_request_mb=30.0,  # room for 65 bombs in one body: the decoder must refuse them
        max_request_audio_seconds=100.0,
    )
    with running_app(args, APP, timeout=120) as client:
        yield {"client": client, "allowed": allowed.resolve(), "outside": outside.resolve()}


def _ingress_pid() -> int:
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                cmd = (d / "cmdline").read_bytes()
            except OSError:
                continue
            if f"ServeReplica:{APP}:VoxrayService".encode() in cmd:
                return int(d.name)
    pytest.skip("ingress replica process not found in /proc")


def _status_kib(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


class PeakRSS:
    """Peak RSS growth of a process over a block: VmHWM is reset to the current RSS first."""

    def __init__(self, pid: int) -> None:
        self.pid = pid

    def __enter__(self) -> PeakRSS:
        Path(f"/proc/{self.pid}/clear_refs").write_text("5")  # VmHWM := VmRSS
        self.start = _status_kib(self.pid, "VmRSS")
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        self.seconds = time.perf_counter() - self.t0
        self.growth_mib = (_status_kib(self.pid, "VmHWM") - self.start) / 1024


def test_decode_bombs_are_refused_before_decoding(env):
    """The issue's bombs: an 8 KB WAV claiming ~1 MHz, a 335 KB FLAC of 8 channels at 655 kHz
    (each over 0.9 GiB and seconds before), then 65 such FLACs in one request."""
    c, pid = env["client"], _ingress_pid()
    bomb = flac_bomb()
    assert len(bomb) < 400_000
    for name, data in (("w.wav", wav_bomb()), ("f.flac", bomb)):
        with PeakRSS(pid) as peak:
            r = c.post("/extract_embedding", files={"audio": (name, data)})
        msg = expect_error(r, 400, "sample_rate_too_high")
        assert "Hz" in msg and str(env["allowed"]) not in msg
        assert peak.seconds < 5 and peak.growth_mib < 100, (name, peak.__dict__)
    files = [("reference", ("r.flac", bomb))] + [
        ("candidates", (f"{i}.flac", bomb)) for i in range(64)
    ]
    with PeakRSS(pid) as peak:
        r = c.post("/verify_batch", files=files)
    expect_error(r, 400, "sample_rate_too_high")
    assert peak.seconds < 20 and peak.growth_mib < 200, peak.__dict__  # the body is 22 MB


def test_request_budget_bounds_many_legal_files(env):
    """65 legal files of 8 channels x 4 s (32 channel-seconds each, silence: 5 KB as FLAC)
    against a 100 channel-second budget: 413 after the budget, not 65 decodes."""
    c, pid = env["client"], _ingress_pid()
    buf = io.BytesIO()
    sf.write(buf, np.zeros((4 * 16000, 8), np.int16), 16000, format="FLAC")
    clip = buf.getvalue()
    assert len(clip) < 10_000
    files = [("reference", ("r.flac", clip))] + [
        ("candidates", (f"{i}.flac", clip)) for i in range(64)
    ]
    with PeakRSS(pid) as peak:
        r = c.post("/verify_batch", files=files)
    msg = expect_error(r, 413, "audio_budget_exceeded")
    assert "budget of 100 channel-seconds" in msg
    assert peak.seconds < 20 and peak.growth_mib < 200, peak.__dict__


def test_codec_stream_claiming_an_hour(env):
    from models.pipelines.codec import EncodedAudio

    c = env["client"]
    r = c.post("/codec/encode", json={"audio": b64(_wav(0.7))})
    enc = EncodedAudio.from_bytes(__import__("base64").b64decode(r.json()["codes_base64"]))
    hour = 3600 * enc.sample_rate // enc.hop_length
    codes = np.zeros((1, hour), dtype=np.int64)
    # an hour of frames behind a header claiming 0.7 s (the bypass of the duration
    # check): its sizes disagree with each other, refused from the header
    lying = EncodedAudio(codes, enc.sample_rate, enc.num_samples, enc.model_id,
                         enc.codebook_size, enc.hop_length).to_bytes()  # fmt: skip
    t0 = time.perf_counter()
    r = c.post("/codec/decode", content=lying, headers={"content-type": "application/octet-stream"})
    assert "frames" in expect_error(r, 400, "corrupt_codes")
    # an honest hour: refused from its length before decoding
    honest = EncodedAudio(codes, enc.sample_rate, hour * enc.hop_length, enc.model_id,
                          enc.codebook_size, enc.hop_length).to_bytes()  # fmt: skip
    r = c.post(
        "/codec/decode", content=honest, headers={"content-type": "application/octet-stream"}
    )
    assert "3600.0 s" in expect_error(r, 413, "codes_too_long")
    # a stream whose size disagrees with its header: refused before unpacking
    r = c.post(
        "/codec/decode", content=honest[:-7], headers={"content-type": "application/octet-stream"}
    )
    expect_error(r, 400, "corrupt_codes")
    assert time.perf_counter() - t0 < 10


def test_symlink_swap_during_requests_never_reads_outside(env):
    """A folder inside the allowed root is swapped for a symlink to an outside folder while
    requests read a file through it: 400 tries, 0 reads of the outside file (1.2 s long; the
    inside one is 0.6 s, so the answered duration tells which was read)."""
    c, allowed, outside = env["client"], env["allowed"], env["outside"]
    (allowed / "d").mkdir()
    (allowed / "d" / "a.wav").write_bytes(_wav(0.6))
    (outside / "a.wav").write_bytes(_wav(1.2))
    stop = threading.Event()

    def swap() -> None:
        real, link = allowed / "d", allowed / "d.real"
        while not stop.is_set():  # bounded: the test sets stop after its 400 tries
            os.rename(real, link)
            os.symlink(outside, real)
            time.sleep(0.0005)
            os.unlink(real)
            os.rename(link, real)
            time.sleep(0.0005)

    t = threading.Thread(target=swap, daemon=True)
    t.start()
    seen: dict[int, int] = {}
    escapes = 0
    try:
        for _ in range(400):
            r = c.post("/extract_embedding", json={"audio": {"path": "d/a.wav"}})
            seen[r.status_code] = seen.get(r.status_code, 0) + 1
            if r.status_code == 200:
                escapes += r.json()["duration_s"] > 1.0
            else:
                assert r.status_code in (403, 404), r.text
                assert str(outside) not in r.text and str(allowed) not in r.text
    finally:
        stop.set()
        t.join(timeout=5)
    assert escapes == 0, seen
    assert seen.get(200, 0) > 0 and seen.get(403, 0) > 0, seen  # both sides of the race ran


def test_import_does_not_follow_symlinks_or_loop(env):
    c, allowed, outside = env["client"], env["allowed"], env["outside"]
    tree = allowed / "imp"
    (tree / "alice").mkdir(parents=True)
    (tree / "alice" / "1.wav").write_bytes(_wav(0.7))
    os.symlink(tree, tree / "alice" / "loop")  # a loop back to the import root
    (outside / "eve").mkdir()
    (outside / "eve" / "1.wav").write_bytes(_wav(0.7))
    os.symlink(outside / "eve", tree / "eve")  # a speaker folder outside the roots
    os.symlink(outside / "eve" / "1.wav", tree / "alice" / "2.wav")  # a file outside
    t0 = time.perf_counter()
    r = c.post("/speakers/import", json={"path": "imp", "group": "imp"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert time.perf_counter() - t0 < 30
    assert [s["name"] for s in body["speakers"]] == ["alice"] and not body["skipped"]
    assert body["speakers"][0]["metadata"]["num_files"] == 1
    assert str(outside) not in r.text and str(allowed) not in r.text
    shutil.rmtree(tree)
