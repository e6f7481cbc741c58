"""Neural codec evaluation core (Ray-free, no CLI): audio files, against Opus (and Lyra v2).

The CLI is ``ray_jobs/evaluate/cli/codec.py`` (``python -m ray_jobs.evaluate --checkpoint
codec.pt``); the training job (``ray_jobs/train/data/codec.py``) calls :func:`evaluate_files`.

Metrics per file, then averaged: nominal bitrate (kbps), SI-SDR (dB), log-mel L1 distance, wide-band
PESQ (ITU-T P.862.2) and STOI (Taal et al. 2011), the last two at 16 kHz, all from
``models/metrics.py``. The protocol follows the SoundStream paper's objective evaluation
(Zeghidour et al. 2021, arXiv 2107.03312, Sec. V: codec vs Opus at matched bitrates); the Opus
baseline runs the reference command-line tools (``opusenc``/``opusdec`` from opus-tools, else
``ffmpeg`` with libopus) found on PATH, and is skipped with a logged reason when neither exists
(``"opus": null`` in the JSON).

Opus cannot go below 6 kbps (libopus clamps lower targets): a codec bitrate under 6 kbps is
compared with Opus at 6 kbps, and the report marks that row with the Opus bitrate actually used
(``opus_kbps`` in the JSON), so the baseline there is *more* bits than ours, never fewer.
"""

from __future__ import annotations

import logging
import math
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from datasets.audio import AUDIO_EXTENSIONS, AudioError, load_audio
from models.metrics import mel_distance, signal_quality
from models.pipelines.codec import CodecPipeline

log = logging.getLogger("ray_jobs.evaluate.codec")

OPUS_MIN_KBPS = 6.0  # libopus' lowest bitrate


class OpusUnavailable(RuntimeError):
    """Neither ``opusenc``/``opusdec`` nor ``ffmpeg`` is on PATH."""


def audio_files(root: str | Path, limit: int | None = None) -> list[str]:
    """Audio files under ``root`` (a file, or a folder scanned recursively), sorted."""
    root = Path(root)
    if root.is_file():
        return [str(root)]
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such file or folder")
    files = sorted(str(p) for p in root.rglob("*") if p.suffix.lower() in AUDIO_EXTENSIONS)
    return files[:limit] if limit else files


def quality(est: np.ndarray, ref: np.ndarray, sample_rate: int) -> dict[str, float]:
    """``si_sdr``, ``mel_distance``, ``pesq`` and ``stoi`` of ``est`` vs ``ref`` (both ``(T,)``):
    the shared :func:`models.metrics.signal_quality` plus the codec's mel distance, over the
    common length (a decoder may pad the last frame)."""
    n = min(est.size, ref.size)
    est, ref = est[:n].astype(np.float32), ref[:n].astype(np.float32)
    return {
        **signal_quality(est, ref, sample_rate),
        "mel_distance": mel_distance(est, ref, sample_rate),
    }


def _mean(rows: list[dict[str, Any]], key: str) -> float | None:
    vals = [r[key] for r in rows if isinstance(r.get(key), (int, float)) and math.isfinite(r[key])]
    return float(np.mean(vals)) if vals else None


def _summary(rows: list[dict[str, Any]]) -> dict[str, float | None]:
    keys = ("bitrate_kbps", "si_sdr", "mel_distance", "pesq", "stoi")
    return {k: _mean(rows, k) for k in keys}


def evaluate_files(
    pipeline: CodecPipeline, files: list[str], *, num_quantizers: int | None = None
) -> dict[str, Any]:
    """Encode + decode each file -> ``{"num_files", "bitrate_kbps", "si_sdr", "mel_distance",
    "pesq", "stoi", "files": [per-file dict], "failed": [{"path", "error"}]}``.

    Means skip NaN (PESQ of a pair it cannot score). An unreadable file is listed in ``failed``
    and does not stop the others.
    """
    rows: list[dict[str, Any]] = []
    failed: list[dict[str, str]] = []
    sr = pipeline.sample_rate
    for path in files:
        try:
            wav, _ = load_audio(path, target_sr=sr)
            enc = pipeline.encode(wav, sr, num_quantizers)
            out = pipeline.decode(enc)
            row = {"path": str(path), "seconds": wav.size / sr, "bitrate_kbps": enc.bitrate / 1e3}
            row["bytes"] = len(enc.to_bytes())
            row.update(quality(out, wav, sr))
            rows.append(row)
        except (AudioError, ValueError) as exc:
            log.warning("skipped %s: %s", path, exc)
            failed.append({"path": str(path), "error": str(exc)})
    return {"num_files": len(rows), **_summary(rows), "files": rows, "failed": failed}


# ---------------------------------------------------------------------------------------------
# Opus baseline


@dataclass(frozen=True)
class OpusTool:
    """How to run Opus here: ``kind`` is ``"opus-tools"`` or ``"ffmpeg"``."""

    kind: str
    encoder: str
    decoder: str


