"""API keys and route scopes of the Serve ingress: who may call which route.

Ray-free (tested without Ray); ``serve/http.py`` applies :meth:`Authorizer.check` to every
FastAPI route as an app-wide dependency, and ``python -m serve.keys`` creates keys.

* **Keys** are random ``vxr_`` tokens (256 bits from :mod:`secrets`) sent as
  ``Authorization: Bearer <key>``. The service stores only their SHA-256 digest, in a file
  (``AppArgs.api_keys_file``) or the environment (``VOXRAY_API_KEYS``), both
  ``{name: {"hash": "sha256:<hex>", "scopes": [...]}}`` (JSON or YAML). A fast hash is right
  here: a slow one (scrypt, bcrypt) protects *low-entropy passwords* against guessing from a
  stolen digest, but nobody can enumerate 2**256 random keys at any speed, while scrypt on
  every request would hand callers a cheap way to burn the server's CPU. Digests are compared
  with :func:`hmac.compare_digest` against every stored key (no early exit).
* **Scopes**: ``read`` (verify, identify, embeddings, diarize, extract, codecs, classify, reads
  of the database), ``enroll`` (enroll, group membership), ``admin`` (``POST /config``,
  deleting speakers, imports and galleries; an admin key may call every route). The one table
  is :data:`ROUTE_SCOPES`; a route missing from it needs ``admin``, so a route added later is
  closed until someone maps it. ``GET /health`` is open (load balancers probe it).
* **No keys**: the app refuses to start, unless ``auth: disabled``, which is meant for a
  laptop: it is refused when the HTTP proxy listens beyond loopback, and requests whose
  ``Host`` header is not a loopback name are refused (a DNS-rebinding page in a browser would
  otherwise reach the keyless service as its own origin).
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import logging
import os
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from serve.errors import ServiceError

log = logging.getLogger(__name__)

SCOPES = ("read", "enroll", "admin")
ENV_VAR = "VOXRAY_API_KEYS"
KEY_PREFIX = "vxr_"
OPEN = None  # a route anyone may call

# (method, path template) -> the scope it needs; absent -> "admin" (closed by default).
ROUTE_SCOPES: dict[tuple[str, str], str | None] = {
    ("GET", "/health"): OPEN,
    ("GET", "/config"): "read",
    ("POST", "/config"): "admin",
    # speaker: decisions and embeddings
    ("POST", "/verify"): "read",
    ("POST", "/verify_batch"): "read",
    ("POST", "/extract_embedding"): "read",
    ("POST", "/compare_embeddings"): "read",
    ("POST", "/identify"): "read",
    # speaker: the enrollment database
    ("GET", "/speakers"): "read",
    ("GET", "/speakers/{speaker_id}"): "read",
    ("GET", "/groups"): "read",
    ("POST", "/speakers"): "enroll",
    ("POST", "/speakers/{speaker_id}/groups"): "enroll",
    ("DELETE", "/speakers/{speaker_id}/groups/{group}"): "enroll",
    ("DELETE", "/speakers/{speaker_id}"): "admin",
    ("POST", "/speakers/import"): "admin",
    ("POST", "/galleries"): "admin",
    # other products
    ("POST", "/diarize"): "read",
    ("POST", "/extract_target"): "read",
    ("POST", "/codec/encode"): "read",
    ("POST", "/codec/decode"): "read",
    ("POST", "/classify"): "read",
    # pages for people (serve/pages.py): static; the page asks for a key for its API calls
    ("GET", "/docs"): OPEN,
    ("GET", "/docs/assets/{name}"): OPEN,
    ("GET", "/ui"): OPEN,
    ("GET", "/ui/"): OPEN,
    ("GET", "/ui/{name}"): OPEN,
    # the older mode-based speaker routes (serve/routes/legacy.py): reads answer with "read";
    # switching or replacing the active gallery changes what every client identifies against
    ("POST", "/speaker"): "read",
    ("POST", "/GetSpeakerList"): "read",
    ("POST", "/InitSpeakerFeats"): "enroll",
    ("POST", "/ModifyFeatsMode"): "enroll",
    ("POST", "/ModifyFeatsCustom"): "enroll",
}

LOOPBACK_NAMES = frozenset({"localhost", "ip6-localhost"})


def required_scope(method: str, path: str) -> str | None:
    """The scope route ``method path`` (its template, e.g. ``/speakers/{speaker_id}``) needs."""
    return ROUTE_SCOPES.get((method.upper(), path), "admin")


def is_loopback(host: str | None) -> bool:
    """``host`` (a name or address, optionally ``:port`` / ``[v6]:port``) is this machine only."""
    if not host:
        return False
    name = host.strip().lower()
    if name.startswith("["):  # [::1]:8000
        name = name[1 : name.find("]")] if "]" in name else name[1:]
    elif name.count(":") == 1:  # 127.0.0.1:8000, localhost:8000
        name = name.split(":")[0]
    if name in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


# ---------------------------------------------------------------------------------------------
# Keys


def new_key() -> str:
    """A fresh API key: ``vxr_`` + 43 URL-safe characters (256 random bits)."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_key(key: str) -> str:
    """What the service stores of ``key``: ``sha256:<hex>`` (see the module docstring)."""
    return "sha256:" + hashlib.sha256(key.encode()).hexdigest()


