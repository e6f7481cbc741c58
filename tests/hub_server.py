"""A local HTTP server that serves files in the layouts of the Hugging Face hub and ModelScope.

Started by a test on 127.0.0.1 (a free port) in a thread; the download code under test talks
to it through its real clients (``huggingface_hub`` with ``HF_ENDPOINT``; ModelScope's file API
with ``MODELSCOPE_DOMAIN``). It counts requests, and can misbehave on purpose:

- ``cut_body``: send the headers with the full ``Content-Length``, half the body, then close
  the connection (an interrupted download); a resume request (``Range``) gets 503;
- ``bad_digest``: advertise a sha256 (HF ETag / ModelScope ``Sha256``) that the body does not
  have.

Endpoints (what the clients call):
- HF: ``HEAD|GET /{org}/{name}/resolve/{revision}/{file}`` with ``ETag`` (the sha256, as the
  hub sends for LFS files), ``X-Repo-Commit`` and ``Content-Length`` (``huggingface_hub``'s
  ``file_download.get_hf_file_metadata`` requires the first two);
- ModelScope: ``GET /api/v1/models/{org}/{name}/repo/files?Revision=R&Recursive=true`` (JSON
  listing with ``Path``, ``Sha256``, ``Size``) and
  ``GET /api/v1/models/{org}/{name}/repo?Revision=R&FilePath=F`` (the bytes).
"""

from __future__ import annotations

import hashlib
import json
import socket
import sys
import threading
import urllib.parse
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def commit_of(revision: str) -> str:
    """The served commit hash of a branch/tag (a commit hash is its own)."""
    return hashlib.sha1(revision.encode()).hexdigest()


@dataclass
class HubState:
    # (hub, repo, revision, path) -> bytes; hub is "hf" or "modelscope"
    files: dict[tuple[str, str, str, str], bytes] = field(default_factory=dict)
    cut_body: bool = False
    bad_digest: bool = False
    requests: Counter = field(default_factory=Counter)  # "METHOD path" -> count

    @property
    def total(self) -> int:
        return sum(self.requests.values())

    def digest(self, data: bytes) -> str:
        if self.bad_digest:
            return hashlib.sha256(data + b"tampered").hexdigest()
        return hashlib.sha256(data).hexdigest()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    state: HubState

    def log_message(self, *args) -> None:  # keep test output quiet
        pass

    def do_HEAD(self) -> None:
        self._route(head=True)

    def do_GET(self) -> None:
        self._route(head=False)

    def _route(self, head: bool) -> None:
        url = urllib.parse.urlsplit(self.path)
        self.state.requests[f"{self.command} {url.path}"] += 1
        query = dict(urllib.parse.parse_qsl(url.query))
        parts = url.path.strip("/").split("/")
        if parts[:3] == ["api", "v1", "models"] and len(parts) >= 6 and parts[5] == "repo":
            repo, rest = f"{parts[3]}/{parts[4]}", parts[6:]
            rev = query.get("Revision", "master")
            if rest == ["files"]:
                return self._ms_listing(repo, rev)
            if not rest and "FilePath" in query:
                return self._send_file(("modelscope", repo, rev, query["FilePath"]), head, {})
        if len(parts) >= 5 and parts[2] == "resolve":
            repo, rev, path = f"{parts[0]}/{parts[1]}", parts[3], "/".join(parts[4:])
            # a commit hash names the revision it was served for
            rev = next((k[2] for k in self.state.files if commit_of(k[2]) == rev), rev)
            data = self.state.files.get(("hf", repo, rev, path))
            headers = {}
            if data is not None:
                headers = {"ETag": f'"{self.state.digest(data)}"', "X-Repo-Commit": commit_of(rev)}
            return self._send_file(("hf", repo, rev, path), head, headers)
        self._send(404, b"not found", {})

    def _ms_listing(self, repo: str, rev: str) -> None:
        files = [
            {"Path": path, "Name": path.rsplit("/", 1)[-1], "Sha256": self.state.digest(data),
             "Size": len(data), "Type": "blob"}
            for (hub, r, v, path), data in self.state.files.items()
            if hub == "modelscope" and r == repo and v == rev
        ]  # fmt: skip
        body = json.dumps({"Code": 200, "Data": {"Files": files}, "Success": True}).encode()
        self._send(200, body, {"Content-Type": "application/json"})

    def _send_file(self, key: tuple[str, str, str, str], head: bool, headers: dict) -> None:
        data = self.state.files.get(key)
        if data is None:
            return self._send(404, b"no such file", {})
        if self.state.cut_body and not head:
            if self.headers.get("Range"):
                return self._send(503, b"unavailable", {})
            self.send_response(200)
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data[: len(data) // 2])
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return None
        self._send(200, b"" if head else data, headers, length=len(data))

    def _send(self, code: int, body: bytes, headers: dict, length: int | None = None) -> None:
        self.send_response(code)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body) if length is None else length))
        self.end_headers()
        if body:
            self.wfile.write(body)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address) -> None:  # noqa: ANN001
        if not isinstance(sys.exc_info()[1], ConnectionError):  # a cut connection is on purpose
            super().handle_error(request, client_address)


class HubServer:
    """``with HubServer() as hub: hub.url, hub.state``: a running server on a free port."""

    def __init__(self) -> None:
        self.state = HubState()
        handler = type("Handler", (_Handler,), {"state": self.state})
        self.httpd = _Server(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> HubServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=10)
