"""A checkpoint spec -> a voxray checkpoint file: a local path, or a published model by name.

    resolve_checkpoint("runs/demo/model.pt")                                  # as today
    resolve_checkpoint("modelscope:iic/speech_campplus_sv_zh-cn_16k-common")  # 3D-Speaker
    resolve_checkpoint("hf:Wespeaker/wespeaker-voxceleb-resnet34-LM")         # WeSpeaker
    resolve_checkpoint("hf:pyannote/wespeaker-voxceleb-resnet34-LM")          # pyannote's packaging
    resolve_checkpoint("hf:some/repo@v1.0/model.pt")                          # layout detected
    resolve_checkpoint("pip:<package>")        # weights shipped inside an installed package

A named model is downloaded into the cache (``models/hub/download.py``), converted by its
layout's importer (``models/hub/importers/``) and the converted voxray checkpoint is cached as
``$VOXRAY_CACHE/checkpoints/<source>-<sha256 of the published file>-<CONVERSION>.pt``, so the second
resolve of a name reads two small files and makes no network request.

The schemes are one table, ``SCHEMES`` (scheme -> parser of the rest of the spec into a
``Source``); ``pip:<package>`` needs no entry per package: the importer whose ``LAYOUT`` is the
package name and which defines ``default_source()`` provides the file.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import logging
import os
import pickle
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from models.checkpoint import save_checkpoint
from models.hub.download import HubFile, cache_root, fetch, sha256_file
from models.hub.importers import importer, layouts, unwrap_state_dict

log = logging.getLogger("models.hub.resolve")

# Part of every converted checkpoint's cache name: bump it when an importer's output changes
# (a fixed mapping, a new front-end field), so caches made by older code are not reused.
CONVERSION = "c1"

# 3D-Speaker's published models, as the model table of its ``speakerlab/bin/infer_sv.py``
# (modelscope/3D-Speaker @ 8f16ab0) maps them: id -> (revision, file, our ``3dspeaker/<entry>``).
# All use its ``FBank(80, sample_rate=16000, mean_nor=True)`` front end: ``FbankConfig()``.
MODELSCOPE_MODELS: dict[str, tuple[str, str, str]] = {
    "iic/speech_campplus_sv_zh-cn_16k-common": ("v1.0.0", "campplus_cn_common.bin", "campplus_192"),
    "iic/speech_eres2net_sv_zh-cn_16k-common": (
        "v1.0.5",
        "pretrained_eres2net_aug.ckpt",
        "eres2net_huge_192",
    ),
    "iic/speech_eres2netv2_sv_zh-cn_16k-common": (
        "v1.0.1",
        "pretrained_eres2netv2.ckpt",
        "eres2netv2_192",
    ),
    "iic/speech_eres2netv2w24s4ep4_sv_zh-cn_16k-common": (
        "v1.0.1",
        "pretrained_eres2netv2w24s4ep4.ckpt",
        "eres2netv2_w24s4ep4_192",
    ),
    "iic/speech_eres2net_base_200k_sv_zh-cn_16k-common": (
        "v1.0.0",
        "pretrained_eres2net.pt",
        "eres2net_base_512",
    ),
    "iic/speech_campplus_sv_zh_en_16k-common_advanced": (
        "v1.0.0",
        "campplus_cn_en_common.pt",
        "campplus_192",
    ),
    "iic/speech_campplus_sv_en_voxceleb_16k": ("v1.0.2", "campplus_voxceleb.bin", "campplus_512"),
    "iic/speech_eres2net_sv_en_voxceleb_16k": (
        "v1.0.2",
        "pretrained_eres2net.ckpt",
        "eres2net_192",
    ),
    "iic/speech_eres2net_base_sv_zh-cn_3dspeaker_16k": (
        "v1.0.1",
        "eres2net_base_model.ckpt",
        "eres2net_base_512",
    ),
    "iic/speech_eres2net_large_sv_zh-cn_3dspeaker_16k": (
        "v1.0.0",
        "eres2net_large_model.ckpt",
        "eres2net_large_512",
    ),
    "iic/speech_ecapa-tdnn_sv_zh-cn_cnceleb_16k": (
        "v1.0.0",
        "ecapa-tdnn.ckpt",
        "ecapa_tdnn_c1024_192",
    ),
    "iic/speech_ecapa-tdnn_sv_zh-cn_3dspeaker_16k": (
        "v1.0.0",
        "ecapa-tdnn.ckpt",
        "ecapa_tdnn_c1024_192",
    ),
    "iic/speech_ecapa-tdnn_sv_en_voxceleb_16k": (
        "v1.0.1",
        "ecapa_tdnn.bin",
        "ecapa_tdnn_c1024_192",
    ),
}

# Hugging Face repositories we know: repo -> (default weights file, layout). Any other repo
# works with an explicit ``/file``; its layout is then detected from the state dict.
HF_MODELS: dict[str, tuple[str, str]] = {
    # WeSpeaker's model folders hold avg_model.pt + config.yaml (its cli's load_model_pt).
    "Wespeaker/wespeaker-voxceleb-resnet34-LM": ("avg_model.pt", "wespeaker"),
    "Wespeaker/wespeaker-voxceleb-resnet34": ("avg_model.pt", "wespeaker"),
    "Wespeaker/wespeaker-voxceleb-campplus-LM": ("avg_model.pt", "wespeaker"),
    # ECAPA-TDNN repos as named in WeSpeaker's docs/pretrained.md (the 512 LM one has no
    # "voxceleb-" in its name there).
    "Wespeaker/wespeaker-voxceleb-ecapa-tdnn512": ("avg_model.pt", "wespeaker"),
    "Wespeaker/wespeaker-ecapa-tdnn512-LM": ("avg_model.pt", "wespeaker"),
    "Wespeaker/wespeaker-voxceleb-ecapa-tdnn1024": ("avg_model.pt", "wespeaker"),
    "Wespeaker/wespeaker-voxceleb-ecapa-tdnn1024-LM": ("avg_model.pt", "wespeaker"),
    "pyannote/wespeaker-voxceleb-resnet34-LM": ("pytorch_model.bin", "wespeaker"),
    "speechbrain/spkrec-ecapa-voxceleb": ("embedding_model.ckpt", "speechbrain"),
}


@dataclass(frozen=True)
class Source:
    """Where a named model's weights are and how to convert them."""

    key: str  # cache-key stem: scheme, repository, revision and file
    layout: str | None  # importer LAYOUT; None: detect from the state dict
    hub_file: HubFile | None = None  # a hub download, or
    local_file: Path | None = None  # a file already on this machine (pip:)
    arch: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)


