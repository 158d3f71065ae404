"""A local Anvil node as a managed child process (for the demo, the tests and the bench)."""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from tributa.config import REPO_ROOT, Settings
from tributa.errors import ConfigError

ANVIL_DIRS = sorted((REPO_ROOT / "node_modules" / "@foundry-rs").glob("anvil-*/bin"))


def anvil_binary() -> str:
    if os.environ.get("TRIBUTA_NO_ANVIL"):
        raise ConfigError("this run leaves Anvil out (TRIBUTA_NO_ANVIL: the fast test tier); mark the test `anvil`")
    found = shutil.which("anvil") or next((str(d / "anvil") for d in ANVIL_DIRS if (d / "anvil").exists()), None)
    if not found:
        raise ConfigError("anvil not found; run `make setup` (it installs @foundry-rs/anvil from npm)")
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_in_use(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


class AnvilNode:
    """Starts Anvil on a port; `stop()` (or leaving the `with`) ends it and its children."""

    def __init__(self, port: int | None = None, block_time: float | None = None, log_path: Path | None = None) -> None:
        self.port = port or free_port()
        self.block_time = block_time
        self.log_path = log_path
        self.process: subprocess.Popen | None = None

    @property
    def rpc_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 30.0) -> AnvilNode:
        if port_in_use(self.port):
            raise ConfigError(f"port {self.port} is already in use; stop the other node or pick another port")
        cmd = [
            anvil_binary(),
            "--port",
            str(self.port),
            "--host",
            "127.0.0.1",
            "--accounts",
            "20",
            "--balance",
            "10000",
        ]
        if self.block_time:
            cmd += ["--block-time", str(self.block_time)]
        out = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL
        # A new session, so stop() can end the whole group and nothing is left behind.
        self.process = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout_s
        while not port_in_use(self.port):
            if self.process.poll() is not None:
                raise ConfigError(f"anvil exited with code {self.process.returncode} while starting")
            if time.monotonic() > deadline:
                self.stop()
                raise ConfigError(f"anvil did not open port {self.port} within {timeout_s:.0f}s")
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGTERM)
                self.process.wait(timeout=10)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                os.killpg(self.process.pid, signal.SIGKILL)
        self.process = None

    def __enter__(self) -> AnvilNode:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def _drop_build_if_interfaces_changed() -> None:
    """ape recompiles a contract when its own source changes, not when an interface or module it
    imports does: a contract built against an older interfaces/*.vyi would call functions that no
    longer exist, and one built with an older contracts/modules/*.vy would pack words the old way.
    So the build cache goes whenever their contents differ from its last build."""
    build = REPO_ROOT / ".build"
    imported = sorted((REPO_ROOT / "interfaces").glob("*.vyi")) + sorted((REPO_ROOT / "contracts/modules").glob("*.vy"))
    digest = hashlib.sha256(b"".join(p.name.encode() + p.read_bytes() for p in imported)).hexdigest()
    stamp = build / "interfaces.sha256"
    if stamp.is_file() and stamp.read_text() == digest:
        return
    (build / "__local__.json").unlink(missing_ok=True)
    build.mkdir(exist_ok=True)
    stamp.write_text(digest)


def ape_deploy(
    rpc_url: str,
    deployments_dir: Path,
    extra_args: Sequence[str] = (),
    timeout_s: float = 300.0,
    env: dict[str, str] | None = None,
) -> str:
    """Run `ape run deploy` against the node at rpc_url, writing into deployments_dir; its output."""
    _drop_build_if_interfaces_changed()
    ape = Path(sys.executable).with_name("ape")
    cmd = [str(ape), "run", "deploy", "--network", rpc_url, "--deployments-dir", str(deployments_dir), *extra_args]
    env = {
        **os.environ,
        **(env or {}),
        "PATH": os.pathsep.join([str(d) for d in ANVIL_DIRS] + [os.environ.get("PATH", "")]),
    }
    proc = subprocess.run(
        cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=timeout_s, stdin=subprocess.DEVNULL
    )
    if proc.returncode != 0:
        tail = (proc.stdout + proc.stderr).strip().splitlines()[-15:]
        raise ConfigError("`ape run deploy` failed:\n" + "\n".join(tail))
    return proc.stdout + proc.stderr


def settings_for(node: AnvilNode, data_dir: Path, deployments_dir: Path, oracle_port: int | None = None) -> Settings:
    return Settings().with_overrides(
        rpc_url=node.rpc_url,
        data_dir=data_dir,
        deployments_dir=deployments_dir,
        oracle_url=f"http://127.0.0.1:{oracle_port or free_port()}",
    )
