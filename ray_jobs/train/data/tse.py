"""Training data of the ``tse`` task: speech packed at 48 kHz, mixed on the fly on CPU tasks.

``data.train`` (an audio tree or packed manifest) gives the speech, packed once at
``data.mix.sample_rate``; ``data.noise`` / ``data.rir`` the banks. Held-out speakers
(``data.val_speakers`` of the tree, or the ``data.val`` tree) are packed apart and give a
fixed set of ``data.val_mixes`` mixtures: the ``val_*`` metrics of every epoch (what Tune's
ASHA compares) and, at the end, SI-SDR(i), PESQ, STOI and target-absent suppression.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import ray.data

from datasets.hdf5_shards import pack_shards
from datasets.mixing import make_eval_set
from datasets.ray_data import init_ray, tse_training_dataset
from datasets.tse_transforms import MixerSpec, build_mixer
from models.config import ConfigError, to_dict
from models.pipelines.tse import TargetExtractor
from ray_jobs.evaluate.tse import evaluate_samples
from ray_jobs.train.data import TrainData, check_sample_rate
from ray_jobs.train.experiment import ExperimentConfig
from ray_jobs.train.prepare import prepare_bank, prepare_speaker_data

log = logging.getLogger(__name__)


def build(exp: ExperimentConfig, output: Path) -> TrainData:
    """The tse task's training data (module docstring); found by name by ``build_train_data``."""
    d = exp.data
    if d.sample_rate != d.mix.sample_rate:
        raise ConfigError(
            f"data.sample_rate ({d.sample_rate}) must equal data.mix.sample_rate "
            f"({d.mix.sample_rate}): speech is packed at the mixing rate"
        )
    check_sample_rate(exp, d.mix.sample_rate, "data.mix.sample_rate")
    prepared = prepare_speaker_data(d, output)
    pack_root = Path(d.pack_dir) if d.pack_dir else Path(output)
    noise = prepare_bank(d.noise, "noise", d.mix.sample_rate, pack_root)
    rir = prepare_bank(d.rir, "rir", d.mix.sample_rate, pack_root)
    train_spec = MixerSpec(
        mix=d.mix,
        speech_manifest=str(prepared.manifest),
        speakers=prepared.speakers,
        noise=noise,
        rir=rir,
        seed=d.seed,
    )
    build_mixer(train_spec)  # fail here, in the driver, on unusable speech/noise/RIRs
    val_samples = []
    if prepared.val_utterances and d.val_mixes > 0:
        val_manifest = pack_shards(
            prepared.val_utterances, pack_root / "val_shards", sample_rate=d.sample_rate
        )
        val_speakers = tuple(sorted({u.speaker for u in prepared.val_utterances}))
        val_spec = MixerSpec(
            mix=d.mix,
            speech_manifest=str(val_manifest),
            speakers=val_speakers,
            noise=noise,
            rir=rir,
            seed=d.seed,
        )
        val_samples = make_eval_set(build_mixer(val_spec), d.val_mixes, seed=d.seed)
        log.info("%d held-out mixes from %d speakers", len(val_samples), len(val_speakers))
    rows_per_epoch = d.samples_per_epoch or prepared.num_utterances * d.crops_per_utterance
    total = rows_per_epoch * exp.train.epochs
    init_ray()
    val = None
    if val_samples:
        val = ray.data.from_items(
            [
                {"mix": s.mix, "target": s.target, "ref": s.ref, "present": float(s.present)}
                for s in val_samples
            ]
        )

    def evaluate(checkpoint: Path) -> dict[str, Any]:
        return evaluate_samples(TargetExtractor.from_checkpoint(checkpoint), val_samples)

    return TrainData(
        train=tse_training_dataset(train_spec, total, batch_size=exp.train.batch_size),
        rows_per_epoch=rows_per_epoch,
        val=val,
        meta={"speakers": list(prepared.speakers), "mix": to_dict(d.mix)},
        summary={
            "train_speakers": len(prepared.speakers),
            "train_utterances": prepared.num_utterances,
            "mixes_per_epoch": rows_per_epoch,
            "val_mixes": len(val_samples),
        },
        evaluate=evaluate if val_samples else None,
        single_pass=True,
        start_at=lambda first: tse_training_dataset(
            train_spec, total, batch_size=exp.train.batch_size, first_row=first
        ),
    )
