"""``python -m serve`` argument handling: products, diarization overrides, local CPU sizing."""

from __future__ import annotations

import sys

import pytest

sys.modules.setdefault("ray", None)

from serve.__main__ import app_cpu_request, parse_args  # noqa: E402
from serve.schemas import AppArgs  # noqa: E402


def test_products_and_overrides_reach_the_app_args():
    _, args = parse_args(
        [
            "--checkpoint", "spk.pt", "--tse", "tse.pt", "--codec", "tiny=c.pt",
            "--codec", "small=d.pt", "--classify", "clf.pt",
            "--diarization-set", "clustering.threshold=0.6",
        ]
    )  # fmt: skip
    cfg = AppArgs.model_validate(args)
    assert cfg.tse.checkpoint == "tse.pt" and cfg.classify.checkpoint == "clf.pt"
    assert sorted(cfg.codecs) == ["small", "tiny"]
    assert cfg.diarization.config == {"clustering.threshold": 0.6}
    # ingress 0.5 + embedding 1 + diarization 0.5 + two codecs, tse, classify at 1 each
    assert app_cpu_request(cfg) == pytest.approx(6.0)
    _, plain = parse_args(["--checkpoint", "spk.pt", "--no-diarization"])
    assert app_cpu_request(AppArgs.model_validate(plain)) == pytest.approx(1.5)


def test_old_classifier_spelling_still_configures_classify():
    """``--classifier`` and the ``classifier:`` key (README commands, old configs) still work."""
    _, args = parse_args(["--checkpoint", "spk.pt", "--classifier", "clf.pt"])
    assert AppArgs.model_validate(args).classify.checkpoint == "clf.pt"
    cfg = AppArgs.model_validate({"checkpoint": "spk.pt", "classifier": {"checkpoint": "c.pt"}})
    assert cfg.classify.checkpoint == "c.pt"
    assert "classify" in cfg.model_dump() and "classifier" not in cfg.model_dump()
    assert set(cfg.product_models()) == {"classify"}
    with pytest.raises(ValueError):  # still strict: unknown keys raise
        AppArgs.model_validate({"checkpoint": "spk.pt", "classifyer": {"checkpoint": "c.pt"}})


def test_malformed_product_arguments_are_refused():
    with pytest.raises(SystemExit):
        parse_args(["--checkpoint", "spk.pt", "--codec", "no-equals-sign"])
    with pytest.raises(SystemExit):
        parse_args(["--checkpoint", "spk.pt", "--diarization-set", "=1"])


def test_loopback_by_default_and_keyless_only_there():
    ns, args = parse_args(["--checkpoint", "spk.pt", "--api-keys-file", "k.json"])
    assert ns.host == "127.0.0.1" and args["auth"] == "keys" and args["api_keys_file"] == "k.json"
    _, dev = parse_args(["--checkpoint", "spk.pt", "--no-auth"])
    assert dev["auth"] == "disabled"
    with pytest.raises(SystemExit):
        parse_args(["--checkpoint", "spk.pt", "--no-auth", "--host", "0.0.0.0"])
