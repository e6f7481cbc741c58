"""models.hub against a real HTTP server in each hub's layout (tests/hub_server.py).

The served files are published-layout state dicts (3D-Speaker's key list from
``shared/reference``, small random weights), fetched through the real clients
(``huggingface_hub`` with ``HF_ENDPOINT``; ModelScope's file API with ``MODELSCOPE_DOMAIN``).
Covered: a cold download + conversion and the cache hit after it (no request), a checksum
mismatch, a corrupted cache file, an interrupted download, offline mode, an unreachable hub.
"""

from __future__ import annotations

import io
import json
import socket
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.modules.setdefault("ray", None)

from models import load_model, read_checkpoint  # noqa: E402
from models.hub import HubError, resolve_checkpoint  # noqa: E402
from models.hub.download import HubFile, fetch  # noqa: E402
from tests.conftest import reference_state_dicts, synth_state_dict  # noqa: E402
from tests.hub_server import HubServer  # noqa: E402

MS_ID = "iic/speech_campplus_sv_zh-cn_16k-common"
MS_KEY = ("modelscope", MS_ID, "v1.0.0", "campplus_cn_common.bin")
HF_KEY = ("hf", "someorg/campplus", "main", "weights/model.bin")


@pytest.fixture(scope="module")
def campplus_state() -> dict[str, torch.Tensor]:
    return synth_state_dict(reference_state_dicts()["campplus_192"], seed=3)


@pytest.fixture(scope="module")
def campplus_bytes(campplus_state) -> bytes:
    buf = io.BytesIO()
    torch.save(campplus_state, buf)
    return buf.getvalue()


@pytest.fixture
def hub(tmp_path, monkeypatch, campplus_bytes):
    monkeypatch.setenv("VOXRAY_CACHE", str(tmp_path / "cache"))
    for var in ("VOXRAY_OFFLINE", "HF_HUB_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    with HubServer() as server:
        monkeypatch.setenv("HF_ENDPOINT", server.url)
        monkeypatch.setenv("MODELSCOPE_DOMAIN", server.url)
        server.state.files[MS_KEY] = campplus_bytes
        server.state.files[HF_KEY] = campplus_bytes
        yield server


def hub_file(key: tuple[str, str, str, str]) -> HubFile:
    hub, repo, revision, path = key  # the server's key order
    return HubFile(hub, repo, path, revision)


def cache_files(tmp_path) -> list[str]:
    root = tmp_path / "cache"
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def test_modelscope_name_downloads_converts_then_hits_the_cache(hub, campplus_state, tmp_path):
    path = resolve_checkpoint(f"modelscope:{MS_ID}")
    assert hub.state.total >= 2  # listing + file
    ckpt = read_checkpoint(path)
    assert ckpt["model_name"] == "campplus" and ckpt["meta"]["arch"] == "campplus_192"
    assert ckpt["meta"]["hub"] == f"modelscope:{MS_ID}" and ckpt["meta"]["revision"] == "v1.0.0"
    model = load_model(f"modelscope:{MS_ID}")
    for key, value in model.state_dict().items():
        assert torch.equal(value, campplus_state[key]), key
    hub.state.requests.clear()
    assert resolve_checkpoint(f"modelscope:{MS_ID}") == path
    load_model(f"modelscope:{MS_ID}")
    assert hub.state.total == 0  # second resolve: cache only
    # the old organisation name maps to the same model, as infer_sv.py does
    assert resolve_checkpoint(f"modelscope:{MS_ID.replace('iic/', 'damo/')}") == path
    assert not [f for f in cache_files(tmp_path) if ".part" in f or f.endswith(".tmp")]


def test_hf_name_with_file_detects_the_layout(hub, tmp_path):
    path = resolve_checkpoint("hf:someorg/campplus/weights/model.bin")
    meta = read_checkpoint(path)["meta"]
    assert meta["source"] == "3dspeaker" and meta["arch"] == "campplus_192"
    gets = [r for r in hub.state.requests if r.startswith("GET /someorg/campplus/resolve/")]
    assert gets and all(r.endswith("/weights/model.bin") for r in gets)
    hub.state.requests.clear()
    assert resolve_checkpoint("hf:someorg/campplus/weights/model.bin") == path
    assert hub.state.total == 0
    # a revision is part of the cache key: @v2 is a new download (and is served)
    hub.state.files[("hf", "someorg/campplus", "v2", "weights/model.bin")] = hub.state.files[HF_KEY]
    assert resolve_checkpoint("hf:someorg/campplus@v2/weights/model.bin").is_file()
    assert hub.state.total > 0


# A hub whose file does not match its published sha256, and a connection cut mid-body (a
# resume request then fails): a clear error naming the cache path, nothing cached under any
# name (no partial file), and the next try, with the hub fixed, succeeds.
@pytest.mark.parametrize(
    ("fault", "message"),
    [("bad_digest", "checksum mismatch"), ("cut_body", "cannot download")],
    ids=["checksum", "interrupted"],
)
@pytest.mark.parametrize("key", [MS_KEY, HF_KEY], ids=["modelscope", "hf"])
def test_failed_download_caches_nothing_and_a_retry_succeeds(hub, key, fault, message, tmp_path):
    setattr(hub.state, fault, True)
    f = hub_file(key)
    with pytest.raises(HubError, match=message) as err:
        fetch(f)
    assert str(f.cache_path) in str(err.value)
    assert cache_files(tmp_path) == []
    setattr(hub.state, fault, False)
    assert fetch(f).read_bytes() == hub.state.files[key]


def test_corrupted_cache_file_is_downloaded_again_or_reported_offline(hub, monkeypatch):
    f = hub_file(MS_KEY)
    path = fetch(f)
    path.write_bytes(b"bit rot")
    monkeypatch.setenv("VOXRAY_OFFLINE", "1")
    with pytest.raises(HubError, match="not in the cache"):
        fetch(f)
    monkeypatch.delenv("VOXRAY_OFFLINE")
    hub.state.requests.clear()
    assert fetch(f).read_bytes() == hub.state.files[MS_KEY]
    assert hub.state.total > 0


@pytest.mark.parametrize("var", ["VOXRAY_OFFLINE", "HF_HUB_OFFLINE"])
def test_offline_mode_uses_the_cache_only(hub, monkeypatch, var):
    monkeypatch.setenv(var, "1")
    with pytest.raises(HubError, match="offline") as err:
        resolve_checkpoint(f"modelscope:{MS_ID}")
    assert "campplus_cn_common.bin" in str(err.value) and "cache" in str(err.value)
    assert hub.state.total == 0
    monkeypatch.delenv(var)
    path = resolve_checkpoint(f"modelscope:{MS_ID}")
    monkeypatch.setenv(var, "1")
    hub.state.requests.clear()
    assert resolve_checkpoint(f"modelscope:{MS_ID}") == path
    assert hub.state.total == 0


def test_unreachable_hub_names_the_file_and_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("VOXRAY_CACHE", str(tmp_path / "cache"))
    with socket.socket() as s:  # a port with nothing listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("MODELSCOPE_DOMAIN", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    for spec, name in [
        (f"modelscope:{MS_ID}", "campplus_cn_common.bin"),
        ("hf:Wespeaker/wespeaker-voxceleb-resnet34-LM", "avg_model.pt"),
    ]:
        with pytest.raises(HubError, match="cannot download") as err:
            resolve_checkpoint(spec)
        assert name in str(err.value) and str(tmp_path / "cache") in str(err.value)


