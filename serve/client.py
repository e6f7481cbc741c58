"""A small Python client for the speaker service's HTTP API (httpx; no Ray, no server code).

    from serve.client import VoxrayClient

    with VoxrayClient("http://127.0.0.1:8000", api_key="...") as vc:
        vc.verify("a.wav", "b.wav")                      # {"score", "same", "threshold", ...}
        emb = vc.embed("a.wav")                          # (D,) float32, L2-normalised
        alice = vc.enroll("alice", ["a1.wav", "a2.wav"], groups=["team"])
        vc.identify("query.wav", group="team")           # {"matches": [...], ...}
        vc.diarize("meeting.wav", num_speakers=2)        # {"segments": [...], ...}
        vc.list_speakers(); vc.delete_speaker(alice["id"])

The verbs are the service's routes (``serve/routes/speaker.py``, ``serve/routes/diarize.py``):
``/verify``, ``/extract_embedding``, ``/speakers`` (enroll, list, get, delete), ``/identify``,
``/diarize``, ``/health``. Audio is a local file path, raw file bytes (any format the service
decodes), or ``{"path": ...}`` for a file on the server (under its ``allowed_roots``); it is
sent as base64 in a JSON body.

Auth: ``api_key`` (default: the ``VOXRAY_API_KEY`` environment variable) is sent as
``Authorization: Bearer <key>``. Retries are bounded (``retries`` extra attempts): on 503 (the
service sheds load, or is starting) and on connection errors, after the server's
``Retry-After`` (seconds or an HTTP date) when it sends one, else an exponential back-off; every
wait is capped at ``max_wait`` seconds. Other errors raise :class:`ClientError` at once with the
service's ``{"error": {"code", "message"}}``.
"""

from __future__ import annotations

import base64
import email.utils
import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx
import numpy as np

log = logging.getLogger("serve.client")

API_KEY_ENV = "VOXRAY_API_KEY"
RETRY_STATUS = frozenset({503})
Audio = str | os.PathLike | bytes | dict


