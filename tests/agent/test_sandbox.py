"""SandboxedExecutor: real jobs, and code under audit, in bubblewrap workers.

Functions passed to `run_callable` are unpickled in a fresh sandboxed worker, which imports this
module there (its package is bound read-only): keep its top-level imports free of torch."""

from __future__ import annotations

import ctypes
import errno
import json
import os
import socket
import subprocess
import time
from pathlib import Path

import pytest

from tributa.catalog import LocalModel
from tributa.runtime import bwrap
from tributa.runtime.sandbox import JobFailed, JobLimitExceeded, SandboxedExecutor, SandboxLimits

pytestmark = pytest.mark.skipif(bwrap.bwrap_path() is None, reason="needs bubblewrap: `make setup` installs it")

LIMITS = SandboxLimits(memory_mb=2048, cpu_seconds=20, open_files=64, wall_seconds=60)


# -- functions run inside the sandbox (module level, so they pickle by reference) --


def _connect(host: str, port: int) -> str:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(2)
        sock.connect((host, port))
    return "connected"


def _native_connect(host: str, port: int) -> int:
    """connect(2) straight through libc, past anything Python-level: the errno it gets."""
    libc = ctypes.CDLL(None, use_errno=True)
    fd = libc.socket(socket.AF_INET, socket.SOCK_STREAM, 0)
    addr = socket.inet_aton(host)
    sockaddr = (ctypes.c_ubyte * 16)(*([2, 0] + list(port.to_bytes(2, "big")) + list(addr) + [0] * 8))
    result = libc.connect(fd, sockaddr, 16)
    return 0 if result == 0 else ctypes.get_errno()


def _interfaces() -> list[str]:
    return sorted(name for _, name in socket.if_nameindex())


def _visible(path: str) -> bool:
    return os.path.exists(path)


def _environment() -> dict[str, str]:
    return dict(os.environ)


def _pids() -> list[int]:
    return sorted(int(p) for p in os.listdir("/proc") if p.isdigit())


def _spin() -> None:
    while True:
        pass


def _open_many(n: int) -> int:
    files = [open("/dev/null") for _ in range(n)]
    return len(files)


def _raise_value_error() -> None:
    raise ValueError("bad things")


def _write(path: str) -> str:
    with open(path, "w") as f:
        f.write("x")
    return "wrote"


@pytest.fixture(scope="module")
def sandbox():
    with SandboxedExecutor(limits=LIMITS) as executor:
        yield executor


@pytest.fixture(scope="module")
def demo():
    from tributa.ml.models import ensure_demo_models

    return ensure_demo_models()


@pytest.fixture(scope="module")
def in_process():
    from tributa.runtime.executor import Executor
    from tributa.runtime.jobs import RunnerRegistry

    return Executor(RunnerRegistry(device="cpu"))


@pytest.fixture(scope="module")
def base(demo) -> LocalModel:
    return LocalModel(path=Path(demo.base_dir), cid="base", digest=b"", kind="generate")


@pytest.fixture(scope="module")
def fables(demo) -> LocalModel:
    return LocalModel(path=Path(demo.adapters["fables"]), cid="fables-cid", digest=b"", kind="adapter")


def _prompt(text: str, tokens: int = 8) -> bytes:
    return json.dumps({"prompt": text, "max_new_tokens": tokens}).encode()


# -- real jobs --


def test_run__generation_and_embedding_jobs__byte_identical_to_in_process(sandbox, in_process, base, fables):
    from tributa.ml.embeddings import model_dir

    for adapters, prompt in (([fables], "The fox"), ([fables], "A crow sat")):
        assert sandbox.run(base, adapters, _prompt(prompt, 16)) == in_process.run(base, adapters, _prompt(prompt, 16))
    embedder = LocalModel(path=model_dir(), cid="minilm", digest=b"", kind="embed")
    payload = json.dumps({"texts": ["The fox and the crow.", "Bake the bread at 220 C.", "a"]}).encode()
    assert sandbox.run(embedder, [], payload) == in_process.run(embedder, [], payload)


