"""Target speaker extraction: mixture ``(B, T)`` + reference ``(B, T_ref)`` -> ``TSEOutput``.

Importing this package registers ``tse`` and its presets (``tse-v1``, ``tse-v2``, ``tse-tiny``).
"""

from __future__ import annotations

from models.tse import band_split, conditioning, extractor, tf_gridnet  # noqa: F401
from models.tse.band_split import BandMerge, BandSplit, band_edges
from models.tse.conditioning import ReferenceConditioning
from models.tse.extractor import TargetSpeakerExtractor, TSEConfig, TSEOutput
from models.tse.tf_gridnet import TFGridNetBlock

__all__ = [
    "BandMerge",
    "BandSplit",
    "ReferenceConditioning",
    "TFGridNetBlock",
    "TSEConfig",
    "TSEOutput",
    "TargetSpeakerExtractor",
    "band_edges",
]
