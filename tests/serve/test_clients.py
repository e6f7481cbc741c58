"""The service as two kinds of clients see it, on one app (one start for both, the CI budget):

* the /ui page in a real headless browser: Debian's chromium driven by selenium through
  chromedriver (``make browser`` installs both). The test clicks through the page as a person
  would: the API key, a microphone recording (the browser's fake device) sent to /verify, then
  enroll three speakers, identify another clip of one of them against their group (the enrolled
  speaker must top the ranked list), verify two clips, and diarize a conversation (the timeline
  must draw its segments); an unknown group must show the service's error. It saves a screenshot
  (``ui.png`` under the test's tmp dir, and in ``$VOXRAY_ARTIFACTS`` when set;
  ``VOXRAY_ARTIFACTS=.github/readme`` refreshes the README's);
* the clients of the older mode-based speaker servers, written the way they are written:
  ``requests.post(url + "speaker", json={"speaker": wav.tolist()})`` and
  ``json.loads(resp.text)``, against every legacy route (modes mapped onto groups, the custom
  gallery, the refusals). Their checks rely on identical audio scoring ~1 only.

With ``../shared/data``: the pretrained GE2E model (``pip:resemblyzer``, threshold 0.75 as in the
identification benchmark) and real recordings (CMU ARCTIC, LibriSpeech, the pyannote
conversation), so the query is another utterance than the enrolled one. Without it: a
random-weight tiny CAM++ and synthetic voices, the query being the enrolled clip itself (random
weights rank only identical audio reliably).
"""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import requests
import soundfile as sf

from tests.conftest import real_data_root
from tests.serve.helpers import KEYS, app_args, expect_error, running_app

pytestmark = pytest.mark.ray

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
SR = 16000
API_KEY = KEYS["admin"]  # typed into the page; sent by the legacy client as a header
GROUP = "ui-test"
# The closed network refuses background connections: switch every one of them off.
CHROME_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--use-fake-ui-for-media-stream",  # grant the microphone without a prompt
    "--use-fake-device-for-media-stream",  # a synthetic microphone (a beeping tone)
    "--autoplay-policy=no-user-gesture-required",
    "--window-size=1280,1000",
]


def _browser_or_skip() -> None:
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not Path(p).is_file()]
    if missing:
        msg = f"{', '.join(missing)} missing: run `make browser` (Debian chromium + chromedriver)"
        if os.environ.get("CI"):
            pytest.fail(msg)  # CI installs them (.ci/run); a skip there would hide the test
        pytest.skip(msg)


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> dict[str, Path]:
    """Audio files for the page: enroll a/b, query (speaker a), verify pair, conversation."""
    real = real_data_root()
    if real is not None:
        arctic = real / "speech" / "cmu-arctic"
        return {
            "model": "pip:resemblyzer",
            "a": arctic / "cmu_arctic_us_aew_a0001.wav",
            "b": arctic / "cmu_arctic_us_axb_a0004.wav",
            "c": real / "speech" / "librispeech-train-clean-100" / "1034-121119-0000.flac",
            "query": arctic / "cmu_arctic_us_aew_a0003.wav",
            "verify_a": arctic / "cmu_arctic_us_aew_a0002.wav",
            "verify_b": arctic / "cmu_arctic_us_axb_a0005.wav",
            "meeting": real / "diarization" / "pyannote-sample" / "sample.wav",
        }
    import models
    from datasets.audio import write_audio
    from datasets.synth import sample_voice, synthesize_utterance

    root = tmp_path_factory.mktemp("ui_audio")
    sr = 16000
    out: dict[str, Path] = {
        "model": models.save_checkpoint(models.build_model("campplus-tiny").eval(), root / "m.pt")
    }
    voices = {}
    for i, name in enumerate(("a", "b", "c")):
        rng = np.random.default_rng(i)
        voices[name] = (sample_voice(rng), rng)
        out[name] = write_audio(root / f"{name}.wav", synthesize_utterance(*_utt(voices[name])), sr)
    out["query"] = out["a"]
    out["verify_a"], out["verify_b"] = out["a"], out["b"]
    turns = [synthesize_utterance(*_utt(voices[n], 2.0)) for n in ("a", "b", "a", "b")]
    out["meeting"] = write_audio(root / "meeting.wav", np.concatenate(turns), sr)
    return out