def test_run__bad_input_or_missing_model__clear_errors_and_it_still_serves(sandbox, base, tmp_path):
    from tributa.runtime.jobs import JobInputError, JobSpecError

    with pytest.raises(JobInputError, match="input is not JSON"):
        sandbox.run(base, [], b"not json")
    with pytest.raises(JobInputError, match='"prompt" is empty'):
        sandbox.run(base, [], b'{"prompt": ""}')
    missing = LocalModel(path=tmp_path / "nothing-here", cid="x", digest=b"", kind="generate")
    with pytest.raises(JobSpecError, match="nothing-here"):
        sandbox.run(missing, [], _prompt("hi"))
    assert json.loads(sandbox.run(base, [], _prompt("Once upon a time", 2)))["kind"] == "generate"


# -- what code in the sandbox can reach --


def test_run_callable__network__only_its_own_loopback_and_nothing_out(sandbox):
    assert sandbox.run_callable(_interfaces) == ["lo"]
    assert sandbox.run_callable(_native_connect, "1.1.1.1", 80) in (errno.ENETUNREACH, errno.EPERM)
    with pytest.raises(JobFailed) as refused:
        sandbox.run_callable(_connect, "127.0.0.1", 8545)  # the host's Anvil port: another loopback
    assert refused.value.remote_type == "ConnectionRefusedError"


def test_run_callable__filesystem__no_host_files_and_only_tmp_writable(sandbox, tmp_path):
    secret = tmp_path / "keystore.json"
    secret.write_text("{}")
    for path in (str(secret), "/etc/shadow", "/etc/hostname", str(Path(__file__))):
        assert sandbox.run_callable(_visible, path) is False
    assert sandbox.run_callable(_write, "/tmp/scratch") == "wrote"
    with pytest.raises(JobFailed, match="Read-only file system"):
        sandbox.run_callable(_write, str(bwrap.PACKAGE_ROOT / "written-from-the-sandbox"))  # bound read-only


def test_run_callable__environment_and_processes__no_secrets_no_host_pids(sandbox, monkeypatch):
    monkeypatch.setenv("TRIBUTA_PRIVATE_KEY", "0x" + "ab" * 32)
    monkeypatch.setenv("TRIBUTA_KEY_PASSWORD", "hunter2")
    with SandboxedExecutor(limits=LIMITS) as fresh:
        env = fresh.run_callable(_environment)
    assert not any(name.startswith("TRIBUTA_") for name in env) and "hunter2" not in env.values()
    assert len(sandbox.run_callable(_pids)) <= 3
    with pytest.raises(JobFailed, match="Operation not permitted"):
        sandbox.run_callable(subprocess.run, ["true"])
    with pytest.raises(JobFailed, match="Operation not permitted"):
        sandbox.run_callable(os.fork)


# -- limits: each fails the job alone --


def test_limits__memory_cpu_wall_open_files__each_its_own_error(sandbox):
    with pytest.raises(JobLimitExceeded) as memory:
        sandbox.run_callable(bytearray, 4 * 1024**3)
    assert memory.value.limit == "memory"
    with pytest.raises(JobLimitExceeded) as cpu:
        sandbox.run_callable(_spin, limits=SandboxLimits(cpu_seconds=1, wall_seconds=60))
    assert cpu.value.limit == "cpu"
    with pytest.raises(JobLimitExceeded) as wall:
        sandbox.run_callable(time.sleep, 30, limits=SandboxLimits(wall_seconds=2))
    assert wall.value.limit == "wall"
    with pytest.raises(JobLimitExceeded) as files:
        sandbox.run_callable(_open_many, 1000)
    assert files.value.limit == "open_files"
    assert sandbox.run_callable(_open_many, 8) == 8


def test_run_callable__exception_or_death__job_failed_with_the_cause(sandbox):
    with pytest.raises(JobFailed, match="bad things") as raised:
        sandbox.run_callable(_raise_value_error)
    assert raised.value.remote_type == "ValueError"
    with pytest.raises(JobFailed, match="exit status 3"):
        sandbox.run_callable(os._exit, 3)
    assert sandbox.run_callable(bytes, 3) == b"\0\0\0"


def test_limits__bad_values__value_error_naming_the_field():
    with pytest.raises(ValueError, match="memory_mb"):
        SandboxLimits(memory_mb=0)
    with pytest.raises(ValueError, match="wall_seconds"):
        SandboxLimits(wall_seconds=-1)
