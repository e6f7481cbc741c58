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
- ECAPA-TDNN (``wespeaker/models/ecapa_tdnn.py``: ``ECAPA_TDNN_c512`` / ``_c1024`` and the
  ``GLOB`` variants, whose pooling attention also sees the utterance mean/std): our
  ``ecapa_tdnn`` family in its WeSpeaker variant (zero padding, last Res2Net split passed
  through, no MFA BatchNorm, ``ASTP`` pooling; see ``models.speaker.ecapa_tdnn``). Keys are
  renamed (``layer2.se_res2block.1.convs.0`` -> ``blocks.1.res2net_block.blocks.0.conv.conv``
  ...) and the SE and final ``nn.Linear`` weights get the 1x1-conv axis. Arch
  ``ecapa_tdnn[_glob]_c<channels>_<embed>``; feature, channel, Res2Net, SE, attention and
  embedding sizes come from the shapes. The ``emb_bn`` variant (a BatchNorm after the
  embedding layer, ``bn2.*``) has no voxray counterpart and is refused.

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


_ECAPA_BLOCK = {  # WeSpeaker SE_Res2Block sub-module -> ours (the Res2Net convs/bns separately)
    "0.conv": "tdnn1.conv.conv",
    "0.bn": "tdnn1.norm.norm",
    "2.conv": "tdnn2.conv.conv",
    "2.bn": "tdnn2.norm.norm",
    "3.linear1": "se_block.conv1.conv",
    "3.linear2": "se_block.conv2.conv",
}
_ECAPA_TOP = {  # WeSpeaker ECAPA_TDNN module -> ours
    "layer1.conv": "blocks.0.conv.conv",
    "layer1.bn": "blocks.0.norm.norm",
    "conv": "mfa.conv.conv",
    "pool.linear1": "asp.linear1",
    "pool.linear2": "asp.linear2",
    "bn": "asp_bn.norm",
    "linear": "fc.conv",
}


def _ecapa_key(key: str) -> str:
    module, _, param = key.rpartition(".")
    if module in _ECAPA_TOP:
        return f"{_ECAPA_TOP[module]}.{param}"
    m = re.fullmatch(r"layer(\d+)\.se_res2block\.(\d\.\w+?)(?:\.(\d+))?", module)
    if m is None:
        raise ValueError(f"unexpected WeSpeaker ECAPA-TDNN key {key!r}")
    block, sub, idx = int(m.group(1)) - 1, m.group(2), m.group(3)
    if sub in ("1.convs", "1.bns") and idx is not None:
        inner = "conv.conv" if sub == "1.convs" else "norm.norm"
        return f"blocks.{block}.res2net_block.blocks.{idx}.{inner}.{param}"
    if sub in _ECAPA_BLOCK and idx is None:
        return f"blocks.{block}.{_ECAPA_BLOCK[sub]}.{param}"
    raise ValueError(f"unexpected WeSpeaker ECAPA-TDNN key {key!r}")


def _ecapa_state(s: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """WeSpeaker ECAPA keys -> ours; ``nn.Linear`` weights (SE, embedding) get the conv axis."""
    out = {}
    for key, value in s.items():
        new = _ecapa_key(key)
        if key.endswith("weight") and value.ndim == 2:  # Linear (out, in) -> Conv1d (out, in, 1)
            value = value.unsqueeze(-1)
        out[new] = value
    return out


def _ecapa_config(s: dict[str, torch.Tensor]) -> dict[str, object]:
    stem = s["layer1.conv.weight"]  # (C, feat_dim, 5)
    channels, feat_dim = stem.shape[0], stem.shape[1]
    n_blocks = len({m.group(1) for k in s if (m := re.match(r"layer(\d+)\.se_res2block", k))})
    mfa = s["conv.weight"].shape[0]
    width = s["layer2.se_res2block.1.convs.0.weight"].shape[0]
    return {
        "feat_dim": feat_dim,
        "embed_dim": s["linear.weight"].shape[0],
        "channels": (channels,) * (n_blocks + 1) + (mfa,),
        "kernel_sizes": (5,) + (3,) * n_blocks + (1,),
        "dilations": (1,) + tuple(range(2, n_blocks + 2)) + (1,),
        "attention_channels": s["pool.linear1.weight"].shape[0],
        "res2net_scale": channels // width,
        "se_channels": s["layer2.se_res2block.3.linear1.weight"].shape[0],
        "global_context": s["pool.linear1.weight"].shape[1] == 3 * mfa,
        "padding": "zeros",
        "res2net_passthrough": "last",
        "mfa_norm": False,
        "pooling": "astp",
    }


def detect(state: dict[str, torch.Tensor]) -> str | None:
    s = clean(state)
    if "layer1.conv.weight" in s and "pool.linear1.weight" in s and "linear.weight" in s:
        glob = "_glob" if s["pool.linear1.weight"].shape[1] == 3 * s["conv.weight"].shape[0] else ""
        channels, embed = s["layer1.conv.weight"].shape[0], s["linear.weight"].shape[0]
        return f"ecapa_tdnn{glob}_c{channels}_{embed}"
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
            "not a WeSpeaker ResNet, CAM++ or ECAPA-TDNN state dict (no head.conv1/xvector.*, "
            "layer1.0.conv2/seg_1 or layer1.conv/pool.linear1/linear keys)"
        )
    if arch is not None and arch != found:
        raise ValueError(f"--arch {arch} given, but the state dict is WeSpeaker {found}")
    if found.startswith("bottleneck"):
        raise ValueError(
            f"WeSpeaker {found}: bottleneck ResNets (ResNet50 and deeper) have no voxray family"
        )
    if found.startswith("ecapa_tdnn"):
        if any(k.startswith("bn2.") for k in s):
            raise ValueError(
                f"WeSpeaker {found} with emb_bn=True (a BatchNorm after the embedding layer, "
                "bn2.*) has no voxray counterpart"
            )
        ecapa = _ecapa_config(s)
        model = load_into_preset(_ecapa_state(s), "ecapa_tdnn", f"WeSpeaker {found}", ecapa)
    elif found.startswith("campplus"):
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