def _modelscope(rest: str) -> Source:
    model_id, _, revision = rest.partition("@")
    if model_id.startswith("damo/"):  # the old organisation name, as infer_sv.py maps it
        model_id = "iic/" + model_id.removeprefix("damo/")
    if model_id not in MODELSCOPE_MODELS:
        raise KeyError(
            f"unknown ModelScope model {model_id!r}; known: {', '.join(sorted(MODELSCOPE_MODELS))}"
        )
    default_rev, file, arch = MODELSCOPE_MODELS[model_id]
    revision = revision or default_rev
    hub_file = HubFile("modelscope", model_id, file, revision)
    meta = {"hub": f"modelscope:{model_id}", "revision": revision}
    return Source(_key(hub_file), "3dspeaker", hub_file=hub_file, arch=arch, meta=meta)


def _hf(rest: str) -> Source:
    """``<org>/<name>[@revision][/file]``."""
    m = re.fullmatch(r"([^/@\s]+/[^/@\s]+)(?:@([^/\s]+))?(?:/(\S+))?", rest)
    if m is None:
        raise ValueError(f"bad hf: spec {rest!r}; expected hf:<org>/<name>[@revision][/file]")
    repo, revision, file = m.group(1), m.group(2) or "main", m.group(3)
    default_file, layout = HF_MODELS.get(repo, (None, None))
    if file is None:
        if default_file is None:
            raise KeyError(
                f"no default weights file known for hf:{repo}; give one (hf:{repo}/FILE) or "
                f"use a known repository: {', '.join(sorted(HF_MODELS))}"
            )
        file = default_file
    hub_file = HubFile("hf", repo, file, revision)
    meta = {"hub": f"hf:{repo}", "revision": revision}
    return Source(_key(hub_file), layout, hub_file=hub_file, meta=meta)


def _pip(rest: str) -> Source:
    module = layouts().get(rest)
    if module is None or not hasattr(module, "default_source"):
        with_source = sorted(k for k, m in layouts().items() if hasattr(m, "default_source"))
        raise KeyError(
            f"no importer ships weights for pip:{rest}; known: {', '.join(with_source) or 'none'}"
        )
    path = Path(module.default_source())
    meta = {"hub": f"pip:{rest}"}
    with contextlib.suppress(importlib.metadata.PackageNotFoundError):
        meta["package_version"] = importlib.metadata.version(rest)
    return Source(f"pip_{rest}", rest, local_file=path, meta=meta)


# scheme -> parser of what follows ``scheme:``. One entry per hub.
SCHEMES: dict[str, Callable[[str], Source]] = {"modelscope": _modelscope, "hf": _hf, "pip": _pip}