def find_opus() -> OpusTool:
    """The Opus command-line tools on PATH; raises :class:`OpusUnavailable` when absent."""
    enc, dec = shutil.which("opusenc"), shutil.which("opusdec")
    if enc and dec:
        return OpusTool("opus-tools", enc, dec)
    ff = shutil.which("ffmpeg")
    if ff:
        return OpusTool("ffmpeg", ff, ff)
    raise OpusUnavailable(
        "no Opus encoder on PATH (opusenc/opusdec from opus-tools, or ffmpeg with libopus); "
        "install one (e.g. apt-get install opus-tools) to get the Opus baseline"
    )


def opus_roundtrip(wav: np.ndarray, sample_rate: int, kbps: float, tool: OpusTool) -> np.ndarray:
    """``(T,)`` float -> Opus at ``max(kbps, 6)`` kbps -> ``(T,)`` float at ``sample_rate``."""
    import soundfile as sf

    from models.waveform import resample

    rate = max(kbps, OPUS_MIN_KBPS)
    with tempfile.TemporaryDirectory() as tmp:
        src, coded, out = Path(tmp, "in.wav"), Path(tmp, "x.opus"), Path(tmp, "out.wav")
        sf.write(src, wav, sample_rate, subtype="PCM_16")
        if tool.kind == "opus-tools":
            enc = [tool.encoder, "--quiet", "--bitrate", f"{rate:g}", str(src), str(coded)]
            dec = [tool.decoder, "--quiet", "--rate", "48000", str(coded), str(out)]
        else:
            enc = [tool.encoder, "-loglevel", "error", "-y", "-i", str(src), "-c:a", "libopus"]
            enc += ["-b:a", f"{int(rate * 1000)}", "-application", "voip", str(coded)]
            dec = [tool.decoder, "-loglevel", "error", "-y", "-i", str(coded), str(out)]
        for cmd in (enc, dec):
            res = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
            if res.returncode:
                raise RuntimeError(f"{' '.join(cmd[:1])} failed: {res.stderr.strip()[-300:]}")
        y, sr = sf.read(out, dtype="float32", always_2d=True)
    y = resample(y.mean(1), sr, sample_rate)
    y = np.pad(y, (0, max(0, wav.size - y.size)))[: wav.size]
    return y.astype(np.float32)


def evaluate_opus(files: list[str], sample_rate: int, kbps: float) -> dict[str, Any] | None:
    """Opus at ``max(kbps, 6)`` on the same files, or ``None`` (logged) when Opus is absent."""
    try:
        tool = find_opus()
    except OpusUnavailable as exc:
        log.warning("Opus baseline skipped: %s", exc)
        return None
    rows = []
    for path in files:
        try:
            wav, _ = load_audio(path, target_sr=sample_rate)
            y = opus_roundtrip(wav, sample_rate, kbps, tool)
            rows.append({"path": path, **quality(y, wav, sample_rate)})
        except (AudioError, RuntimeError, ValueError) as exc:
            log.warning("Opus failed on %s: %s", path, exc)
    opus_kbps = max(kbps, OPUS_MIN_KBPS)
    return {"tool": tool.kind, "opus_kbps": opus_kbps, **_summary(rows), "bitrate_kbps": opus_kbps}


# ---------------------------------------------------------------------------------------------
# Report: Markdown table + listening page (players, spectrograms, metrics per clip)

QUALITY_UNITS = {"si_sdr": "dB", "pesq": "MOS-LQO"}  # bitrate_kbps names its unit


def _lyra_panel(wav: np.ndarray, sr: int, kbps: float, lyra: Any) -> tuple[str, np.ndarray, dict]:
    """Lyra v2 at the supported bitrate nearest ``kbps`` on ``wav`` (at ``sr``), back at ``sr``."""
    from models.waveform import resample
    from ray_jobs.evaluate.lyra import BITRATES_KBPS, SAMPLE_RATE

    rate = min(BITRATES_KBPS, key=lambda b: abs(b - kbps))
    x = resample(wav, sr, SAMPLE_RATE) if sr != SAMPLE_RATE else wav
    y = lyra.roundtrip(x, rate)
    y = resample(y, SAMPLE_RATE, sr)[: wav.size] if sr != SAMPLE_RATE else y
    return f"Lyra v2 {rate:g} kbps", y, {"bitrate_kbps": rate, **quality(y, wav, sr)}


