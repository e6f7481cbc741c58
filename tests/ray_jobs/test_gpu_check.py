"""``make gpu-check`` cannot rot on machines without a GPU: its dry run (tiny presets, CPU, one
step each) goes through the same code, writes the section, and imports no Ray."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_dry_run_writes_the_gpu_section_without_ray(tmp_path):
    out = tmp_path / "BENCHMARKS.md"
    out.write_text("# Benchmarks\n\n## CPU\n\nkept\n\n## GPU\n\nold figures\n")
    code = (
        "import sys; sys.modules['ray'] = None\n"  # the GPU image has no Ray
        "from ray_jobs.gpu_check.cli import main\n"
        f"raise SystemExit(main(['--dry-run', '--output', {str(out)!r}, '--budget-s', '0']))\n"
    )
    res = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=600
    )
    assert res.returncode == 0, res.stderr
    text = out.read_text()
    assert "kept" in text and "old figures" not in text and text.count("## GPU") == 1
    rows = [line for line in text.splitlines() if line.startswith("| ") and "bf16" in line]
    labels = {row.split("|")[1].strip() for row in rows}
    assert labels == {
        "CAM++ (192)",
        "ECAPA-TDNN C1024",
        "TSE v2 (48 kHz)",
        "SoundStream-small",
        "extraction: SpeakerEmbedder, CAM++",
    }
    for row in rows:
        assert float(row.split("|")[5].replace(",", "")) > 0  # samples/s


def test_without_cuda_it_skips_cleanly(tmp_path):
    code = (
        "import sys, torch; sys.modules['ray'] = None\n"
        "torch.cuda.is_available = lambda: False\n"
        "from ray_jobs.gpu_check.cli import main\n"
        f"raise SystemExit(main(['--output', {str(tmp_path / 'B.md')!r}]))\n"
    )
    res = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert res.returncode == 0, res.stderr
    assert "no CUDA device" in res.stderr
    assert not (tmp_path / "B.md").exists()
