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


def _native_socket(family: int) -> int:
    """socket(2) straight through libc, past anything Python-level: the errno it gets."""
    libc = ctypes.CDLL(None, use_errno=True)
    fd = libc.socket(family, socket.SOCK_STREAM, 0)
    return 0 if fd >= 0 else ctypes.get_errno()


def _interfaces() -> list[str]:
    """The network interfaces of its namespace (/proc: netlink sockets are refused)."""
    return sorted(line.split(":")[0].strip() for line in Path("/proc/net/dev").read_text().splitlines()[2:])


def _escape_attempts() -> dict:
    """What got a job out of the sandbox before: another process to write into through
    /proc/PID/mem (bwrap's init), clearing its parent-death signal, a vsock, a memfd."""
    libc = ctypes.CDLL(None, use_errno=True)
    others = [int(p) for p in os.listdir("/proc") if p.isdigit() and int(p) != os.getpid()]
    cleared = libc.prctl(1, 0, 0, 0, 0) == 0
    try:
        os.memfd_create("m")
        memfd = 0
    except OSError as exc:
        memfd = exc.errno
    return {"others": others, "pdeathsig_cleared": cleared, "vsock": _native_socket(socket.AF_VSOCK), "memfd": memfd}


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
        sandbox.run(base, [], b"{not json")
    with pytest.raises(JobInputError, match='"prompt" is empty'):
        sandbox.run(base, [], b'{"prompt": ""}')
    missing = LocalModel(path=tmp_path / "nothing-here", cid="x", digest=b"", kind="generate")
    with pytest.raises(JobSpecError, match="nothing-here"):
        sandbox.run(missing, [], _prompt("hi"))
    assert json.loads(sandbox.run(base, [], _prompt("Once upon a time", 2)))["kind"] == "generate"


# -- what code in the sandbox can reach --


def test_run_callable__network__only_its_own_loopback_and_no_socket_but_unix(sandbox):
    assert sandbox.run_callable(_interfaces) == ["lo"]
    for family in (socket.AF_INET, socket.AF_INET6, socket.AF_VSOCK, socket.AF_NETLINK):
        assert sandbox.run_callable(_native_socket, family) == errno.EAFNOSUPPORT, family
    assert sandbox.run_callable(_native_socket, socket.AF_UNIX) == 0
    with pytest.raises(JobFailed, match="Address family not supported"):
        sandbox.run_callable(_connect, "127.0.0.1", 8545)  # the host's Anvil port: another loopback


def test_run_callable__escape_routes_of_the_red_team__all_closed(sandbox):
    attempts = sandbox.run_callable(_escape_attempts)
    assert attempts == {"others": [], "pdeathsig_cleared": False, "vsock": errno.EAFNOSUPPORT, "memfd": errno.EPERM}


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


def _fill_tmp_then_allocate(tmp_mb: int, anonymous_mb: int) -> int:
    with open("/tmp/fill", "wb") as f:
        for _ in range(tmp_mb):
            f.write(b"x" * 2**20)
    return len(b"x" * (anonymous_mb * 2**20))


def test_limits__memory_held_in_tmpfs__counted_against_the_memory_limit(sandbox):
    from tributa.runtime import cgroups

    limits = SandboxLimits(memory_mb=512, wall_seconds=60)
    assert sandbox.run_callable(_fill_tmp_then_allocate, 100, 100, limits=limits) == 100 * 2**20
    with pytest.raises(JobFailed, match="No space left"):  # its /tmp: a quarter of its memory
        sandbox.run_callable(_fill_tmp_then_allocate, 200, 0, limits=limits)
    if not cgroups.kernel_has("memory"):
        pytest.skip("this kernel has no memory cgroup controller: only the tmpfs size holds")
    with pytest.raises(JobLimitExceeded) as memory:  # within its address space, not its memory
        sandbox.run_callable(_fill_tmp_then_allocate, 120, 420, limits=limits)
    assert memory.value.limit == "memory", memory.value


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
