"""Training data of the ``tse`` task: speech packed at 48 kHz, mixed on the fly on CPU tasks.

``data.train`` (an audio tree or packed manifest) gives the speech, packed once at
``data.mix.sample_rate``; ``data.noise`` / ``data.rir`` the banks. Held-out speakers
(``data.held_out_speakers`` of the tree, or the ``data.eval`` tree) are packed apart and give a
fixed set of ``data.eval_mixes`` mixtures: the ``val_*`` metrics of every epoch (what Tune's
ASHA compares) and, at the end, SI-SDR(i), PESQ, STOI and target-absent suppression.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import ray.data

from datasets.hdf5_shards import pack_shards
from datasets.mixing import make_eval_set
from datasets.ray_data import tse_training_dataset
from datasets.ray_env import init_ray
from datasets.tse_pipeline import MixerSpec, build_mixer
from models.config import ConfigError, to_dict
from models.pipelines.extract_target import TargetExtractor
from ray_jobs.evaluate.tse import evaluate_samples
from ray_jobs.train.data import TrainData, check_sample_rate
from ray_jobs.train.experiment import ExperimentConfig
from ray_jobs.train.prepare import prepare_speaker_data

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
    train_spec = MixerSpec(
        mix=d.mix,
        speech_manifest=str(prepared.manifest),
        speakers=prepared.speakers,
        noise=d.noise,
        rir=d.rir,
        seed=d.seed,
    )
    build_mixer(train_spec)  # fail here, in the driver, on unusable speech/noise/RIRs
    eval_samples = []
    if prepared.eval_utterances and d.eval_mixes > 0:
        eval_manifest = pack_shards(
            prepared.eval_utterances, pack_root / "eval_shards", sample_rate=d.sample_rate
        )
        eval_speakers = tuple(sorted({u.speaker for u in prepared.eval_utterances}))
        eval_spec = MixerSpec(
            mix=d.mix,
            speech_manifest=str(eval_manifest),
            speakers=eval_speakers,
            noise=d.noise,
            rir=d.rir,
            seed=d.seed,
        )
        eval_samples = make_eval_set(build_mixer(eval_spec), d.eval_mixes, seed=d.seed)
        log.info("%d held-out mixes from %d speakers", len(eval_samples), len(eval_speakers))
    rows_per_epoch = d.samples_per_epoch or prepared.num_utterances * d.crops_per_utterance
    total = rows_per_epoch * exp.train.epochs
    init_ray()
    val = None
    if eval_samples:
        val = ray.data.from_items(
            [
                {"mix": s.mix, "target": s.target, "ref": s.ref, "present": float(s.present)}
                for s in eval_samples
            ]
        )

    def evaluate(checkpoint: Path) -> dict[str, Any]:
        return evaluate_samples(TargetExtractor.from_checkpoint(checkpoint), eval_samples)

    return TrainData(
        train=tse_training_dataset(train_spec, total, batch_size=exp.train.batch_size),
        rows_per_epoch=rows_per_epoch,
        val=val,
        meta={"speakers": list(prepared.speakers), "mix": to_dict(d.mix)},
        summary={
            "train_speakers": len(prepared.speakers),
            "train_utterances": prepared.num_utterances,
            "mixes_per_epoch": rows_per_epoch,
            "eval_mixes": len(eval_samples),
        },
        evaluate=evaluate if eval_samples else None,
        single_pass=True,
    )
