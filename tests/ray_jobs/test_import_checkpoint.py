"""3D-Speaker checkpoints import for every reference entry and rebuild via load_model.

The state dicts are synthesised from ``shared/reference/3dspeaker_state_dicts.json`` (the
published layout: every key with its shape), so the test fails if any key or shape of ours
differs from the reference.
"""

from __future__ import annotations

import sys

import pytest
import torch

sys.modules.setdefault("ray", None)

from models import load_model, read_checkpoint  # noqa: E402
from ray_jobs.import_checkpoint.cli import main  # noqa: E402
from tests.conftest import REFERENCE_ENTRIES as ENTRIES  # noqa: E402
from tests.conftest import reference_state_dicts, synth_state_dict  # noqa: E402


@pytest.mark.parametrize("arch", ENTRIES)
def test_import_every_reference_entry(arch, tmp_path):
    spec = reference_state_dicts()[arch]
    state = synth_state_dict(spec, seed=len(arch))
    src = tmp_path / f"{arch}.bin"
    torch.save(state, src)
    assert main(["--from", "3dspeaker", "--arch", arch, str(src), str(tmp_path / "out.pt")]) == 0
    model = load_model(tmp_path / "out.pt")
    # parameter count and every tensor carried over bit-exactly
    assert sum(p.numel() for p in model.parameters()) == spec["num_parameters"]
    for key, value in model.state_dict().items():
        assert torch.equal(value, state[key]), key
    meta = read_checkpoint(tmp_path / "out.pt")["meta"]
    assert meta["source"] == "3dspeaker" and meta["arch"] == arch
    with torch.no_grad():
        emb = model(torch.randn(1, 200, 80))
    assert emb.shape[-1] == spec["constructor_args"].get(
        "embedding_size", spec["constructor_args"].get("lin_neurons")
    )


def test_wrapped_and_prefixed_state_dicts_import(tmp_path):
    state = synth_state_dict(reference_state_dicts()["campplus_192"], seed=0)
    src = tmp_path / "wrapped.ckpt"
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}}, src)
    assert (
        main(["--from", "3dspeaker", "--arch", "campplus_192", str(src), str(tmp_path / "o.pt")])
        == 0
    )


def test_bad_inputs_fail_clearly(tmp_path, caplog):
    state = synth_state_dict(reference_state_dicts()["campplus_192"], seed=0)
    src = tmp_path / "c.bin"
    torch.save(state, src)
    assert main(["--from", "3dspeaker", "--arch", "nope", str(src), str(tmp_path / "o.pt")]) == 2
    assert "known:" in caplog.text
    assert (
        main(["--from", "3dspeaker", "--arch", "eres2net_192", str(src), str(tmp_path / "o.pt")])
        == 2
    )
    assert "does not match" in caplog.text
    bad = tmp_path / "bad.bin"
    bad.write_bytes(b"not a checkpoint")
    assert (
        main(["--from", "3dspeaker", "--arch", "campplus_192", str(bad), str(tmp_path / "o.pt")])
        == 2
    )
    assert "not a readable" in caplog.text
    assert not (tmp_path / "o.pt").exists()


def test_arch_is_detected_when_left_out(tmp_path):
    state = synth_state_dict(reference_state_dicts()["eres2net_192"], seed=1)
    src = tmp_path / "e.ckpt"
    torch.save(state, src)
    assert main([str(src), str(tmp_path / "o.pt")]) == 0  # layout and arch both detected
    meta = read_checkpoint(tmp_path / "o.pt")["meta"]
    assert meta["source"] == "3dspeaker" and meta["arch"] == "eres2net_192"


def test_a_model_name_imports_and_every_checkpoint_flag_takes_it(tmp_path, monkeypatch):
    from ray_jobs.cli import existing_checkpoint
    from tests.hub_server import HubServer

    spec = reference_state_dicts()["campplus_192"]
    src = tmp_path / "c.bin"
    torch.save(synth_state_dict(spec, seed=5), src)
    monkeypatch.setenv("VOXRAY_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("VOXRAY_OFFLINE", raising=False)
    name = "modelscope:iic/speech_campplus_sv_zh-cn_16k-common"
    with HubServer() as hub:
        monkeypatch.setenv("MODELSCOPE_DOMAIN", hub.url)
        key = ("modelscope", name.split(":", 1)[1], "v1.0.0", "campplus_cn_common.bin")
        hub.state.files[key] = src.read_bytes()
        assert main([name, str(tmp_path / "named.pt")]) == 0
        assert hub.state.total > 0
        hub.state.requests.clear()
        resolved = existing_checkpoint(name)
        assert hub.state.total == 0
    assert read_checkpoint(resolved)["meta"]["arch"] == "campplus_192"
    assert (tmp_path / "named.pt").read_bytes() == resolved.read_bytes()
    with pytest.raises(FileNotFoundError, match="give a TSE"):
        existing_checkpoint(tmp_path / "missing.pt", "give a TSE .pt file")
