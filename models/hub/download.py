"""The one module of ``models/`` that does network I/O: published files into voxray's cache.

Why network I/O under ``models/`` (HOUSE_STYLE principle 1 says no file or network I/O here):
``models.load_model("modelscope:iic/...")`` must accept a published model by name, and
``models/`` is the lowest layer that both Serve and the jobs import, so the download lives here,
confined to this module; everything else under ``models/hub`` is pure (importers) or local file
handling (``resolve.py``).

Hubs, through their own clients or documented file APIs:

- Hugging Face: ``huggingface_hub`` (``get_hf_file_metadata`` + ``hf_hub_download``); honours
  ``HF_ENDPOINT`` and ``HF_TOKEN`` like every HF client.
- ModelScope: its file API, as its ``modelscope.hub`` client calls it:
  ``GET {endpoint}/api/v1/models/{id}/repo/files?Revision=R&Recursive=true`` (listing with each
  file's ``Sha256``) and ``GET {endpoint}/api/v1/models/{id}/repo?Revision=R&FilePath=F``. The
  endpoint is ``MODELSCOPE_URL_SCHEME`` (``https://``) + ``MODELSCOPE_DOMAIN``
  (``www.modelscope.cn``), as in that client. The ``modelscope`` package itself is not a
  dependency (it pulls in much of an ML stack for two GET requests).

Cache: one folder, ``$VOXRAY_CACHE`` (default ``~/.cache/voxray``); a file lives at
``files/<hub>/<repo>/<revision>/<file>`` with its sha256 beside it (``<file>.sha256``). A file
is written to a temporary name in the same folder and renamed into place (``os.replace``), so a
crash or a cut connection never leaves a partial file under the real name; its digest is checked
against the hub's when the hub publishes one (HF: the LFS ETag; ModelScope: ``Sha256``), and
again on every read: a cached file that no longer matches its digest is downloaded again (or,
offline, reported). Once cached, a file is used without asking the hub again (a branch name such
as ``main`` is pinned at its first download; delete the folder to refresh it).

Offline mode: ``VOXRAY_OFFLINE=1`` or ``HF_HUB_OFFLINE=1``: the cache only, and a clear error
naming the file and the cache path when it is not there.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("models.hub.download")

CACHE_ENV = "VOXRAY_CACHE"
OFFLINE_ENVS = ("VOXRAY_OFFLINE", "HF_HUB_OFFLINE")
TIMEOUT_S = 60.0  # per HTTP request (connect and each read), so a stalled hub cannot hang a job
_CHUNK = 1 << 20


class HubError(ValueError):
    """A published file could not be fetched or verified: offline and not cached, the hub
    unreachable, a cut download, a digest mismatch. The message names the file and the cache."""


def cache_root() -> Path:
    """``$VOXRAY_CACHE``, else ``~/.cache/voxray``."""
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "voxray"


def offline() -> bool:
    return any(
        os.environ.get(k, "").strip().lower() in {"1", "true", "yes", "on"} for k in OFFLINE_ENVS
    )


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


@dataclass(frozen=True)
class HubFile:
    """One file of a published repository: ``hub`` is ``"hf"`` or ``"modelscope"``."""

    hub: str
    repo: (
        str  # "Wespeaker/wespeaker-voxceleb-resnet34-LM", "iic/speech_campplus_sv_zh-cn_16k-common"
    )
    file: str  # path inside the repository
    revision: str  # branch, tag or commit

    def __post_init__(self) -> None:
        if self.hub not in _FETCHERS:
            raise ValueError(f"unknown hub {self.hub!r}; known: {', '.join(sorted(_FETCHERS))}")
        for part in (self.repo, self.file, self.revision):
            if not part or ".." in Path(part).parts or part.startswith("/"):
                raise ValueError(f"bad repository path {part!r} in {self}")

    @property
    def cache_path(self) -> Path:
        return cache_root() / "files" / self.hub / self.repo / self.revision / self.file

    def __str__(self) -> str:
        return f"{self.hub}:{self.repo}@{self.revision}/{self.file}"


def cached(f: HubFile) -> Path | None:
    """The cached copy of ``f`` if its bytes still match the digest stored with it, else None
    (a mismatched copy is deleted, with a warning)."""
    path = f.cache_path
    digest_path = path.with_name(path.name + ".sha256")
    if not (path.is_file() and digest_path.is_file()):
        return None
    want = digest_path.read_text().strip()
    got = sha256_file(path)
    if got == want:
        return path
    log.warning(
        "cached %s at %s is corrupt (sha256 %s, stored %s); removing it", f, path, got, want
    )
    path.unlink(missing_ok=True)
    digest_path.unlink(missing_ok=True)
    return None


def fetch(f: HubFile) -> Path:
    """The local path of ``f``: from the cache (verified), else downloaded into it."""
    path = cached(f)
    if path is not None:
        return path
    if offline():
        raise HubError(
            f"offline ({' or '.join(OFFLINE_ENVS)} is set) and {f} is not in the cache at "
            f"{f.cache_path}; download it once with network access, or copy the cache folder "
            f"({cache_root()}) from a machine that has it"
        )
    path = f.cache_path
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part"))
    try:
        try:
            got, expected = _FETCHERS[f.hub](f, staging)
        except HubError:
            raise
        except Exception as exc:  # the hub client's own errors: connection, HTTP status, size
            raise HubError(
                f"cannot download {f} ({type(exc).__name__}: {exc}); nothing was cached at "
                f"{path}. Check the network or the hub endpoint, or set VOXRAY_OFFLINE=1 to "
                "use the cache only"
            ) from exc
        digest = sha256_file(got)
        if expected is not None and digest != expected:
            raise HubError(
                f"checksum mismatch for {f}: the hub publishes sha256 {expected}, the download "
                f"has {digest}; nothing was cached at {path}. Retry; if it persists the hub "
                "copy is damaged"
            )
        os.replace(got, path)
        _write_text_atomic(path.with_name(path.name + ".sha256"), digest + "\n")
        log.info("cached %s at %s (sha256 %s)", f, path, digest[:12])
        return path
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _write_text_atomic(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


# -- Hugging Face -----------------------------------------------------------------------------


def _hf_fetch(f: HubFile, staging: Path) -> tuple[Path, str | None]:
    from huggingface_hub import get_hf_file_metadata, hf_hub_download, hf_hub_url

    endpoint = os.environ.get("HF_ENDPOINT") or None
    url = hf_hub_url(f.repo, f.file, revision=f.revision, endpoint=endpoint)
    meta = get_hf_file_metadata(url, timeout=TIMEOUT_S)
    # An LFS file's ETag is the sha256 of its content; a small git file's is a git sha1.
    etag = (meta.etag or "").strip('"').lower()
    expected = etag if len(etag) == 64 and all(c in "0123456789abcdef" for c in etag) else None
    got = hf_hub_download(
        f.repo,
        f.file,
        revision=meta.commit_hash or f.revision,
        local_dir=staging,
        endpoint=endpoint,
        etag_timeout=TIMEOUT_S,
    )
    return Path(got), expected


# -- ModelScope -------------------------------------------------------------------------------


def modelscope_endpoint() -> str:
    """``MODELSCOPE_URL_SCHEME`` + ``MODELSCOPE_DOMAIN``, as the ``modelscope`` client builds it."""
    domain = os.environ.get("MODELSCOPE_DOMAIN", "www.modelscope.cn").rstrip("/")
    if domain.startswith(("http://", "https://")):
        return domain
    return os.environ.get("MODELSCOPE_URL_SCHEME", "https://") + domain


def _ms_get(url: str) -> urllib.request.addinfourl:
    req = urllib.request.Request(url, headers={"User-Agent": "voxray"})
    return urllib.request.urlopen(req, timeout=TIMEOUT_S)  # noqa: S310 (http(s) endpoint)


def _ms_fetch(f: HubFile, staging: Path) -> tuple[Path, str | None]:
    base = f"{modelscope_endpoint()}/api/v1/models/{f.repo}/repo"
    rev = urllib.parse.quote_plus(f.revision)
    with _ms_get(f"{base}/files?Revision={rev}&Recursive=true") as resp:
        listing = json.loads(resp.read().decode("utf-8"))
    files = (listing.get("Data") or {}).get("Files") or []
    entry = next((e for e in files if e.get("Path") == f.file), None)
    if entry is None:
        names = ", ".join(sorted(e.get("Path", "?") for e in files)) or "none"
        raise HubError(f"{f} is not in the repository (files: {names})")
    expected = (entry.get("Sha256") or "").lower() or None
    size = entry.get("Size")
    out = staging / Path(f.file).name
    url = f"{base}?Revision={rev}&FilePath={urllib.parse.quote_plus(f.file)}"
    n = 0
    with _ms_get(url) as resp, out.open("wb") as fh:
        for chunk in iter(lambda: resp.read(_CHUNK), b""):
            fh.write(chunk)
            n += len(chunk)
    if size is not None and n != int(size):
        raise ConnectionError(f"the connection closed after {n} of {size} bytes")
    return out, expected


_FETCHERS = {"hf": _hf_fetch, "modelscope": _ms_fetch}