@dataclass(frozen=True)
class ApiKey:
    name: str
    digest: str  # hash_key() of the key
    scopes: frozenset[str]

    def allows(self, scope: str) -> bool:
        return scope in self.scopes or "admin" in self.scopes


def parse_records(records: Any, source: str) -> list[ApiKey]:
    """``{name: {"hash": "sha256:<hex>", "scopes": [...]}}`` -> keys; a bad entry raises
    ``ValueError`` naming ``source`` and what to fix."""
    if not isinstance(records, Mapping):
        raise ValueError(f"{source}: expected a mapping name -> {{hash, scopes}}")
    keys = []
    for name, rec in records.items():
        if not isinstance(rec, Mapping) or set(rec) != {"hash", "scopes"}:
            raise ValueError(
                f"{source}: key {name!r} must be {{hash: sha256:<hex>, scopes: [...]}}"
            )
        digest, scopes = rec["hash"], rec["scopes"]
        hexpart = str(digest).removeprefix("sha256:")
        if not str(digest).startswith("sha256:") or len(hexpart) != 64:
            raise ValueError(
                f"{source}: key {name!r}: hash must be 'sha256:<64 hex digits>' "
                "(python -m serve.keys add writes it)"
            )
        if isinstance(scopes, str) or not scopes or not set(scopes) <= set(SCOPES):
            raise ValueError(f"{source}: key {name!r}: scopes must be a non-empty list of {SCOPES}")
        keys.append(ApiKey(str(name), str(digest).lower(), frozenset(scopes)))
    return keys


def read_key_file(path: str | os.PathLike) -> dict[str, Any]:
    """The records of a key file (JSON or YAML); a missing file is an empty one."""
    p = Path(path)
    if not p.exists():
        return {}
    data = yaml.safe_load(p.read_text()) or {}  # YAML is a superset of JSON
    parse_records(data, str(p))
    return dict(data)


def load_keys(file: str | None, environ: Mapping[str, str] | None = None) -> list[ApiKey]:
    """The keys of ``file`` (``AppArgs.api_keys_file``) and ``$VOXRAY_API_KEYS`` (JSON)."""
    environ = os.environ if environ is None else environ
    keys: list[ApiKey] = []
    if file is not None:
        if not Path(file).is_file():
            raise FileNotFoundError(
                f"api_keys_file {file} does not exist; create it with "
                f"python -m serve.keys add NAME --scopes read --file {file}"
            )
        keys += parse_records(yaml.safe_load(Path(file).read_text()) or {}, str(file))
    if environ.get(ENV_VAR):
        try:
            records = json.loads(environ[ENV_VAR])
        except json.JSONDecodeError as exc:
            raise ValueError(f"${ENV_VAR} is not JSON: {exc}") from exc
        keys += parse_records(records, f"${ENV_VAR}")
    names = [k.name for k in keys]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ValueError(f"API key name(s) {dup} defined twice (file and environment?)")
    return keys


class KeyRing:
    """The stored keys; :meth:`lookup` finds a presented key in constant time per stored key."""

    def __init__(self, keys: Iterable[ApiKey]) -> None:
        self.keys = tuple(keys)

    def lookup(self, presented: str) -> ApiKey | None:
        digest = hash_key(presented)
        found = None
        for key in self.keys:  # no early exit: the time does not tell which key matched
            if hmac.compare_digest(key.digest, digest):
                found = key
        return found


# ---------------------------------------------------------------------------------------------
# Requests


def _unauthorized(message: str) -> ServiceError:
    return ServiceError(401, "unauthorized", message, headers={"WWW-Authenticate": "Bearer"})


@dataclass(frozen=True)
class Authorizer:
    """The ingress's decision per request; ``ring`` None is the keyless loopback mode."""

    ring: KeyRing | None

    def check(
        self, method: str, path: str, authorization: str | None, host: str | None
    ) -> str | None:
        """The calling key's name (``"-"`` keyless, None on an open route), or 401/403."""
        scope = required_scope(method, path)
        if scope is OPEN:
            return None
        if self.ring is None:
            if not is_loopback(host):
                raise ServiceError(
                    403,
                    "loopback_only",
                    "this service runs without API keys and answers only requests addressed "
                    "to localhost",
                )
            return "-"
        kind, _, token = (authorization or "").partition(" ")
        if kind.lower() != "bearer" or not token.strip():
            raise _unauthorized(
                f"{method} {path} needs an API key with scope {scope!r}: send "
                "'Authorization: Bearer <key>'"
            )
        key = self.ring.lookup(token.strip())
        if key is None:
            raise _unauthorized("the API key is not valid")
        if not key.allows(scope):
            raise ServiceError(
                403,
                "insufficient_scope",
                f"{method} {path} needs scope {scope!r}; key {key.name!r} has {sorted(key.scopes)}",
            )
        return key.name


def audit(who: str | None, action: str, **details: Any) -> None:
    """Log a decision that changes how the service behaves, with the key that made it."""
    rendered = " ".join(f"{k}={v!r}" for k, v in details.items())
    log.warning("audit: key %r %s %s", who or "?", action, rendered)
