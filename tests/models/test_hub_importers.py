"""WeSpeaker (and pyannote's packaging of it) importers against the reference's numbers.

``tests/fixtures/wespeaker/golden.npz`` was made by ``tests/fixtures/wespeaker/make_golden.py``
from WeSpeaker's own model code (commit in the file): the reference's state-dict key lists,
seeded weights, its fbank and embeddings of a seeded synthetic utterance. Here the same weights
are rebuilt from the key list and seed, imported, and run through our front end and model.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

sys.modules.setdefault("ray", None)

from models import read_checkpoint  # noqa: E402
from models.features import Fbank  # noqa: E402
from models.hub import convert_file  # noqa: E402
from models.hub.importers import threedspeaker, wespeaker  # noqa: E402
from models.hub.resolve import detect_layout  # noqa: E402
from models.pipelines.speaker import SpeakerEmbedder  # noqa: E402
from models.registry import build_model  # noqa: E402
from tests.conftest import synth_state_dict  # noqa: E402

GOLDEN = Path(__file__).resolve().parents[1] / "fixtures" / "wespeaker" / "golden.npz"


@pytest.fixture(scope="module")
def golden() -> dict[str, np.ndarray]:
    with np.load(GOLDEN) as z:
        return {k: z[k] for k in z.files}


def published(golden: dict, arch: str) -> tuple[dict, dict[str, torch.Tensor]]:
    spec = json.loads(str(golden[f"{arch}_keys"]))
    return spec, synth_state_dict({"state_dict": spec}, seed=int(golden[f"{arch}_seed"]))


def test_front_end_matches_wespeakers(golden):
    wav = torch.from_numpy(golden["wave_int16"].astype(np.float32) / 32768.0)
    ours = Fbank(wespeaker.FBANK)(wav)[0].numpy()
    assert ours.shape == golden["fbank"].shape
    np.testing.assert_allclose(ours, golden["fbank"], atol=1e-3, rtol=0)
    # and the povey window of 3D-Speaker's front end would not pass
    povey = Fbank(type(wespeaker.FBANK)())(wav)[0].numpy()
    assert np.abs(povey - golden["fbank"]).max() > 1e-2


@pytest.mark.parametrize(
    ("arch", "found"), [("resnet34", "resnet34_256"), ("campplus", "campplus_512")]
)
def test_wespeaker_layout_imports_with_the_references_embeddings(golden, arch, found):
    spec, state = published(golden, arch)
    assert wespeaker.detect(state) == found
    imported = wespeaker.convert(state)
    assert imported.arch == found and imported.meta["fbank"]["window_type"] == "hamming"
    ours = {k: list(v.shape) for k, v in imported.model.state_dict().items()}
    assert ours == {k: v for k, v in spec.items() if not k.startswith("projection.")}
    wav = torch.from_numpy(golden["wave_int16"].astype(np.float32) / 32768.0)
    with torch.no_grad():
        emb = imported.model(Fbank(wespeaker.FBANK)(wav))[0].numpy()
    np.testing.assert_allclose(emb, golden[f"{arch}_embedding"], atol=1e-5, rtol=0)


@pytest.mark.parametrize(
    ("arch", "found"),
    [("ecapa_c64", "ecapa_tdnn_c64_128"), ("ecapa_glob_c64", "ecapa_tdnn_glob_c64_96")],
)
def test_wespeaker_ecapa_imports_with_the_references_embeddings(golden, arch, found, tmp_path):
    """WeSpeaker's ECAPA_TDNN (64 channels; GLOB = pooling with utterance context): every
    reference tensor lands in exactly one of ours, unchanged, and the embedding is the
    reference's. Auto-detected through a saved ``avg_model.pt`` and loaded back from the
    converted checkpoint, so the WeSpeaker config options survive the round trip."""
    spec, state = published(golden, arch)
    assert wespeaker.detect(state) == found
    assert threedspeaker.detect(state) is None
    src = tmp_path / "avg_model.pt"
    torch.save(state, src)
    out = convert_file(None, src, tmp_path / "ecapa.pt")
    meta = read_checkpoint(out)["meta"]
    assert meta["source"] == "wespeaker" and meta["arch"] == found
    embedder = SpeakerEmbedder.from_checkpoint(out)
    model = embedder.model
    assert embedder.fbank_cfg == wespeaker.FBANK
    assert model.cfg.global_context == ("glob" in arch)
    assert model.cfg.channels == (64, 64, 64, 64, 1536)

    ref = {k: state[k] for k in spec if not k.startswith("projection.")}
    ours = model.state_dict()
    assert len(ours) == len(ref)
    counters = "num_batches_tracked"  # all equal in the fixture: counted, not matched by value
    assert sum(k.endswith(counters) for k in ours) == sum(k.endswith(counters) for k in ref)
    ref = {k: v for k, v in ref.items() if not k.endswith(counters)}
    by_values = {}
    for key, value in ours.items():
        if key.endswith(counters):
            continue
        hits = [k for k, v in ref.items() if v.numel() == value.numel() and torch.equal(
            v.flatten(), value.flatten())]  # fmt: skip
        assert len(hits) == 1, (key, hits)
        by_values[hits[0]] = key
    assert set(by_values) == set(ref)  # a bijection of tensors
    assert by_values["layer2.se_res2block.1.convs.0.weight"] == (
        "blocks.1.res2net_block.blocks.0.conv.conv.weight"
    )

    wav = torch.from_numpy(golden["wave_int16"].astype(np.float32) / 32768.0)
    feats = Fbank(wespeaker.FBANK)(wav)
    with torch.no_grad():
        emb = model(feats)[0].numpy()
    np.testing.assert_allclose(emb, golden[f"{arch}_embedding"], atol=1e-5, rtol=0)
    # each WeSpeaker difference matters: the SpeechBrain choice misses the reference by more
    # than twice the tolerance above (small random weights make the effects small)
    for change in ({"padding": "reflect"}, {"res2net_passthrough": "first"}):
        other = build_model("ecapa_tdnn", dataclasses.replace(model.cfg, **change)).eval()
        other.load_state_dict(ours)
        with torch.no_grad():
            wrong = other(feats)[0].numpy()
        assert np.abs(wrong - golden[f"{arch}_embedding"]).max() > 2e-5, change


def test_wespeaker_ecapa_with_embedding_bn_is_refused(golden):
    _, state = published(golden, "ecapa_c64")
    state = {**state, "bn2.weight": torch.ones(128), "bn2.bias": torch.zeros(128)}
    with pytest.raises(ValueError, match="emb_bn"):
        wespeaker.convert(state)


@dataclass
class Specifications:  # stands for a class pyannote pickles beside the weights
    duration: float = 10.0


def test_pyannote_packaging_imports_without_pyannote(golden, tmp_path):
    spec, state = published(golden, "resnet34")
    src = tmp_path / "pytorch_model.bin"
    torch.save(
        {
            "state_dict": {f"resnet.{k}": v for k, v in state.items() if "projection" not in k},
            "pyannote.audio": {"versions": {"torch": "2.0"}, "specifications": Specifications()},
            "hyper_parameters": {"sample_rate": 16000},
        },
        src,
    )
    out = convert_file("wespeaker", src, tmp_path / "out.pt")
    meta = read_checkpoint(out)["meta"]
    assert meta["source"] == "wespeaker" and meta["arch"] == "resnet34_256"
    embedder = SpeakerEmbedder.from_checkpoint(out)  # takes WeSpeaker's front end from meta
    assert embedder.fbank_cfg == wespeaker.FBANK
    model = embedder.model
    for key, value in model.state_dict().items():
        assert torch.equal(value, state[key]), key


def test_layouts_are_told_apart(golden):
    _, wes = published(golden, "resnet34")
    assert threedspeaker.detect(wes) is None  # one embedding layer, not 3D-Speaker's two
    assert detect_layout(wes) == "wespeaker"
    bottleneck = {**wes, "layer1.0.conv3.weight": torch.zeros(128, 32, 1, 1)}
    with pytest.raises(ValueError, match="bottleneck"):
        wespeaker.convert(bottleneck)
    with pytest.raises(ValueError, match="not a WeSpeaker"):
        wespeaker.convert({"fc.weight": torch.zeros(2, 2)})


def test_speechbrain_ecapa_matches_speechbrain_itself(golden, tmp_path):
    """SpeechBrain is a dev dependency: its own Fbank, InputNormalization and ECAPA_TDNN run
    side by side with ours on the same random weights (BN statistics too) and input."""
    sb_models = pytest.importorskip("speechbrain.lobes.models.ECAPA_TDNN")
    sb_features = pytest.importorskip("speechbrain.lobes.features")
    sb_norm = pytest.importorskip("speechbrain.processing.features")
    from models.hub.importers import speechbrain

    ref = sb_models.ECAPA_TDNN(
        input_size=80,
        channels=[1024, 1024, 1024, 1024, 3072],
        kernel_sizes=[5, 3, 3, 3, 1],
        dilations=[1, 2, 3, 4, 1],
        attention_channels=128,
        lin_neurons=192,
    )  # fmt: skip  (spkrec-ecapa-voxceleb's hyperparams.yaml)
    spec = {"state_dict": {k: list(v.shape) for k, v in ref.state_dict().items()}}
    state = synth_state_dict(spec, seed=7)
    ref.load_state_dict(state)
    ref.eval()
    src = tmp_path / "embedding_model.ckpt"
    torch.save(state, src)
    out = convert_file(None, src, tmp_path / "sb.pt")  # ambiguous with 3D-Speaker's ECAPA keys
    assert read_checkpoint(out)["meta"]["source"] == "3dspeaker"
    out = convert_file("speechbrain", src, tmp_path / "sb.pt")
    embedder = SpeakerEmbedder.from_checkpoint(out)
    assert embedder.fbank_cfg.kind == "speechbrain"
    wav = torch.from_numpy(golden["wave_int16"].astype(np.float32) / 32768.0)[None]
    with torch.no_grad():
        ref_feats = sb_norm.InputNormalization(norm_type="sentence", std_norm=False)(
            sb_features.Fbank(n_mels=80)(wav), torch.ones(1)
        )
        ours_feats = Fbank(speechbrain.FBANK)(wav)
        np.testing.assert_allclose(ours_feats.numpy(), ref_feats.numpy(), atol=2e-3, rtol=0)
        ref_emb = ref(ref_feats, torch.ones(1))[:, 0]
        ours_emb = embedder.model(ours_feats)
    np.testing.assert_allclose(ours_emb.numpy(), ref_emb.numpy(), atol=1e-4, rtol=0)
    assert float(ref_emb.abs().max()) > 0.05  # not a degenerate all-zero comparison