def _utt(voice_rng, seconds: float = 1.5):
    voice, rng = voice_rng
    return voice, seconds, 16000, rng


@pytest.fixture(scope="module")
def base_url(ray_cluster, clips, tmp_path_factory):
    root = tmp_path_factory.mktemp("clients_app")
    real = clips["model"] == "pip:resemblyzer"
    args = app_args(
        clips["model"], root, max_seconds=35.0, max_request_mb=4.0, threshold=0.75 if real else 0.5
    )
    with running_app(args, "clients_test") as client:
        yield str(client.base_url).rstrip("/") + "/"


@pytest.fixture(scope="module")
def driver(tmp_path_factory):
    _browser_or_skip()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in CHROME_FLAGS:
        options.add_argument(flag)
    profile = tmp_path_factory.mktemp("chromium_profile")  # a new, empty profile every run
    options.add_argument(f"--user-data-dir={profile}")
    d = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
    d.set_page_load_timeout(30)
    try:
        yield d
    finally:
        d.quit()


def _settled(driver, result_id: str, timeout: float = 60):
    """Wait until ``#result_id`` has content or the error box shows; fail with the page's error."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    def done(d):
        err = d.find_element(By.ID, "error")
        if err.is_displayed():
            return "error"
        return "ok" if d.find_element(By.ID, result_id).text.strip() else False

    state = WebDriverWait(driver, timeout, poll_frequency=0.2).until(done)
    if state == "error":
        pytest.fail(f"the page shows an error: {driver.find_element(By.ID, 'error').text}")
    return driver.find_element(By.ID, result_id)


def _fill(driver, element_id: str, text: str) -> None:
    from selenium.webdriver.common.by import By

    box = driver.find_element(By.ID, element_id)
    box.clear()
    box.send_keys(text)


def _upload(driver, slot: str, path: Path) -> None:
    from selenium.webdriver.common.by import By

    driver.find_element(By.CSS_SELECTOR, f'[data-slot="{slot}"] input[type=file]').send_keys(
        str(path)
    )


def _act(driver, action: str, timeout: float = 60):
    """Click ``#<action>-run`` with ``#<action>-result`` cleared; the result once it shows."""
    from selenium.webdriver.common.by import By

    driver.execute_script(f"document.getElementById('{action}-result').replaceChildren()")
    driver.find_element(By.ID, f"{action}-run").click()
    return _settled(driver, f"{action}-result", timeout)


def _screenshot(driver, tmp_path: Path) -> Path:
    """The whole page as ``ui.png`` (the viewport stretched to the page's height)."""
    height = int(driver.execute_script("return document.documentElement.scrollHeight"))
    metrics = {"width": 1280, "height": min(height, 4000), "deviceScaleFactor": 1, "mobile": False}
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", metrics)
    shot = tmp_path / "ui.png"
    try:
        assert driver.save_screenshot(str(shot)) and shot.stat().st_size > 10_000
    finally:
        driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
    target = os.environ.get("VOXRAY_ARTIFACTS")
    if target:
        Path(target).mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, Path(target) / "ui.png")
    return shot


