"""What a TSE dynamic mixture is drawn from: :class:`MixConfig` (lengths, levels, probabilities)
and :class:`MixingError`, the error for pools and banks that cannot be mixed as configured.

Validated on construction so a bad experiment YAML fails before any data is read; the recipe the
fields parametrise is in ``datasets.mixing``'s docstring.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

log = logging.getLogger("datasets.mixing")


class MixingError(ValueError):
    """A speech pool or bank that cannot be mixed as configured; the message says what to do."""


def _check_range(name: str, value: tuple[float, float], lo: float | None = None) -> None:
    if len(value) != 2 or value[0] > value[1]:
        raise ValueError(f"{name} must be (low, high) with low <= high, got {value}")
    if lo is not None and value[0] <= lo:
        raise ValueError(f"{name} must be above {lo}, got {value}")


@dataclass(frozen=True)
class MixConfig:
    sample_rate: int = 48000  # Hz of the speech pool, banks and every output
    segment_seconds: float = 4.0  # mixture and target length
    ref_seconds: float = 4.0  # reference crop; shorter references are used whole, zero-padded
    min_ref_seconds: float = 0.5  # shortest reference cut from a speaker's only utterance
    target_absent_prob: float = 0.2  # mixtures without the target (target = zeros)
    min_interferers: int = 1  # other speakers per mixture, drawn uniformly in [min, max]
    max_interferers: int = 3
    sir_db: tuple[float, float] = (-5.0, 5.0)  # target-to-each-interferer level, per interferer
    snr_db: tuple[float, float] = (-5.0, 15.0)  # speech mixture to noise
    rir_prob: float = 1.0  # sample is reverberant; each source then gets its own RIR
    early_reflection_ms: float = 50.0  # target keeps direct path + this much (module docstring)
    speed_prob: float = 0.5  # each source independently speed-perturbed with this probability
    speed_range: tuple[float, float] = (0.9, 1.1)  # factor drawn uniformly, rounded to 0.01
    ref_noisy_prob_start: float = 0.0  # P(reference gets noise + reverb) at progress 0 ...
    ref_noisy_prob_end: float = 0.5  # ... ramped linearly to this at progress 1
    ref_snr_db: tuple[float, float] = (0.0, 20.0)  # SNR of a noisy reference
    peak_limit: float = 0.95  # joint down-scaling when |mix| or |target| exceeds it
    mix_level_dbfs: tuple[float, float] = (-35.0, -15.0)  # mixture (and reference) RMS, dBFS

    def __post_init__(self) -> None:
        if not isinstance(self.sample_rate, int) or self.sample_rate <= 0:
            raise ValueError(f"sample_rate must be a positive int (Hz), got {self.sample_rate}")
        for name in ("segment_seconds", "ref_seconds", "min_ref_seconds"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        for name in (
            "target_absent_prob",
            "rir_prob",
            "speed_prob",
            "ref_noisy_prob_start",
            "ref_noisy_prob_end",
        ):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(
                    f"{name} must be a probability in [0, 1], got {getattr(self, name)}"
                )
        if not 0 <= self.min_interferers <= self.max_interferers:
            raise ValueError(
                f"need 0 <= min_interferers <= max_interferers, got "
                f"{self.min_interferers}, {self.max_interferers}"
            )
        if self.target_absent_prob > 0 and self.max_interferers == 0:
            log.warning("target-absent samples with no interferers are noise only")
        for name in ("sir_db", "snr_db", "ref_snr_db", "mix_level_dbfs"):
            _check_range(name, getattr(self, name))
        _check_range("speed_range", self.speed_range, lo=0.0)
        if self.mix_level_dbfs[1] > 0:
            raise ValueError(f"mix_level_dbfs must be <= 0 dBFS, got {self.mix_level_dbfs}")
        if self.early_reflection_ms < 0:
            raise ValueError(f"early_reflection_ms must be >= 0, got {self.early_reflection_ms}")
        if not 0 < self.peak_limit <= 1:
            raise ValueError(f"peak_limit must be in (0, 1], got {self.peak_limit}")

    @property
    def segment_samples(self) -> int:
        return int(round(self.segment_seconds * self.sample_rate))

    @property
    def ref_samples(self) -> int:
        return int(round(self.ref_seconds * self.sample_rate))

    def ref_noisy_prob(self, progress: float) -> float:
        """P(noisy reference) at training ``progress`` in [0, 1] (linear ramp)."""
        s, e = self.ref_noisy_prob_start, self.ref_noisy_prob_end
        return s + (e - s) * float(progress)
