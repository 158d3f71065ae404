"""Running the oracle and agents as child processes, the way an operator would."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import httpx

from tributa.config import REPO_ROOT, Settings
from tributa.errors import ConfigError


def _cli() -> list[str]:
    return [sys.executable, "-m", "tributa.cli.__main__"]


def _env(settings: Settings, extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "TRIBUTA_RPC_URL": settings.rpc_url,
            "TRIBUTA_DATA_DIR": str(settings.data_dir),
            "TRIBUTA_DEPLOYMENTS": str(settings.deployments_dir),
            "TRIBUTA_ORACLE_URL": settings.oracle_url,
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "PYTHONUNBUFFERED": "1",
        }
    )
    env.update(extra or {})
    return env


class ManagedProcess:
    def __init__(
        self,
        name: str,
        args: list[str],
        settings: Settings,
        log_path: Path,
        env: dict[str, str] | None = None,
        prefix: Sequence[str] = (),
    ) -> None:
        """`prefix` runs the command under another, e.g. `ip netns exec NS` (a role on its own network)."""
        self.name = name
        self.log_path = log_path
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(log_path, "ab")
        self.process = subprocess.Popen(
            [*prefix, *_cli(), *args],
            cwd=REPO_ROOT,
            env=_env(settings, env),
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def alive(self) -> bool:
        return self.process.poll() is None

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 15.0) -> None:
        if self.alive():
            try:
                os.killpg(self.process.pid, sig)
                self.process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
            except ProcessLookupError:
                pass
        self._log.close()

    def kill9(self) -> None:
        """The crash test's hammer: no chance to clean up."""
        self.stop(signal.SIGKILL)


def start_oracle(
    settings: Settings,
    log_path: Path,
    args: Sequence[str] = (),
    env: dict[str, str] | None = None,
    timeout_s: float = 120.0,
    prefix: Sequence[str] = (),
) -> ManagedProcess:
    port = settings.oracle_url.rsplit(":", 1)[-1].strip("/")
    proc = ManagedProcess("oracle", ["oracle", "run", "--port", port, *args], settings, log_path, env, prefix)
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if httpx.get(settings.oracle_url + "/v1/health", timeout=2).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        if not proc.alive():
            raise ConfigError(f"the oracle exited while starting:\n{proc.log_tail()}")
        if time.monotonic() > deadline:
            proc.stop()
            raise ConfigError(f"the oracle did not answer within {timeout_s:.0f}s:\n{proc.log_tail()}")
        time.sleep(0.2)


def start_agent(
    settings: Settings,
    log_path: Path,
    args: Sequence[str] = (),
    env: dict[str, str] | None = None,
    prefix: Sequence[str] = (),
) -> ManagedProcess:
    return ManagedProcess("agent", ["agent", "run", *args], settings, log_path, env, prefix)