def test_bad_specs_fail_clearly(tmp_path):
    with pytest.raises(FileNotFoundError, match="modelscope:"):
        resolve_checkpoint(tmp_path / "missing.pt")
    with pytest.raises(KeyError, match="known: iic/"):
        resolve_checkpoint("modelscope:iic/no_such_model")
    with pytest.raises(KeyError, match="no default weights file"):
        resolve_checkpoint("hf:someorg/unknown")
    with pytest.raises(ValueError, match="bad hf: spec"):
        resolve_checkpoint("hf:not-a-repo")
    with pytest.raises(KeyError, match="no importer ships weights"):
        resolve_checkpoint("pip:no_such_package")


@pytest.mark.parametrize(
    ("spec", "served", "layout", "window"),
    [
        ("hf:Wespeaker/wespeaker-voxceleb-resnet34-LM", "avg_model.pt", "wespeaker", "hamming"),
        ("hf:pyannote/wespeaker-voxceleb-resnet34-LM", "pytorch_model.bin", "wespeaker", "hamming"),
    ],
)
def test_known_hf_repos_take_their_layout_and_front_end(hub, spec, served, layout, window):
    """A named repo needs no file or layout: the table gives both, and the converted checkpoint
    carries the publisher's front end."""
    from models.pipelines.speaker import SpeakerEmbedder

    state = synth_state_dict(reference_state_dicts()["resnet34_256"], seed=1)
    wes = {k: v for k, v in state.items() if not k.startswith(("seg_bn_1", "seg_2"))}
    if served == "pytorch_model.bin":  # pyannote's Lightning packaging
        wes = {"state_dict": {f"resnet.{k}": v for k, v in wes.items()}}
    buf = io.BytesIO()
    torch.save(wes, buf)
    hub.state.files[("hf", spec.removeprefix("hf:"), "main", served)] = buf.getvalue()
    embedder = SpeakerEmbedder.from_checkpoint(spec)
    meta = read_checkpoint(spec)["meta"]
    assert meta["source"] == layout and meta["arch"] == "resnet34_256"
    assert embedder.fbank_cfg.window_type == window


def test_wespeaker_ecapa_repo_by_name(hub):
    """A WeSpeaker ECAPA-TDNN repo of the table (served with WeSpeaker's key layout, the small
    model of the WeSpeaker golden fixture) resolves, is detected and converted."""
    golden = Path(__file__).resolve().parents[1] / "fixtures" / "wespeaker" / "golden.npz"
    with np.load(golden) as z:
        spec, seed = json.loads(str(z["ecapa_glob_c64_keys"])), int(z["ecapa_glob_c64_seed"])
    state = synth_state_dict({"state_dict": spec}, seed=seed)
    buf = io.BytesIO()
    torch.save(state, buf)
    repo = "Wespeaker/wespeaker-voxceleb-ecapa-tdnn512"
    hub.state.files[("hf", repo, "main", "avg_model.pt")] = buf.getvalue()
    meta = read_checkpoint(resolve_checkpoint(f"hf:{repo}"))["meta"]
    assert meta["source"] == "wespeaker" and meta["arch"] == "ecapa_tdnn_glob_c64_96"
    model = load_model(f"hf:{repo}")
    assert model.cfg.pooling == "astp" and model.cfg.res2net_passthrough == "last"
    assert torch.equal(model.state_dict()["fc.conv.weight"][..., 0], state["linear.weight"])
