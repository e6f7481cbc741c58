"""Worker memory with a large noise bank: what one augmenting or mixing worker holds.

A worker that augments speaker crops (``datasets.augment.Augmenter``) or mixes TSE samples
(``datasets.mixing.DynamicMixer``) opens the noise and RIR banks once and uses them for every
batch. :func:`worker_rss` builds exactly that in a fresh Python process and reports how much
its peak resident memory (``ru_maxrss``) grows above its resident memory once the libraries are
imported, over opening the banks and ``crops`` uses: with banks read on demand from their shards
(``datasets.banks.ShardBank``) and, for comparison, read whole into memory first (what every
worker did before). :func:`make_noise_bank` packs a synthetic bank of a chosen size.

    uv run python -c "from ray_jobs.bench.banks import main; main(2048)"   # a 2 GB bank
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np

from datasets.audio import write_audio
from datasets.hdf5_shards import pack_shards
from datasets.manifests import scan_files
from datasets.ray_env import REPO_ROOT

log = logging.getLogger(__name__)

PATHS = ("speaker", "tse")


def make_noise_bank(
    root: str | Path, megabytes: float, *, sample_rate: int = 16000, seconds: float = 60.0
) -> Path:
    """Pack ``megabytes`` (stored int16) of seeded random noise in ``seconds``-long files into
    ``root/noise`` (kind noise) and a few synthetic RIRs into ``root/rir``; returns ``root``.
    The WAV files are deleted once packed, so the disk holds the bank once."""
    root = Path(root)
    rng = np.random.default_rng(0)
    per_file = int(seconds * sample_rate)
    files = max(1, int(round(megabytes * 2**20 / (2 * per_file))))
    wav_dir = root / "noise-wav"
    for i in range(files):
        colour = np.cumsum(rng.standard_normal(per_file)) * 0.002  # brown-ish, not white
        noise = 0.1 * rng.standard_normal(per_file) + colour - colour.mean()
        write_audio(
            wav_dir / f"n{i:05d}.wav", np.clip(noise, -1, 1).astype(np.float32), sample_rate
        )
    pack_shards(
        scan_files(wav_dir), root / "noise", sample_rate=sample_rate, kind="noise", progress=False
    )
    shutil.rmtree(wav_dir)
    rir_dir = root / "rir-wav"
    t = np.arange(int(0.4 * sample_rate)) / sample_rate
    for i in range(4):
        rir = rng.standard_normal(t.size) * np.exp(-t / (0.05 + 0.05 * i))
        rir[0] = 1.0  # the direct path
        write_audio(rir_dir / f"r{i}.wav", 0.9 * rir / np.abs(rir).max(), sample_rate)
    pack_shards(
        scan_files(rir_dir), root / "rir", sample_rate=sample_rate, kind="rir", progress=False
    )
    shutil.rmtree(rir_dir)
    return root


def _status_mb(field: str) -> float | None:
    """A memory line of ``/proc/self/status`` (``VmRSS``, ``VmHWM``) in MB; None off Linux."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    return None


def _reset_peak() -> bool:
    """Restart the process's peak RSS (VmHWM) from its current RSS (Linux >= 4.0)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def _peak_mb() -> float:
    import resource

    peak = _status_mb("VmHWM")
    return peak if peak is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure_in_process(
    noise: str,
    rir: str,
    *,
    crops: int = 200,
    paths: tuple[str, ...] = PATHS,
    modes: tuple[str, ...] = ("on_demand", "in_memory"),
    sample_rate: int = 16000,
) -> list[dict[str, Any]]:
    """For each mode in turn (``on_demand``: shard banks; ``in_memory``: read whole first), open
    the banks and use them ``crops`` times per path; peak RSS growth from the RSS before.
    Modes run in the given order in this process, so put ``in_memory`` last."""
    import torch

    from datasets.augment import AugmentConfig, Augmenter
    from datasets.banks import ShardBank, open_bank
    from datasets.mixing import DynamicMixer
    from datasets.mixing_config import MixConfig
    from datasets.speech_pools import MemoryPool

    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    speech = {f"s{i}": [0.1 * rng.standard_normal(3 * sample_rate)] for i in range(4)}
    wav = speech["s0"][0][: 2 * sample_rate].astype(np.float32)
    stored = ShardBank(noise).stored_samples
    out = []
    for mode in modes:
        if mode not in ("on_demand", "in_memory"):
            raise ValueError(f"mode must be on_demand or in_memory, got {mode!r}")
        # Growth is from the RSS here to the peak after; the peak restarts here, so a transient
        # of the imports (or of an earlier mode) cannot count.
        if not _reset_peak():
            log.warning("cannot reset the peak RSS here: growth may include earlier peaks")
        base = _status_mb("VmRSS") or _peak_mb()
        noises = open_bank(noise, sample_rate, in_memory=mode == "in_memory")
        rirs = open_bank(rir, sample_rate, in_memory=mode == "in_memory")
        if "speaker" in paths:
            aug = Augmenter(AugmentConfig(noise_prob=1.0, reverb_prob=1.0), noises, rirs)
            for _ in range(crops):
                aug(wav, rng)
        if "tse" in paths:
            cfg = MixConfig(
                sample_rate=sample_rate, segment_seconds=2.0, ref_seconds=2.0, max_interferers=2
            )
            mixer = DynamicMixer(cfg, MemoryPool(speech, sample_rate), noises, rirs)
            for i in range(crops):
                mixer.mix(i)
        peak = _peak_mb()
        out.append(
            {
                "mode": mode,
                "paths": list(paths),
                "bank_entries": len(noises),
                "bank_mb_float32": round(stored * 4 / 2**20, 1),
                "baseline_mb": round(base, 1),
                "peak_mb": round(peak, 1),
                "growth_mb": round(peak - base, 1),
                "crops": crops,
            }
        )
    return out


def worker_rss(
    noise: str | Path, rir: str | Path, timeout: float = 900, **kw: Any
) -> list[dict[str, Any]]:
    """:func:`measure_in_process` in a fresh Python process (so no earlier work sets its peak)."""
    kw = {k: list(v) if isinstance(v, tuple) else v for k, v in kw.items()}
    args = json.dumps({"noise": str(noise), "rir": str(rir), **kw})
    code = (
        "import json; from ray_jobs.bench.banks import measure_in_process as m; "
        f"a = json.loads({args!r}); a = {{k: tuple(v) if isinstance(v, list) else v "
        "for k, v in a.items()}; print(json.dumps(m(a.pop('noise'), a.pop('rir'), **a)))"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"measurement process failed: {done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(megabytes: float = 2048, root: str = "/tmp/voxray-bank", crops: int = 300) -> None:
    """One-off report: worker RSS growth, read on demand vs whole, per path, for a bank of
    ``megabytes`` stored (twice that as float32 in memory)."""
    logging.basicConfig(level=logging.INFO)
    if not (Path(root) / "noise" / "manifest.json").is_file():
        make_noise_bank(root, megabytes)
    for path in PATHS:
        for mode in ("on_demand", "in_memory"):  # one process each: nothing shares a peak
            (r,) = worker_rss(
                Path(root) / "noise", Path(root) / "rir", crops=crops, paths=(path,),
                modes=(mode,),
            )  # fmt: skip
            log.info("%s", json.dumps(r))