def test_page_records_enrolls_identifies_verifies_and_diarizes(driver, base_url, clips, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(base_url + "ui")
    assert driver.title == "voxray"
    _fill(driver, "api-key", API_KEY)
    driver.find_element(By.TAG_NAME, "h1").click()  # the key field's change event stores it
    assert driver.execute_script("return sessionStorage.getItem('voxray.apiKey')") == API_KEY

    # a recording from the (fake) microphone, encoded to WAV in the page, decoded by the service
    record = driver.find_element(By.CSS_SELECTOR, '[data-slot="verify-a"] button.record')
    record.click()
    time.sleep(1.5)
    record.click()
    status = driver.find_element(By.CSS_SELECTOR, '[data-slot="verify-a"] .slot-status').text
    assert status.startswith("recording.wav, ") and float(status.split(", ")[1][:-2]) >= 1.0
    _upload(driver, "verify-b", clips["verify_b"])
    assert "threshold" in _act(driver, "verify").text

    # enroll two (three) speakers into one group, then identify another clip of the first
    for name, key in (("Ann", "a"), ("Bob", "b"), ("Cy", "c")):
        _fill(driver, "enroll-name", name)
        _fill(driver, "enroll-group", GROUP)
        _upload(driver, "enroll", clips[key])
        assert f"Enrolled {name} in {GROUP}" in _act(driver, "enroll").text
    _fill(driver, "identify-group", GROUP)
    _upload(driver, "identify", clips["query"])
    result = _act(driver, "identify")
    names = [td.text for td in result.find_elements(By.CSS_SELECTOR, "tr.match td.match-name")]
    assert names[0] == "Ann", names  # the enrolled speaker tops the ranked list
    assert sorted(names) == ["Ann", "Bob", "Cy"]

    # verify two real clips (the recording's result is replaced)
    _upload(driver, "verify-a", clips["verify_a"])
    verdict = _act(driver, "verify").text
    assert "same speaker" in verdict or "different speakers" in verdict
    if clips["model"] == "pip:resemblyzer":  # GE2E tells these two ARCTIC speakers apart
        assert "different speakers" in verdict, verdict

    # diarize a conversation: one lane per speaker, segments drawn on a time axis
    _upload(driver, "diarize", clips["meeting"])
    timeline = _act(driver, "diarize", timeout=120)
    lanes = timeline.find_elements(By.CSS_SELECTOR, "svg.timeline text.lane-label")
    segments = timeline.find_elements(By.CSS_SELECTOR, "svg.timeline rect.segment")
    ticks = timeline.find_elements(By.CSS_SELECTOR, "svg.timeline text.tick")
    assert len(lanes) >= 1 and len(segments) >= len(lanes) and len(ticks) >= 3
    assert "time (s)" in timeline.text

    shot = _screenshot(driver, tmp_path)

    # a refusal shows the service's code and message
    _fill(driver, "identify-group", "no-such-group")
    driver.find_element(By.ID, "identify-run").click()
    err = driver.find_element(By.ID, "error")
    WebDriverWait(driver, 60).until(lambda d: err.is_displayed())
    assert "unknown_group" in err.text and "no-such-group" in err.text
    assert shot.is_file()


# -- legacy clients ---------------------------------------------------------------------------


def _voice(seed: int, seconds: float = 1.5) -> np.ndarray:
    from datasets.synth import sample_voice, synthesize_utterance

    rng = np.random.default_rng(seed)
    return synthesize_utterance(sample_voice(rng), seconds, SR, rng).astype(np.float32)


def _wav_bytes(x: np.ndarray) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, x, SR, format="WAV", subtype="FLOAT")  # the same samples as the JSON list
    return buf.getvalue()


@pytest.fixture(scope="module")
def voices():
    return {name: _voice(seed) for seed, name in enumerate(("ann", "bob", "cy", "dan"), 11)}


