"""A real ``ray start --head`` on loopback for the cluster tests: its own ports and temp dir,
Ray's token authentication on, stopped by its own processes (never ``ray stop``, which would
stop every cluster on the machine).

The head runs from this checkout's ``.venv`` (its ``bin`` first on ``PATH``), as ``cluster.yaml``
runs every node from ``~/voxray/.venv``: a job's ``python -m ray_jobs.<job>`` then finds the
locked packages, and ``--working-dir .`` supplies only our code.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
START_TIMEOUT_S = 120
STOP_TIMEOUT_S = 10


def free_ports(n: int) -> list[int]:
    """``n`` distinct free TCP ports on loopback (held open together so none repeats)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def free_port_range(width: int = 40, lo: int = 30000, hi: int = 60000) -> tuple[int, int]:
    """A run of ``width`` ports that are all free now (worker ports of the head)."""
    start = lo + secrets.randbelow(hi - lo - width)
    for base in range(start, hi - width, width):
        ok = True
        for p in range(base, base + width):
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", p))
                except OSError:
                    ok = False
                    break
        if ok:
            return base, base + width - 1
    raise RuntimeError("no free worker-port range")


@dataclass
class LocalHead:
    """A running head: its addresses, the auth token and the environment clients need."""

    temp_dir: Path
    gcs_port: int
    dashboard_port: int
    client_port: int
    token_path: Path
    env: dict[str, str] = field(repr=False)

    @property
    def address(self) -> str:
        """The job/serve API address (the dashboard), what ``--address`` takes."""
        return f"http://127.0.0.1:{self.dashboard_port}"

    @property
    def gcs_address(self) -> str:
        return f"127.0.0.1:{self.gcs_port}"

    def ray(self, *args: str, timeout: float, env: dict[str, str] | None = None, cwd=REPO_ROOT):
        """``ray <args>`` (the venv's CLI) as a client of this head; the completed process."""
        return subprocess.run(
            [str(VENV_BIN / "ray"), *args],
            env=env or self.env,
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def serve(self, *args: str, timeout: float, cwd=REPO_ROOT):
        return subprocess.run(
            [str(VENV_BIN / "serve"), *args],
            env=self.env,
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=timeout,
        )


def client_env(token_path: Path, address: str) -> dict[str, str]:
    """The environment of a client of a token-authenticated head: ``RAY_AUTH_MODE=token`` and
    where the token is (``RAY_AUTH_TOKEN_PATH``; ``RAY_AUTH_TOKEN`` holding it works too)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env.update(
        RAY_AUTH_MODE="token",
        RAY_AUTH_TOKEN_PATH=str(token_path),
        RAY_ADDRESS=address,
        PATH=f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        # the head's workers run from this environment, not a `uv run` venv per job
        RAY_ENABLE_UV_RUN_RUNTIME_ENV="0",
        OMP_NUM_THREADS="1",
        RAY_USAGE_STATS_ENABLED="0",
    )
    return env


def _cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return []


def _children(pid: int) -> list[int]:
    kids = []
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        with contextlib.suppress(OSError):
            kids += [int(c) for c in task.read_text().split()]
    return kids


def head_processes(temp_dir: Path) -> list[int]:
    """This head's process ids: every process whose command line names its temp dir (GCS,
    raylet, dashboard, agents, workers), and their descendants (job drivers)."""
    key = str(temp_dir)
    found: set[int] = set()
    todo = [
        int(d.name)
        for d in Path("/proc").iterdir()
        if d.name.isdigit() and any(key in a for a in _cmdline(int(d.name)))
    ]
    while todo:
        pid = todo.pop()
        if pid not in found:
            found.add(pid)
            todo += _children(pid)
    found.discard(os.getpid())
    return sorted(found)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def stop_head(temp_dir: Path) -> None:
    """SIGTERM this head's processes, then SIGKILL what is left after ``STOP_TIMEOUT_S``."""
    pids = head_processes(temp_dir)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        while time.monotonic() < deadline and any(_alive(p) for p in pids):
            time.sleep(0.2)
        pids = [p for p in pids if _alive(p)]
        if not pids:
            return


@contextlib.contextmanager
def local_head(num_cpus: int = 2) -> Iterator[LocalHead]:
    """``ray start --head`` on 127.0.0.1 with free ports, a short temp dir (Unix socket paths are
    limited to ~107 bytes) and a fresh token in its own file; stopped and removed on exit."""
    temp_dir = Path(tempfile.mkdtemp(prefix="vxh", dir="/tmp"))
    token_path = temp_dir / "auth_token"
    token_path.write_text(secrets.token_hex(32))
    token_path.chmod(0o600)
    ports = free_ports(11)
    gcs, dash, client, agent_listen, agent_grpc, rt_env, metrics, om, nm, dash_grpc, _ = ports
    lo, hi = free_port_range()
    env = client_env(token_path, f"http://127.0.0.1:{dash}")
    env.pop("RAY_ADDRESS")
    # the cluster's checkout on every worker's path, as cluster.yaml starts Ray: Serve apps
    # deployed without a working_dir import serve.app from it
    env["PYTHONPATH"] = str(REPO_ROOT)
    cmd = [
        str(VENV_BIN / "ray"), "start", "--head",
        "--node-ip-address=127.0.0.1", f"--port={gcs}",
        "--dashboard-host=127.0.0.1", f"--dashboard-port={dash}",
        f"--ray-client-server-port={client}",
        f"--dashboard-agent-listen-port={agent_listen}",
        f"--dashboard-agent-grpc-port={agent_grpc}",
        f"--runtime-env-agent-port={rt_env}", f"--metrics-export-port={metrics}",
        f"--object-manager-port={om}", f"--node-manager-port={nm}",
        f"--min-worker-port={lo}", f"--max-worker-port={hi}",
        f"--temp-dir={temp_dir}", f"--num-cpus={num_cpus}", "--disable-usage-stats",
        "--include-dashboard=true",
    ]  # fmt: skip
    head = LocalHead(temp_dir, gcs, dash, client, token_path, {**env, "RAY_ADDRESS": ""})
    head.env["RAY_ADDRESS"] = head.address
    try:
        r = subprocess.run(
            cmd, env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=START_TIMEOUT_S
        )
        if r.returncode != 0:
            raise RuntimeError(f"ray start --head failed:\n{r.stdout}\n{r.stderr}")
        _wait_for_jobs_api(head)
        yield head
    finally:
        stop_head(temp_dir)
        shutil.rmtree(temp_dir, ignore_errors=True)


def _wait_for_jobs_api(head: LocalHead, timeout: float = 60) -> None:
    """Until ``ray job list`` answers (the dashboard's job module is up)."""
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        r = head.ray("job", "list", "--address", head.address, timeout=30)
        if r.returncode == 0:
            return
        last = r.stderr[-2000:]
        time.sleep(1)
    raise TimeoutError(f"the head's job API did not answer in {timeout:.0f} s: {last}")