def _key(f: HubFile) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", f"{f.hub}_{f.repo}_{f.revision}_{f.file}")


def parse_spec(spec: str | os.PathLike) -> Source | None:
    """The ``Source`` of a named model, or None when ``spec`` is a plain path."""
    text = os.fspath(spec)
    scheme, sep, rest = text.partition(":")
    if not sep or scheme not in SCHEMES or Path(text).exists():
        return None
    return SCHEMES[scheme](rest)


def resolve_checkpoint(spec: str | os.PathLike) -> Path:
    """A voxray checkpoint file for ``spec``: a local path as it is (it must exist), or a
    published model by name (see the module docstring), downloaded and converted once."""
    source = parse_spec(spec)
    if source is None:
        path = Path(spec)
        if not path.is_file():
            raise FileNotFoundError(
                f"checkpoint {path} does not exist; give a voxray checkpoint file or a model "
                f"name ({', '.join(f'{s}:...' for s in SCHEMES)}; see README 'Pretrained models')"
            )
        return path
    return convert_source(source)


def convert_source(source: Source) -> Path:
    if source.hub_file is not None:
        local = fetch(source.hub_file)
        digest = local.with_name(local.name + ".sha256").read_text().strip()
    else:
        assert source.local_file is not None
        local = source.local_file
        if not local.is_file():
            raise FileNotFoundError(f"{local} (the weights of {source.key}) does not exist")
        digest = sha256_file(local)
    out = cache_root() / "checkpoints" / f"{source.key}-{digest[:16]}-{CONVERSION}.pt"
    if out.is_file():
        return out
    meta = {**source.meta, "source_sha256": digest}
    convert_file(source.layout, local, out, arch=source.arch, meta=meta)
    log.info("converted %s into %s", source.key, out)
    return out


# -- reading a published file ---------------------------------------------------------------


class _Stub:
    """Stand-in for a class a published checkpoint pickled next to its tensors (pyannote's
    task specifications, Lightning's hyper-parameters). Takes any arguments, does nothing."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __setstate__(self, state: Any) -> None:
        pass


class _LenientUnpickler(pickle.Unpickler):
    """``torch.load``'s unpickler for files that ``weights_only=True`` refuses because they pickle
    foreign objects beside the state dict: torch's tensor rebuilders and plain containers load,
    every other class becomes a ``_Stub`` (no code of the file's packages is imported or run)."""

    _ALLOWED = {
        ("collections", "OrderedDict"),
        ("builtins", "set"),
        ("builtins", "frozenset"),
        ("builtins", "slice"),
        ("torch", "Size"),
        ("torch", "device"),
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self._ALLOWED or (
            module == "torch._utils" and name.startswith("_rebuild_")
        ):
            return super().find_class(module, name)
        if module == "torch" and (name.endswith("Storage") or name in {"float32", "float16"}):
            return super().find_class(module, name)
        return _Stub


class _lenient_pickle:  # noqa: N801 (a pickle_module for torch.load)
    Unpickler = _LenientUnpickler
    load = staticmethod(pickle.load)


def load_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The tensors of a published checkpoint file (a bare state dict or a common wrapper)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist")
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        try:  # pyannote/Lightning files pickle their own classes beside the weights
            raw = torch.load(
                path, map_location="cpu", weights_only=False, pickle_module=_lenient_pickle
            )
        except Exception as exc:
            raise ValueError(f"{path} is not a readable PyTorch checkpoint: {exc}") from exc
    except Exception as exc:
        raise ValueError(f"{path} is not a readable PyTorch checkpoint: {exc}") from exc
    return unwrap_state_dict(raw)


def detect_layout(state: dict[str, torch.Tensor]) -> str:
    for name, module in sorted(layouts().items()):
        if module.detect(state) is not None:
            return name
    raise ValueError(
        "cannot tell which publisher's layout this state dict has; give --from "
        f"({', '.join(sorted(layouts()))})"
    )


def convert_file(
    layout: str | None,
    src: str | os.PathLike,
    dst: str | os.PathLike,
    arch: str | None = None,
    meta: dict[str, Any] | None = None,
) -> Path:
    """Published file ``src`` of ``layout`` (detected when None) -> voxray checkpoint ``dst``."""
    src = Path(src)
    state = load_state_dict(src)
    layout = layout or detect_layout(state)
    imported = importer(layout).convert(state, arch)
    full_meta = {
        **imported.meta,
        "source": layout,
        "arch": imported.arch,
        "source_file": src.name,
        **(meta or {}),
    }
    full_meta.setdefault("source_sha256", sha256_file(src))
    return save_checkpoint(imported.model, dst, meta=full_meta)
