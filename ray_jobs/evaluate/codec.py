"""Evaluate a neural codec checkpoint on audio files, against Opus (and Lyra v2) baselines.

    python -m ray_jobs.evaluate --checkpoint codec.pt --data-root DIR [--num-quantizers N ...]
        [--opus] [--lyra] [--report DIR] [--json]

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

import argparse
import json
import logging
import math
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from datasets.audio import AudioError, load_audio
from models.metrics import mel_distance, pesq_wb, si_sdr, stoi
from models.pipelines.codec import CodecPipeline
from ray_jobs.cli import configure_cli_logging

log = logging.getLogger("ray_jobs.evaluate.codec")

AUDIO_EXTS = (".wav", ".flac", ".ogg", ".mp3")
OPUS_MIN_KBPS = 6.0  # libopus' lowest bitrate
METRIC_SR = 16000  # PESQ-WB and STOI are computed at 16 kHz


class OpusUnavailable(RuntimeError):
    """Neither ``opusenc``/``opusdec`` nor ``ffmpeg`` is on PATH."""


def audio_files(root: str | Path, limit: int | None = None) -> list[str]:
    """Audio files under ``root`` (a file, or a folder scanned recursively), sorted."""
    root = Path(root)
    if root.is_file():
        return [str(root)]
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such file or folder")
    files = sorted(str(p) for p in root.rglob("*") if p.suffix.lower() in AUDIO_EXTS)
    return files[:limit] if limit else files


def quality(est: np.ndarray, ref: np.ndarray, sample_rate: int) -> dict[str, float]:
    """``si_sdr``, ``mel_distance``, ``pesq`` and ``stoi`` of ``est`` vs ``ref`` (both ``(T,)``)."""
    from datasets.audio import resample

    n = min(est.size, ref.size)
    est, ref = est[:n].astype(np.float32), ref[:n].astype(np.float32)
    e16, r16 = resample(est, sample_rate, METRIC_SR), resample(ref, sample_rate, METRIC_SR)
    return {
        "si_sdr": si_sdr(est, ref),
        "mel_distance": mel_distance(est, ref, sample_rate),
        "pesq": pesq_wb(e16, r16, METRIC_SR),
        "stoi": stoi(e16, r16, METRIC_SR),
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

    from datasets.audio import resample

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
# Report: Markdown table + spectrogram pictures


def spectrogram_db(wav: np.ndarray, n_fft: int = 512, hop: int = 128) -> np.ndarray:
    """``(T,)`` -> ``(n_fft // 2 + 1, frames)`` STFT magnitude in dB, clipped to 80 dB below max."""
    import torch

    x = torch.from_numpy(np.asarray(wav, dtype=np.float32))
    spec = torch.stft(x, n_fft, hop, window=torch.hann_window(n_fft), return_complex=True).abs()
    db = 20 * torch.log10(spec.clamp_min(1e-8))
    return db.clamp_min(db.max() - 80).numpy()


def _colormap(u: np.ndarray) -> np.ndarray:
    """``[0, 1]`` -> RGB uint8 through a black-purple-orange-yellow ramp (magma-like)."""
    stops = np.array([[0, 0, 4], [80, 18, 123], [182, 54, 121], [251, 136, 97], [252, 253, 191]])
    pos = np.clip(u, 0, 1) * (len(stops) - 1)
    i = np.minimum(pos.astype(int), len(stops) - 2)
    f = (pos - i)[..., None]
    return (stops[i] * (1 - f) + stops[i + 1] * f).astype(np.uint8)


def spectrogram_png(wavs: dict[str, np.ndarray], path: str | Path) -> Path:
    """Stack one spectrogram per ``{label: (T,)}`` vertically (low frequencies at the bottom)."""
    from PIL import Image, ImageDraw

    panels = []
    for label, wav in wavs.items():
        db = spectrogram_db(wav)
        u = (db - db.min()) / max(float(db.max() - db.min()), 1e-6)
        img = Image.fromarray(_colormap(u[::-1]))  # row 0 = highest frequency
        ImageDraw.Draw(img).text((4, 2), label, fill=(255, 255, 255))
        panels.append(img)
    width = max(p.width for p in panels)
    out = Image.new("RGB", (width, sum(p.height for p in panels) + 4 * len(panels)), "white")
    y = 0
    for p in panels:
        out.paste(p, (0, y))
        y += p.height + 4
    path = Path(path)
    out.save(path)
    return path


def write_report(
    result: dict[str, Any],
    pipeline: CodecPipeline,
    files: list[str],
    out_dir: str | Path,
    *,
    num_pictures: int = 3,
) -> Path:
    """``out_dir/report.md`` (results table) + ``spec_<i>.png`` (original / ours / Opus)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    sr = pipeline.sample_rate
    n = result["runs"][-1]["num_quantizers"]
    kbps = pipeline.bitrate(n) / 1e3
    try:
        tool: OpusTool | None = find_opus()
    except OpusUnavailable:
        tool = None
    lines = [
        f"# Codec evaluation: {result['model_id']}",
        "",
        f"Data: `{result['data_root']}`, {result['runs'][0]['num_files']} files. PESQ-WB and "
        "STOI at 16 kHz; Opus below 6 kbps runs at 6 kbps (its minimum).",
        "",
        format_table(result),
        "",
    ]
    if result.get("opus") is None:
        lines += ["Opus baseline: not run (no opusenc/ffmpeg on PATH, or --opus not given).", ""]
    for i, path in enumerate(files[:num_pictures]):
        try:
            wav, _ = load_audio(path, target_sr=sr)
        except AudioError as exc:
            log.warning("no picture for %s: %s", path, exc)
            continue
        panels = {
            "original": wav,
            f"ours {kbps:.2f} kbps": pipeline.decode(pipeline.encode(wav, sr, n)),
        }
        if tool is not None:
            try:
                panels[f"Opus {max(kbps, OPUS_MIN_KBPS):g} kbps"] = opus_roundtrip(
                    wav, sr, kbps, tool
                )
            except RuntimeError as exc:
                log.warning("no Opus panel for %s: %s", path, exc)
        png = spectrogram_png(panels, out_dir / f"spec_{i}.png")
        lines += [f"## {Path(path).name}", "", f"![spectrograms]({png.name})", ""]
    report = out_dir / "report.md"
    report.write_text("\n".join(lines))
    return report


# ---------------------------------------------------------------------------------------------
# CLI


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m ray_jobs.evaluate", description=__doc__.split("\n")[0]
    )
    p.add_argument("--checkpoint", required=True, help="codec checkpoint (.pt)")
    p.add_argument("--data-root", required=True, help="audio file or folder (scanned recursively)")
    p.add_argument(
        "--num-quantizers", type=int, nargs="+", default=None, help="bitrates to evaluate"
    )
    p.add_argument("--max-files", type=int, default=None, help="evaluate at most N files")
    p.add_argument(
        "--opus", action="store_true", help="add the Opus baseline (needs opusenc/ffmpeg)"
    )
    p.add_argument("--lyra", action="store_true", help="add Lyra v2 (needs ai-edge-litert)")
    p.add_argument("--lyra-dir", default=None, help="folder of the Lyra v2 TFLite files")
    p.add_argument("--report", default=None, help="write report.md + spectrogram PNGs here")
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    return p


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


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_cli_logging()
    try:
        pipeline = CodecPipeline.from_checkpoint(args.checkpoint, device=args.device)
        files = audio_files(args.data_root, args.max_files)
        if not files:
            raise FileNotFoundError(
                f"no audio files ({', '.join(AUDIO_EXTS)}) under {args.data_root}"
            )
        nqs = args.num_quantizers or [pipeline.num_quantizers]
        for n in nqs:
            if not 1 <= n <= pipeline.num_quantizers:
                raise ValueError(f"--num-quantizers {n} is not in [1, {pipeline.num_quantizers}]")
    except (FileNotFoundError, ValueError, KeyError) as exc:
        log.error("%s", exc)
        return 2
    runs = []
    for n in nqs:
        run = {"num_quantizers": n, **evaluate_files(pipeline, files, num_quantizers=n)}
        run["opus"] = (
            evaluate_opus(files, pipeline.sample_rate, run["bitrate_kbps"] or 0.0)
            if args.opus
            else None
        )
        runs.append(run)
    lyra = None
    if args.lyra:
        from ray_jobs.evaluate.lyra import evaluate_lyra

        lyra = evaluate_lyra(files, lyra_dir=args.lyra_dir)
    result = {
        "checkpoint": str(args.checkpoint),
        "model_id": pipeline.model_id,
        "data_root": str(args.data_root),
        "runs": runs,
        "opus": runs[0]["opus"] if args.opus else None,
        "lyra": lyra,
    }
    if args.report:
        result["report"] = str(write_report(result, pipeline, files, args.report))
    if args.json:
        print(json.dumps(result, sort_keys=True, default=float))
    else:
        print(format_table(result))
    return 0
