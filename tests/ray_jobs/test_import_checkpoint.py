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
from tests.conftest import reference_state_dicts  # noqa: E402

ENTRIES = [
    "campplus_192",
    "campplus_512",
    "eres2net_192",
    "eres2net_base_512",
    "eres2netv2_192",
    "ecapa_tdnn_c1024_192",
    "resnet34_256",
]


def synth_state_dict(spec: dict, seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    out = {}
    for key, shape in spec["state_dict"].items():
        if key.endswith("num_batches_tracked"):
            out[key] = torch.tensor(7)
        elif key.endswith("running_var"):
            out[key] = torch.rand(shape, generator=g) + 0.5
        else:
            out[key] = 0.05 * torch.randn(shape, generator=g)
    assert (
        sum(v.numel() for k, v in out.items() if "running" not in k and "num_batches" not in k) > 0
    )
    return out


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
