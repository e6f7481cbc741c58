"""SpeechBrain ECAPA-TDNN (``speechbrain.lobes.models.ECAPA_TDNN``) -> voxray ``ecapa_tdnn``.

SpeechBrain publishes ``embedding_model.ckpt`` (a bare state dict) beside ``hyperparams.yaml``,
``mean_var_norm_emb.ckpt`` and ``classifier.ckpt`` (``speechbrain/spkrec-ecapa-voxceleb``). Its
ECAPA-TDNN is the network our ``ecapa_tdnn`` family follows (3D-Speaker's ECAPA is a copy of
it): the keys are the same, so the weights load with ``strict=True``; channels, kernel sizes
(from the conv weights), attention and SE widths and the embedding size are read from the
shapes. Dilations are not in a state dict: SpeechBrain's defaults (1, 2, 3, 4, 1), which its
published recipes use, are assumed.

Front end: SpeechBrain's ``Fbank(n_mels=80)`` and sentence-level ``InputNormalization`` (mean
only), ``FbankConfig(kind="speechbrain")``, recorded in ``meta["fbank"]``. The embedding-level
``mean_var_norm_emb`` is not needed: SpeechBrain's own verification (``SpeakerRecognition``)
scores un-normalised embeddings by cosine, as we do.
"""

from __future__ import annotations

from dataclasses import asdict

import torch

from models.features import FbankConfig
from models.hub.importers import ImportedModel, load_into_preset

LAYOUT = "speechbrain"
FBANK = FbankConfig(kind="speechbrain")
_STEM = "blocks.0.conv.conv.weight"


def _config(s: dict[str, torch.Tensor]) -> dict:
    n_blocks = 1 + max(int(k.split(".")[1]) for k in s if k.startswith("blocks."))
    convs = [s[_STEM]] + [s[f"blocks.{i}.tdnn1.conv.conv.weight"] for i in range(1, n_blocks)]
    blocks = [s[f"blocks.{i}.res2net_block.blocks.0.conv.conv.weight"] for i in range(1, n_blocks)]
    channels = [c.shape[0] for c in convs] + [s["mfa.conv.conv.weight"].shape[0]]
    kernels = (
        [s[_STEM].shape[2]] + [b.shape[2] for b in blocks] + [s["mfa.conv.conv.weight"].shape[2]]
    )
    return {
        "feat_dim": s[_STEM].shape[1],
        "embed_dim": s["fc.conv.weight"].shape[0],
        "channels": tuple(channels),
        "kernel_sizes": tuple(kernels),
        "dilations": (1, *range(2, n_blocks + 1), 1),  # SpeechBrain's default: 1, 2, 3, 4, 1
        "attention_channels": s["asp.tdnn.conv.conv.weight"].shape[0],
        "res2net_scale": channels[1] // blocks[0].shape[0] if blocks else 8,
        "se_channels": s["blocks.1.se_block.conv1.conv.weight"].shape[0],
        "global_context": s["asp.tdnn.conv.conv.weight"].shape[1] == 3 * channels[-1],
    }


def detect(state: dict[str, torch.Tensor]) -> str | None:
    s = {k.removeprefix("module."): v for k, v in state.items()}
    if _STEM not in s or "fc.conv.weight" not in s or "mfa.conv.conv.weight" not in s:
        return None
    return f"ecapa_tdnn_c{s[_STEM].shape[0]}_{s['fc.conv.weight'].shape[0]}"


def convert(state: dict[str, torch.Tensor], arch: str | None = None) -> ImportedModel:
    s = {k.removeprefix("module."): v for k, v in state.items()}
    found = detect(s)
    if found is None:
        raise ValueError("not a SpeechBrain ECAPA-TDNN state dict (no blocks.0/mfa/fc keys)")
    if arch is not None and arch != found:
        raise ValueError(f"--arch {arch} given, but the state dict is SpeechBrain {found}")
    model = load_into_preset(s, "ecapa_tdnn", f"SpeechBrain {found}", _config(s))
    return ImportedModel(
        model=model, arch=found, meta={"source": LAYOUT, "arch": found, "fbank": asdict(FBANK)}
    )