class ClientError(RuntimeError):
    """The service refused a request: HTTP ``status`` with its error ``code`` and message."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"HTTP {status} {code}: {message}")
        self.status, self.code, self.message = status, code, message


def _audio(audio: Audio, field: str) -> dict[str, str]:
    """A file path, file bytes or ``{"path": server path}`` -> the JSON ``AudioSource``."""
    if isinstance(audio, dict):
        return audio
    if isinstance(audio, bytes | bytearray):
        return {"base64": base64.b64encode(bytes(audio)).decode()}
    if isinstance(audio, str | os.PathLike):
        path = Path(audio)
        if not path.is_file():
            raise FileNotFoundError(f"{field}: {path}: no such audio file")
        return {"base64": base64.b64encode(path.read_bytes()).decode()}
    raise TypeError(f"{field}: give a file path, file bytes or {{'path': ...}}, not {type(audio)}")


def retry_after(response: httpx.Response) -> float | None:
    """Seconds the server asks to wait (``Retry-After``: delta-seconds or an HTTP date)."""
    value = response.headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


class VoxrayClient:
    """Client of one service at ``base_url``; see the module docstring. ``timeout`` is per
    request (seconds); ``transport`` is httpx's (tests, proxies)."""

    def __init__(
        self,
        base_url: str = "http://127.0.0.1:8000",
        *,
        api_key: str | None = None,
        timeout: float = 60.0,
        retries: int = 3,
        backoff: float = 0.5,
        max_wait: float = 30.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        if retries < 0:
            raise ValueError(f"retries must be >= 0, got {retries}")
        key = api_key if api_key is not None else os.environ.get(API_KEY_ENV)
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self.retries, self.backoff, self.max_wait = retries, backoff, max_wait
        self._http = httpx.Client(
            base_url=base_url, headers=headers, timeout=timeout, transport=transport
        )

    # -- plumbing ------------------------------------------------------------------------------
    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> VoxrayClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        """One API call with the retry policy -> the decoded JSON body."""
        for attempt in range(self.retries + 1):
            last = attempt == self.retries
            try:
                r = self._http.request(method, path, **kwargs)
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                if last:
                    raise
                wait = self._wait(attempt, None)
                log.warning("%s %s: %s; retrying in %.1f s", method, path, exc, wait)
                time.sleep(wait)
                continue
            if r.status_code in RETRY_STATUS and not last:
                wait = self._wait(attempt, retry_after(r))
                log.warning("%s %s: HTTP %d; retrying in %.1f s", method, path, r.status_code, wait)
                time.sleep(wait)
                continue
            if r.is_success:
                return r.json()
            try:
                err = r.json()["error"]
                code, message = str(err["code"]), str(err["message"])
            except (ValueError, KeyError, TypeError):
                code, message = "http_error", r.text[:500]
            raise ClientError(r.status_code, code, message)
        raise AssertionError("unreachable: the last attempt returns or raises")

    def _wait(self, attempt: int, asked: float | None) -> float:
        wait = asked if asked is not None else self.backoff * 2**attempt
        return min(wait, self.max_wait)

    # -- the verbs -----------------------------------------------------------------------------
    def health(self) -> dict[str, Any]:
        return self.request("GET", "/health")

    def verify(self, a: Audio, b: Audio, *, threshold: float | None = None) -> dict[str, Any]:
        """Same speaker? -> ``{"score", "same", "threshold", "model_id"}``."""
        body = {"audio_a": _audio(a, "a"), "audio_b": _audio(b, "b"), "threshold": threshold}
        return self.request("POST", "/verify", json=body)

    def extract_embedding(self, audio: Audio) -> dict[str, Any]:
        """``{"embedding", "embed_dim", "model_id", "duration_s"}`` of one clip."""
        return self.request("POST", "/extract_embedding", json={"audio": _audio(audio, "audio")})

    def embed(self, audio: Audio) -> np.ndarray:
        """The ``(D,)`` float32 embedding of one clip (L2-normalised by the service)."""
        return np.asarray(self.extract_embedding(audio)["embedding"], dtype=np.float32)

    def enroll(
        self,
        name: str | None,
        audio: Sequence[Audio],
        *,
        groups: Sequence[str] | None = None,
        speaker_id: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Enroll ``name`` from clips (or add clips to ``speaker_id``) -> the speaker record."""
        if isinstance(audio, str | bytes | os.PathLike | dict):
            audio = [audio]
        body: dict[str, Any] = {
            "name": name,
            "audio": [_audio(a, f"audio[{i}]") for i, a in enumerate(audio)],
        }
        for key, value in (("groups", groups), ("speaker_id", speaker_id), ("metadata", metadata)):
            if value is not None:
                body[key] = list(value) if key == "groups" else value
        return self.request("POST", "/speakers", json=body)

    def identify(
        self,
        audio: Audio,
        *,
        group: str | None = None,
        top_k: int | None = None,
        threshold: float | None = None,
    ) -> dict[str, Any]:
        """Closest enrolled speakers -> ``{"matches": [...], "threshold", "group", ...}``."""
        body = {"audio": _audio(audio, "audio"), "group": group, "top_k": top_k,
                "threshold": threshold}  # fmt: skip
        return self.request(
            "POST", "/identify", json={k: v for k, v in body.items() if v is not None}
        )

    def diarize(self, audio: Audio, **options: Any) -> dict[str, Any]:
        """Who spoke when -> ``{"segments": [{start, end, speaker}], ...}``; ``options`` are the
        route's fields (``num_speakers``, ``min_speakers``, ``max_speakers``, ``group``,
        ``rttm``, ``uri``...)."""
        return self.request("POST", "/diarize", json={"audio": _audio(audio, "audio"), **options})

    def list_speakers(self, group: str | None = None) -> list[dict[str, Any]]:
        params = {"group": group} if group is not None else None
        return self.request("GET", "/speakers", params=params)["speakers"]

    def get_speaker(self, speaker_id: str) -> dict[str, Any]:
        return self.request("GET", f"/speakers/{speaker_id}")

    def delete_speaker(self, speaker_id: str) -> dict[str, Any]:
        return self.request("DELETE", f"/speakers/{speaker_id}")
