"""3D-Speaker (modelscope/3D-Speaker, ``speakerlab/models``) state dicts -> voxray models.

3D-Speaker publishes plain state dicts (``.bin``/``.ckpt``/``.pt``). Each reference entry
(``campplus_192``, ``eres2net_huge_192``, ... ; the layouts listed in
``shared/reference/3dspeaker_state_dicts.json`` and the model table of 3D-Speaker's
``speakerlab/bin/infer_sv.py``) is our preset ``3dspeaker/<entry>``, whose state-dict keys and
shapes are identical, so the weights load with ``strict=True``. The entry is detected from the
keys and shapes when not given. Front end: 80-bin Kaldi fbank with the povey window and
per-utterance mean normalisation, ``models.features.FbankConfig()``'s defaults.
"""

from __future__ import annotations

import torch

from models.hub.importers import ImportedModel, choose_arch, load_into_preset, match_preset

LAYOUT = "3dspeaker"
PREFIX = "3dspeaker/"
# A key only that family's layout has: detection builds only the presets of the family found.
SIGNATURES = {
    "campplus": "head.conv1.weight",
    "ecapa_tdnn": "blocks.0.conv.conv.weight",
    "eres2net": "fuse_mode12.local_att.0.weight",
    "eres2netv2": "fuse34.local_att.0.weight",
    "resnet": "layer1.0.conv2.weight",
}


def detect(state: dict[str, torch.Tensor]) -> str | None:
    return match_preset(state, PREFIX, SIGNATURES)


def convert(state: dict[str, torch.Tensor], arch: str | None = None) -> ImportedModel:
    state = {k.removeprefix("module."): v for k, v in state.items()}
    arch = choose_arch(state, arch, PREFIX, LAYOUT, SIGNATURES)
    model = load_into_preset(state, PREFIX + arch, f"3D-Speaker {arch}")
    return ImportedModel(model=model, arch=arch, meta={"source": LAYOUT, "arch": arch})
