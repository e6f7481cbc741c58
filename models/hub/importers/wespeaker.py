"""WeSpeaker (wenet-e2e/wespeaker, ``wespeaker/models``) state dicts -> voxray models.

WeSpeaker publishes ``avg_model.pt`` (a bare state dict, with the training-only margin head
under ``projection.*``, which its own ``load_checkpoint`` skips with ``strict=False`` and we
drop) beside ``config.yaml``; pyannote repackages the VoxCeleb ResNet34 as
``pytorch_model.bin``, a Lightning checkpoint whose ``state_dict`` holds the network under
``resnet.*``. Layouts understood, detected from the keys and shapes:

- ResNet with basic blocks (``ResNet18``/``ResNet34`` of ``wespeaker/models/resnet.py``):
  our ``resnet`` family; stage depths, width, embedding size and the optional second
  embedding layer (``two_emb_layer``) are read from the shapes; TSTP pooling. The bottleneck
  ResNets (50/101/152/221/293) have no voxray family yet and are refused by name.
- CAM++ (``wespeaker/models/campplus.py``): the same key layout as 3D-Speaker's, our
  ``campplus`` family; the embedding size is read from the shapes.

Front end, as WeSpeaker's ``Speaker.compute_features`` (``wespeaker/cli/speaker.py``): 80-bin
Kaldi fbank with the hamming window on int16-scaled samples (it loads audio with
``normalize=False``), then the per-utterance mean subtracted; recorded in the checkpoint's
``meta["fbank"]``. One deliberate difference: WeSpeaker leaves ``kaldi.fbank``'s default
dither (1.0) on at inference, so its embeddings are not deterministic; we use dither 0.
WeSpeaker's TSTP adds 1e-7 to the pooled variance where 3D-Speaker adds 1e-8 (ResNet) or
nothing (CAM++): the configs' ``pool_eps`` / ``stats_eps`` (with random weights the pooled
variance is small enough for this to move embeddings by 1e-3).
"""

from __future__ import annotations

import re
from dataclasses import asdict

import torch

from models.features import FbankConfig
from models.hub.importers import ImportedModel, load_into_preset

LAYOUT = "wespeaker"
FBANK = FbankConfig(window_type="hamming", waveform_scale=32768.0)
_DEPTHS = {(2, 2, 2, 2): 18, (3, 4, 6, 3): 34}


def clean(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Drop DataParallel prefixes and the margin head; unwrap pyannote's ``resnet.*``."""
    state = {k.removeprefix("module."): v for k, v in state.items()}
    if any(k.startswith("resnet.") for k in state):  # pyannote's WeSpeakerResNet34 wrapper
        state = {k.removeprefix("resnet."): v for k, v in state.items() if k.startswith("resnet.")}
    return {k: v for k, v in state.items() if not k.startswith("projection.")}


def _resnet_blocks(state: dict[str, torch.Tensor]) -> tuple[int, ...]:
    blocks = []
    for stage in range(1, 5):
        idx = {int(m.group(1)) for k in state if (m := re.match(rf"layer{stage}\.(\d+)\.", k))}
        blocks.append(max(idx) + 1 if idx else 0)
    return tuple(blocks)


def detect(state: dict[str, torch.Tensor]) -> str | None:
    s = clean(state)
    if "head.conv1.weight" in s and "xvector.dense.linear.weight" in s:
        return f"campplus_{s['xvector.dense.linear.weight'].shape[0]}"
    if "layer1.0.conv2.weight" in s and "seg_1.weight" in s and "layer1.0.convs.0.weight" not in s:
        if any(k.endswith(".conv3.weight") for k in s):
            blocks = _resnet_blocks(s)
            return f"bottleneck_resnet{blocks}"  # recognised, refused by convert
        depth = _DEPTHS.get(_resnet_blocks(s), "")
        return f"resnet{depth}_{s['seg_1.weight'].shape[0]}"
    return None


def convert(state: dict[str, torch.Tensor], arch: str | None = None) -> ImportedModel:
    s = clean(state)
    found = detect(s)
    if found is None:
        raise ValueError(
            "not a WeSpeaker ResNet or CAM++ state dict (no head.conv1/xvector.* or "
            "layer1.0.conv2/seg_1 keys)"
        )
    if arch is not None and arch != found:
        raise ValueError(f"--arch {arch} given, but the state dict is WeSpeaker {found}")
    if found.startswith("bottleneck"):
        raise ValueError(
            f"WeSpeaker {found}: bottleneck ResNets (ResNet50 and deeper) have no voxray family"
        )
    if found.startswith("campplus"):
        cfg = {
            "feat_dim": 80,
            "embed_dim": s["xvector.dense.linear.weight"].shape[0],
            "stats_eps": 1e-7,  # WeSpeaker pools with its TSTP
        }
        model = load_into_preset(s, "campplus", f"WeSpeaker {found}", cfg)
    else:
        cfg = {
            "feat_dim": 80,
            "embed_dim": s["seg_1.weight"].shape[0],
            "num_blocks": _resnet_blocks(s),
            "m_channels": s["conv1.weight"].shape[0],
            "two_emb_layer": "seg_2.weight" in s,
            "pool_eps": 1e-7,
        }
        model = load_into_preset(s, "resnet", f"WeSpeaker {found}", cfg)
    return ImportedModel(
        model=model, arch=found, meta={"source": LAYOUT, "arch": found, "fbank": asdict(FBANK)}
    )
