"""``python -m serve.keys add NAME --scopes read,enroll --file keys.json``: manage API keys.

``add`` creates a key, prints it once on stdout and stores only its SHA-256 digest and scopes
under ``NAME`` in the key file (JSON; created with mode 0600). ``remove NAME`` revokes a key,
``list`` shows names and scopes. Point the app at the file with ``api_keys_file`` (or put the
file's JSON in ``$VOXRAY_API_KEYS``); the app reads keys when it starts (``serve/auth.py``).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from serve.auth import SCOPES, hash_key, new_key, read_key_file

log = logging.getLogger("serve.keys")


def write_key_file(path: Path, records: dict) -> None:
    """Write ``records`` atomically, readable by the owner only."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(records, f, indent=2, sort_keys=True)
        f.write("\n")
    os.replace(tmp, path)


def add_key(path: Path, name: str, scopes: list[str]) -> str:
    """Create key ``name`` with ``scopes`` in the file at ``path``; returns the key."""
    bad = sorted(set(scopes) - set(SCOPES))
    if bad or not scopes:
        raise ValueError(f"scopes {bad or scopes} are not a non-empty subset of {SCOPES}")
    records = read_key_file(path)
    if name in records:
        raise ValueError(f"{path} already has a key named {name!r}; remove it first")
    key = new_key()
    records[name] = {"hash": hash_key(key), "scopes": sorted(set(scopes))}
    write_key_file(path, records)
    return key


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    p = argparse.ArgumentParser(prog="python -m serve.keys", description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)
    add = sub.add_parser("add", help="create a key and print it once")
    add.add_argument("name")
    add.add_argument("--scopes", required=True, help=f"comma-separated subset of {SCOPES}")
    rm = sub.add_parser("remove", help="revoke a key")
    rm.add_argument("name")
    ls = sub.add_parser("list", help="names and scopes")
    for s in (add, rm, ls):
        s.add_argument("--file", type=Path, default=Path("keys.json"), help="the key file")
    ns = p.parse_args(argv)
    try:
        if ns.cmd == "add":
            key = add_key(ns.file, ns.name, [s for s in ns.scopes.split(",") if s])
            sys.stdout.write(key + "\n")  # the only time the key is shown
            log.info("stored the hash of key %r in %s; the key above is not kept", ns.name, ns.file)
        elif ns.cmd == "remove":
            records = read_key_file(ns.file)
            if records.pop(ns.name, None) is None:
                raise ValueError(f"{ns.file} has no key named {ns.name!r}")
            write_key_file(ns.file, records)
            log.info("removed key %r from %s (restart or redeploy the app)", ns.name, ns.file)
        else:
            for name, rec in sorted(read_key_file(ns.file).items()):
                sys.stdout.write(f"{name}\t{','.join(rec['scopes'])}\n")
    except ValueError as exc:
        p.error(str(exc))
    return 0


if __name__ == "__main__":
    sys.exit(main())
