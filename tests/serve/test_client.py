"""serve/client.py: the retry policy and auth header against a plain HTTP server on loopback, and
every verb against the real service (speaker + diarization products) over loopback."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import numpy as np
import pytest
import torch

from serve.client import ClientError, VoxrayClient
from tests.conversations import conversation_wav
from tests.serve.helpers import KEYS, PRODUCT, app_args, free_port, noise_wav, running_app


class _Flaky:
    """A loopback HTTP server answering 503 (with ``Retry-After``) ``fails`` times, then 200;
    records each request's arrival time and Authorization header."""

    def __init__(self, fails: int, retry_after: str | None) -> None:
        self.fails, self.retry_after, self.seen = fails, retry_after, []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                self.rfile.read(int(self.headers.get("content-length", 0)))
                outer.seen.append((time.monotonic(), self.headers.get("authorization")))
                if len(outer.seen) <= outer.fails:
                    body = {"error": {"code": "overloaded", "message": "busy"}}
                    self.send_response(503)
                    if outer.retry_after is not None:
                        self.send_header("Retry-After", outer.retry_after)
                else:
                    body = {"score": 0.9, "same": True, "threshold": 0.5, "model_id": "m"}
                    self.send_response(200)
                data = json.dumps(body).encode()
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_retries_honour_retry_after_and_stop(tmp_path):
    clip = noise_wav(0.5)
    srv = _Flaky(fails=1, retry_after="1")
    try:
        with VoxrayClient(srv.url, api_key="k3y", backoff=0.01, retries=2) as vc:
            assert vc.verify(clip, clip)["same"] is True
        (t0, auth0), (t1, auth1) = srv.seen
        assert auth0 == auth1 == "Bearer k3y"
        assert t1 - t0 >= 0.95  # waited the server's 1 s, not the 0.01 s back-off
    finally:
        srv.close()
    srv = _Flaky(fails=99, retry_after=None)
    try:
        with VoxrayClient(srv.url, backoff=0.01, retries=2) as vc:
            with pytest.raises(ClientError) as err:
                vc.verify(clip, clip)
        assert err.value.status == 503 and err.value.code == "overloaded"
        assert len(srv.seen) == 3 and srv.seen[0][1] is None  # bounded: 1 + 2 retries, no key
    finally:
        srv.close()
    t0 = time.monotonic()
    with VoxrayClient(f"http://127.0.0.1:{free_port()}", backoff=0.05, retries=2) as vc:
        with pytest.raises(httpx.ConnectError):
            vc.health()
    assert time.monotonic() - t0 >= 0.05 + 0.1  # two back-offs, then the error
    with pytest.raises(FileNotFoundError, match="no such audio"):
        VoxrayClient("http://127.0.0.1:1").verify(tmp_path / "missing.wav", clip)


@pytest.mark.ray
def test_every_verb_against_the_service(ray_cluster, tmp_path):
    import models

    torch.manual_seed(0)
    ckpt = models.save_checkpoint(models.build_model("ecapa_tdnn-tiny").eval(), tmp_path / "m.pt")
    args = app_args(ckpt, tmp_path, max_request_mb=4.0,
                    diarization={"max_seconds": 20.0, **PRODUCT})  # fmt: skip
    a, b = tmp_path / "a.wav", noise_wav(1.5, seed=1)
    a.write_bytes(noise_wav(1.5, seed=0))
    with running_app(args, "voxray-client-test", timeout=120) as http:
        with VoxrayClient(str(http.base_url), api_key=KEYS["admin"], timeout=120) as vc:
            assert vc.health()["status"] == "ok"
            same = vc.verify(a, a)
            assert same["score"] == pytest.approx(1.0, abs=1e-4) and same["same"]
            other = vc.verify(a, b, threshold=0.999)
            assert other["same"] == (other["score"] >= 0.999)
            emb = vc.embed(a)
            assert emb.dtype == np.float32 and np.linalg.norm(emb) == pytest.approx(1, abs=1e-4)
            alice = vc.enroll("alice", [a], groups=["team"])
            vc.enroll("bob", b, groups=["team"])
            assert {s["name"] for s in vc.list_speakers(group="team")} == {"alice", "bob"}
            top = vc.identify(a, group="team", top_k=2, threshold=0.0)["matches"]
            assert top[0]["speaker_id"] == alice["id"]
            turns = vc.diarize(conversation_wav(0), num_speakers=2)
            assert turns["num_speakers"] == 2 and turns["segments"]
            assert vc.delete_speaker(alice["id"]) == {"deleted": alice["id"]}
            with pytest.raises(ClientError) as err:
                vc.get_speaker(alice["id"])
            assert err.value.status == 404
            assert [s["name"] for s in vc.list_speakers()] == ["bob"]
