"""The output-folder lock of the batch jobs, and decode bombs failing alone in extraction."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import textwrap

import pytest

from datasets.manifests import scan_tree
from models.pipelines.speaker import SpeakerEmbedder
from ray_jobs.extract.core import local_stream, run_extraction
from ray_jobs.extract.output import OutputState
from ray_jobs.output_lock import LOCK_NAME, OutputLock, OutputLockedError
from tests.hostile_audio import flac_bomb, wav_bomb

HOLD = textwrap.dedent(
    """
    import sys, time
    from ray_jobs.output_lock import OutputLock
    with OutputLock(sys.argv[1]):
        print("held", flush=True)
        time.sleep(60)  # bounded: the test kills it long before
    """
)


@pytest.fixture
def held(tmp_path):
    """An output folder whose lock a live subprocess holds; yields ``(folder, pid)``."""
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(out)], stdout=subprocess.PIPE, text=True, env=env
    )
    try:
        assert proc.stdout.readline().strip() == "held"
        yield out, proc.pid
    finally:
        proc.kill()
        proc.wait(timeout=10)


def test_a_second_job_is_refused_while_the_first_holds_the_folder(held):
    out, pid = held
    with pytest.raises(OutputLockedError) as e:
        OutputLock(out).acquire()
    assert f"pid {pid}" in str(e.value) and socket.gethostname() in str(e.value)
    owner = json.loads((out / LOCK_NAME).read_text())
    assert owner["pid"] == pid and owner["host"] == socket.gethostname() and owner["started"]


def test_stale_lock_of_a_dead_job_is_taken_over_and_released(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait(timeout=30)
    out = tmp_path / "out"
    out.mkdir()
    stale = {"pid": dead.pid, "host": socket.gethostname(), "started": "x", "command": "old"}
    (out / LOCK_NAME).write_text(json.dumps(stale))
    with OutputLock(out) as lock:
        assert json.loads((out / LOCK_NAME).read_text())["pid"] == os.getpid() and lock.held
    assert not (out / LOCK_NAME).exists()
    # another host's lock cannot be checked from here: refused, with what to do
    other = {**stale, "host": "elsewhere", "pid": 1}
    (out / LOCK_NAME).write_text(json.dumps(other))
    with pytest.raises(OutputLockedError, match="delete"):
        OutputLock(out).acquire()


def test_concurrent_starts_exactly_one_wins(tmp_path):
    code = textwrap.dedent(
        """
        import sys, time
        from ray_jobs.output_lock import OutputLock, OutputLockedError
        try:
            OutputLock(sys.argv[1]).acquire()
            print("won", flush=True)
            time.sleep(3)
        except OutputLockedError:
            print("refused", flush=True)
        """
    )
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, str(tmp_path / "o")],
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        for _ in range(6)
    ]
    results = [p.communicate(timeout=60)[0].strip() for p in procs]
    assert sorted(results) == ["refused"] * 5 + ["won"], results


def test_extraction_bomb_fails_alone_and_a_locked_output_is_refused(extract_corpus, tmp_path, held):
    root, ckpt = extract_corpus
    data = tmp_path / "data"
    shutil.copytree(root / "data", data)
    (data / "synth" / "spk002" / "zz_bomb.flac").write_bytes(flac_bomb())
    (data / "synth" / "spk003" / "zz_bomb.wav").write_bytes(wav_bomb())
    utts = scan_tree(data)
    emb = SpeakerEmbedder.from_checkpoint(ckpt)
    state = OutputState(model_id=emb.model_id, embed_dim=emb.embed_dim)
    locked, _ = held
    with pytest.raises(OutputLockedError):
        run_extraction(utts, locked, state, local_stream(emb, batch_size=8))
    out = tmp_path / "out2"
    summary = run_extraction(utts, out, state, local_stream(emb, batch_size=8))
    failures = {f["key"]: f["error"] for f in json.loads((out / "failures.json").read_text())}
    bombs = {"synth_spk002_zz_bomb", "synth_spk003_zz_bomb"}
    assert bombs <= set(failures)
    for key in bombs:
        assert "sample rate" in failures[key] and "Traceback" not in failures[key]
    assert summary["num_embedded"] == len(utts) - len(failures) >= 12
    assert not (out / LOCK_NAME).exists()  # released after the run


def test_diarize_job_refuses_a_locked_output_before_starting(held):
    from ray_jobs.diarize.job import diarize

    out, pid = held
    with pytest.raises(OutputLockedError, match=f"pid {pid}"):
        diarize([{"uri": "a", "path": "/nonexistent.wav"}], "/nonexistent.pt", out)