def test_legacy_client_session(base_url, voices):
    """Every legacy route; the app is shared with the page's test, so the checks hold whatever
    else is enrolled (groups of their own, identical audio for the top match)."""
    url = base_url
    headers = {"Authorization": "Bearer " + API_KEY}

    def post(route, data=None):
        return requests.post(url + route, json=data, headers=headers, timeout=60)

    # enrolled through the ordinary API, into groups that become modes
    ids = {}
    enrollments = [
        ("ann", ["legacy-ai"]),
        ("bob", ["legacy-morning"]),
        ("cy", ["legacy-ai", "legacy-morning"]),
        ("dan", ["legacy-empty"]),
    ]
    for name, groups in enrollments:
        files = [("audio", (f"{name}.wav", _wav_bytes(voices[name])))]
        data = [("name", name)] + [("groups", g) for g in groups]
        r = requests.post(url + "speakers", files=files, data=data, headers=headers, timeout=60)
        assert r.status_code == 200, r.text
        ids[name] = r.json()["id"]

    resp_data = json.loads(post("InitSpeakerFeats").text)
    assert resp_data["feats_mode"] == "all" and {"ann", "bob", "cy"} <= set(resp_data["label"])
    resp_data = json.loads(post("GetSpeakerList").text)
    assert resp_data["feats_mode"] == "all" and {"ann", "bob", "cy"} <= set(resp_data["label"])
    feats = np.array(resp_data["feats"])
    assert feats.shape[0] == len(resp_data["label"])
    assert np.allclose(np.linalg.norm(feats, axis=1), 1.0, atol=1e-5)

    resp_data = json.loads(post("speaker", {"speaker": voices["bob"].tolist()}).text)
    assert resp_data["name"] == resp_data["label"] == "bob"
    assert float(resp_data["score"]) >= 0.99  # its own enrollment clip; two decimals, as text
    assert resp_data["score"] == f"{float(resp_data['score']):.2f}"

    # a mode is a group: bob is not in "legacy-ai", so the closest there is someone else
    resp_data = json.loads(post("ModifyFeatsMode", {"feats_mode": "legacy-ai"}).text)
    assert resp_data == {"label": ["ann", "cy"], "feats_mode": "legacy-ai"}
    bob_there = json.loads(post("speaker", {"speaker": voices["bob"].tolist()}).text)
    assert bob_there["name"] in {"ann", "cy"}
    assert json.loads(post("speaker", {"speaker": voices["cy"].tolist()}).text)["name"] == "cy"
    expect_error(post("ModifyFeatsMode", {"feats_mode": "nope"}), 404, "unknown_group")
    assert json.loads(post("GetSpeakerList").text)["feats_mode"] == "legacy-ai"  # unchanged

    # a group emptied of its members is a mode with nobody to answer
    r = requests.delete(f"{url}speakers/{ids['dan']}/groups/legacy-empty", headers=headers)
    assert r.status_code == 200, r.text
    resp_data = json.loads(post("ModifyFeatsMode", {"feats_mode": "legacy-empty"}).text)
    assert resp_data == {"label": [], "feats_mode": "legacy-empty"}
    expect_error(post("speaker", {"speaker": voices["ann"].tolist()}), 409, "empty_gallery")

    # a custom gallery from labels and embeddings (of the active model), now the active mode
    emb = {
        n: requests.post(
            url + "extract_embedding", json={"audio": {"base64": _b64(voices[n])}}, headers=headers
        ).json()["embedding"]
        for n in ("ann", "bob")
    }
    resp_data = json.loads(
        post("ModifyFeatsCustom", {"label": ["A", "B"], "feats": [emb["ann"], emb["bob"]]}).text
    )
    assert resp_data == {"label": ["A", "B"], "feats_mode": "custom"}
    resp_data = json.loads(post("speaker", {"speaker": voices["bob"].tolist()}).text)
    assert resp_data["name"] == "B" and float(resp_data["score"]) >= 0.99
    listed = json.loads(post("GetSpeakerList").text)
    assert listed["feats_mode"] == "custom" and listed["label"] == ["A", "B"]
    enrolled = requests.get(url + "speakers", headers=headers).json()["speakers"]
    assert not {"A", "B"} & {s["name"] for s in enrolled}  # not enrolled speakers
    expect_error(
        post("ModifyFeatsCustom", {"label": ["A"], "feats": [[0.1, 0.2]]}), 422, "wrong_dimension"
    )
    expect_error(
        post("ModifyFeatsCustom", {"label": ["A", "B"], "feats": [emb["ann"]]}),
        422,
        "invalid_request",
    )
    assert json.loads(post("GetSpeakerList").text)["label"] == ["A", "B"]  # refusals keep it

    # back to "all", the limits of the samples, and bodies those clients might get wrong
    assert "cy" in json.loads(post("InitSpeakerFeats").text)["label"]
    expect_error(post("speaker", {"speaker": [0.0] * (35 * SR + 1)}), 400, "audio_too_long")
    expect_error(post("speaker", {"speaker": [0.0] * 100}), 400, "audio_too_short")
    expect_error(post("speaker", {"speaker": []}), 422, "invalid_request")
    expect_error(post("speaker", {"speaker": ["a"] * 10}), 422, "invalid_request")
    # strings are counted from the raw bytes before parsing (an audio body's item bound)
    expect_error(post("speaker", {"speaker": ["a"] * 9000}), 413, "too_many_items")
    expect_error(post("speaker"), 415, "unsupported_media_type")  # no body, no Content-Type
    empty = requests.post(
        url + "speaker", data=b"", headers={**headers, "Content-Type": "application/json"}
    )
    expect_error(empty, 400, "empty_body")


def _b64(x: np.ndarray) -> str:
    return base64.b64encode(_wav_bytes(x)).decode()