def write_report(
    result: dict[str, Any],
    pipeline: CodecPipeline,
    files: list[str],
    out_dir: str | Path,
    *,
    num_pictures: int = 3,
    lyra_dir: str | Path | None = None,
) -> Path:
    """``out_dir/report.md`` (results table, spectrogram pictures) and ``out_dir/index.html``, a
    listening page (``ray_jobs/evaluate/listening.py``) of the first ``num_pictures`` files:
    original, ours at the last run's bitrate, and the baselines present (Opus when its tools
    are on PATH, Lyra v2 when ``result["lyra"]`` was measured), with players, spectrograms and
    per-clip metrics."""
    from ray_jobs.evaluate.listening import ListeningClip, write_listening_page
    from ray_jobs.evaluate.lyra import LyraCodec

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    sr = pipeline.sample_rate
    n = result["runs"][-1]["num_quantizers"]
    kbps = pipeline.bitrate(n) / 1e3
    try:
        tool: OpusTool | None = find_opus()
    except OpusUnavailable:
        tool = None
    lyra = LyraCodec(lyra_dir) if result.get("lyra") else None
    table = format_table(result)
    lines = [
        f"# Codec evaluation: {result['model_id']}",
        "",
        f"Data: `{result['data_root']}`, {result['runs'][0]['num_files']} files. PESQ-WB and "
        "STOI at 16 kHz; Opus below 6 kbps runs at 6 kbps (its minimum). Listen: "
        "[index.html](index.html).",
        "",
        table,
        "",
    ]
    if result.get("opus") is None:
        lines += ["Opus baseline: not run (no opusenc/ffmpeg on PATH, or --opus not given).", ""]
    clips = []
    for path in files[:num_pictures]:
        try:
            wav, _ = load_audio(path, target_sr=sr)
        except AudioError as exc:
            log.warning("no picture for %s: %s", path, exc)
            continue
        ours = pipeline.decode(pipeline.encode(wav, sr, n))[: wav.size]
        signals = {"original": wav, f"ours {kbps:.2f} kbps": ours}
        metrics: dict[str, dict[str, Any]] = {
            f"ours {kbps:.2f} kbps": {"bitrate_kbps": kbps, **quality(ours, wav, sr)}
        }
        if tool is not None:
            try:
                label = f"Opus {max(kbps, OPUS_MIN_KBPS):g} kbps"
                signals[label] = opus_roundtrip(wav, sr, kbps, tool)
                metrics[label] = {
                    "bitrate_kbps": max(kbps, OPUS_MIN_KBPS),
                    **quality(signals[label], wav, sr),
                }
            except RuntimeError as exc:
                log.warning("no Opus panel for %s: %s", path, exc)
        if lyra is not None:
            label, y, m = _lyra_panel(wav, sr, kbps, lyra)
            signals[label], metrics[label] = y, m
        clips.append(ListeningClip(Path(path).name, sr, signals, metrics, note=str(path)))
    if clips:
        page = write_listening_page(
            out_dir,
            f"Codec evaluation: {result['model_id']}",
            clips,
            summary_html=_markdown_table_html(table),
            units=QUALITY_UNITS,
        )
        for i, clip in enumerate(clips):
            png = next((page.parent / "spectrograms").glob(f"{i:02d}_*.png"))
            lines += [f"## {clip.name}", "", f"![spectrograms](spectrograms/{png.name})", ""]
    report = out_dir / "report.md"
    report.write_text("\n".join(lines))
    return report


def _markdown_table_html(table: str) -> str:
    """The Markdown table of :func:`format_table` as an HTML table (header row, then rows)."""
    import html

    rows = [r.strip("|").split("|") for r in table.splitlines() if not r.startswith("|---")]
    cells = [
        "<tr>" + "".join(f"<{t}>{html.escape(c.strip())}</{t}>" for c in row) + "</tr>"
        for t, row in (("th" if i == 0 else "td", r) for i, r in enumerate(rows))
    ]
    return "<table>" + "".join(cells) + "</table>"


def _fmt(v: Any, spec: str = ".3f") -> str:
    return "-" if v is None or (isinstance(v, float) and not math.isfinite(v)) else format(v, spec)


def format_table(result: dict[str, Any]) -> str:
    """Markdown table: one row per (system, bitrate)."""
    lines = [
        "| system | kbps | SI-SDR (dB) | mel dist | PESQ-WB | STOI |",
        "|---|---|---|---|---|---|",
    ]
    for run in result["runs"]:
        systems = [("ours", run)]
        if run.get("opus"):
            systems.append((f"Opus ({run['opus']['tool']})", run["opus"]))
        for name, r in systems:
            lines.append(
                f"| {name} | {_fmt(r['bitrate_kbps'], '.2f')} | {_fmt(r['si_sdr'], '.2f')} | "
                f"{_fmt(r['mel_distance'])} | {_fmt(r['pesq'])} | {_fmt(r['stoi'])} |"
            )
    for r in result.get("lyra") or []:
        lines.append(
            f"| Lyra v2 | {_fmt(r['bitrate_kbps'], '.2f')} | {_fmt(r['si_sdr'], '.2f')} | "
            f"{_fmt(r['mel_distance'])} | {_fmt(r['pesq'])} | {_fmt(r['stoi'])} |"
        )
    return "\n".join(lines)
