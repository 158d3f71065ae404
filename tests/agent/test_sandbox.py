"""SandboxedExecutor: real jobs in forked, network-less, resource-limited processes.

Functions passed to `run_callable` are unpickled in the job process, which imports this module
there: keep its top-level imports free of torch, so the zygotes started without the runtime stay
light (torch and the models are imported inside fixtures and tests instead).
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from tributa.runtime.sandbox import (
    JobFailed,
    JobLimitExceeded,
    SandboxedExecutor,
    SandboxError,
    SandboxLimits,
    SandboxViolation,
)
from tributa.catalog import LocalModel
from tributa.runtime import sandbox as sandbox_module

# Small limits keep the limit tests fast; real demo jobs still fit with a wide margin.
LIMITS = SandboxLimits(memory_mb=512, cpu_seconds=20, open_files=32, wall_seconds=60)
LIGHT = SandboxLimits(memory_mb=256, cpu_seconds=5, open_files=32, wall_seconds=20)
_CLONE_NEWNET = 0x40000000


# -- functions run inside the sandbox (module level, so they pickle by reference) --


def _connect(host: str, port: int) -> str:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(2)
        sock.connect((host, port))
    return "connected"


def _connect_and_swallow(host: str, port: int) -> str:
    try:
        _connect(host, port)
    except OSError:
        pass
    return "pretended nothing happened"


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def _native_connect(host: str, port: int) -> int:
    """connect(2) through libc, past any Python audit hook: 0 or the errno it failed with."""
    libc = _libc()
    fd = libc.socket(socket.AF_INET, socket.SOCK_STREAM, 0)
    addr = (ctypes.c_ubyte * 16)()
    addr[0:2] = list(socket.AF_INET.to_bytes(2, "little"))
    addr[2:4] = list(port.to_bytes(2, "big"))
    addr[4:8] = list(socket.inet_aton(host))
    rc = libc.connect(fd, ctypes.byref(addr), 16)
    err = ctypes.get_errno()
    libc.close(fd)
    return 0 if rc == 0 else err


def _escape_attempts(zygote_pid: int) -> dict[str, int]:
    """Kernel-level escapes from the namespaces and limits; each value is the errno it got."""
    libc = _libc()
    try:
        fd = os.open(f"/proc/{zygote_pid}/ns/net", os.O_RDONLY)  # the host's network namespace
    except OSError as exc:
        setns_errno = exc.errno  # not even readable without the dropped capabilities
    else:
        setns_errno = 0 if libc.setns(fd, _CLONE_NEWNET) == 0 else ctypes.get_errno()
        os.close(fd)
    rlimit = (ctypes.c_uint64 * 2)(1 << 20, 1 << 20)  # RLIMIT_NOFILE (7) back up to 1M
    raised = libc.prlimit(0, 7, ctypes.byref(rlimit), None)
    prlimit_errno = ctypes.get_errno() if raised != 0 else 0
    killed = libc.kill(zygote_pid, 0)  # is the zygote's pid even visible?
    kill_errno = ctypes.get_errno() if killed != 0 else 0
    return {"setns": setns_errno, "prlimit": prlimit_errno, "kill": kill_errno}


def _interfaces() -> list[str]:
    lines = Path("/proc/self/net/dev").read_text().splitlines()[2:]
    return sorted(line.split(":")[0].strip() for line in lines)


def _torch_alloc(gigabytes: int) -> int:
    import torch

    return int(torch.ones(gigabytes * 256 * 1024 * 1024, dtype=torch.float32).sum())


def _open_many(count: int) -> int:
    files = [open(os.devnull, "rb") for _ in range(count)]  # noqa: SIM115 - kept open on purpose
    return len(files)


def _spin() -> int:
    n = 0
    while True:
        n += 1


def _raise_own_limits() -> None:
    import resource

    resource.setrlimit(resource.RLIMIT_NOFILE, (4096, 4096))


def _raise_value_error() -> None:
    raise ValueError("the callable's own error")


def _segfault() -> None:
    ctypes.string_at(0)


def _kill_parent() -> None:
    os.kill(os.getppid(), signal.SIGKILL)


def _parent_pid_and_double(x: int) -> list[int]:
    return [os.getppid(), 2 * x]


def _environment() -> list[str]:
    return sorted(os.environ)


def _signal_the_zygote() -> list[int]:
    """From inside the pid namespace, where the zygote is pid 1: SIGKILL, SIGTERM and SIGINT."""
    if os.getppid() != 1:
        raise RuntimeError("not in the sandbox's pid namespace; refusing to signal pid 1")
    libc = _libc()
    return [libc.kill(1, sig) for sig in (signal.SIGKILL, signal.SIGTERM, signal.SIGINT)]


# -- fixtures --


@pytest.fixture(scope="module")
def sandbox():
    # Started first: its zygote imports torch while this process does the same.
    executor = SandboxedExecutor(limits=LIMITS)
    yield executor
    executor.close()


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
    # The executor names an adapter by its CID; any stable name works for the comparison.
    return LocalModel(path=Path(demo.adapters["fables"]), cid="fables-cid", digest=b"", kind="adapter")


@pytest.fixture(scope="module")
def embedder() -> LocalModel:
    from tributa.ml.embeddings import model_dir

    return LocalModel(path=model_dir(), cid="minilm", digest=b"", kind="embed")


def _prompt(text: str, tokens: int = 8) -> bytes:
    return json.dumps({"prompt": text, "max_new_tokens": tokens}).encode()


def _wait_until_dead(pid: int) -> None:
    """Until `pid` is a zombie (the executor reaps it) or gone."""
    stat = Path(f"/proc/{pid}/stat")
    for _ in range(200):
        if not stat.exists() or stat.read_text().rsplit(")", 1)[1].split()[0] == "Z":
            return
        time.sleep(0.01)
    raise AssertionError(f"process {pid} did not die")


def _still_serves(sandbox: SandboxedExecutor, base: LocalModel) -> None:
    out = json.loads(sandbox.run(base, [], _prompt("Once upon a time", 2)))
    assert out["kind"] == "generate" and len(out["token_ids"]) == 2


# -- real jobs --


def test_run__generation_jobs__byte_identical_to_in_process_executor(sandbox, in_process, base, fables):
    for adapters, prompt in (([], "The fox"), ([fables], "The fox"), ([fables], "A crow sat")):
        expected = in_process.run(base, adapters, _prompt(prompt, 16))
        assert sandbox.run(base, adapters, _prompt(prompt, 16)) == expected
    # Forked jobs share the zygote's loaded weights and stay deterministic run after run.
    assert sandbox.run(base, [fables], _prompt("The fox", 16)) == in_process.run(base, [fables], _prompt("The fox", 16))


def test_run__embedding_job__byte_identical_to_in_process_executor(sandbox, in_process, embedder):
    payload = json.dumps({"texts": ["The fox and the crow.", "Bake the bread at 220 C.", "a"]}).encode()
    assert sandbox.run(embedder, [], payload) == in_process.run(embedder, [], payload)


def test_run__bad_input_or_missing_model__same_errors_as_in_process(sandbox, base, tmp_path):
    from tributa.runtime.jobs import JobInputError, JobSpecError

    with pytest.raises(JobInputError, match="input is not JSON"):
        sandbox.run(base, [], b"not json")
    with pytest.raises(JobInputError, match='"prompt" is empty'):
        sandbox.run(base, [], b'{"prompt": ""}')
    missing = LocalModel(path=tmp_path / "nothing-here", cid="x", digest=b"", kind="generate")
    with pytest.raises(JobSpecError, match="not a Hugging Face model folder"):
        sandbox.run(missing, [], _prompt("hi"))
    _still_serves(sandbox, base)


# -- network --


def test_isolation__as_root__network_and_pid_namespaces_with_only_lo(sandbox):
    if os.geteuid() != 0:
        pytest.skip("netns isolation needs root; the userns and audit tests cover the rest")
    assert sandbox.isolation == "netns"
    assert sandbox.run_callable(_interfaces) == ["lo"]
    parent, doubled = sandbox.run_callable(_parent_pid_and_double, 21)
    assert (parent, doubled) == (1, 42)  # its parent, the zygote, is pid 1 of the namespace


@pytest.mark.parametrize("host", ["127.0.0.1", "1.1.1.1"])
def test_run_callable__connect__sandbox_violation_and_next_job_runs(sandbox, base, host):
    with pytest.raises(SandboxViolation, match=f"use the network.*{host}") as caught:
        sandbox.run_callable(_connect, host, 80)
    assert caught.value.kind == "network"
    # Catching the error does not save the job: any attempt fails it.
    with pytest.raises(SandboxViolation, match="use the network"):
        sandbox.run_callable(_connect_and_swallow, host, 80)
    with pytest.raises(SandboxViolation, match="getaddrinfo"):
        sandbox.run_callable(socket.getaddrinfo, "example.com", 443)
    _still_serves(sandbox, base)


def test_run_callable__native_connect_past_the_hook__network_unreachable(sandbox):
    if sandbox.isolation == "audit":
        pytest.skip("only a namespace stops native code")
    # lo exists but is down in a fresh namespace, so even loopback has no route.
    assert sandbox.run_callable(_native_connect, "127.0.0.1", 80) == errno.ENETUNREACH
    assert sandbox.run_callable(_native_connect, "1.1.1.1", 80) == errno.ENETUNREACH


def test_run_callable__kernel_level_escapes__all_refused(sandbox):
    if sandbox.isolation == "audit":
        pytest.skip("the audit fallback has no namespaces to escape")
    got = sandbox.run_callable(_escape_attempts, sandbox.zygote_pid)
    assert got["setns"] in (errno.EACCES, errno.EPERM)
    assert got["prlimit"] == errno.EPERM and got["kill"] == errno.ESRCH


def test_run_callable__signals_to_the_zygote__dropped_by_the_kernel(sandbox, base):
    if sandbox.isolation == "audit":
        pytest.skip("without a pid namespace only the audit hook stands between a job and kill()")
    zygote = sandbox.zygote_pid
    sandbox.run_callable(_signal_the_zygote)  # kill() "succeeds"; an init drops unhandled signals
    _still_serves(sandbox, base)
    assert sandbox.zygote_pid == zygote


def test_run_callable__processes_and_signals__refused(sandbox):
    with pytest.raises(SandboxViolation, match="start a process") as caught:
        sandbox.run_callable(subprocess.run, ["true"])
    assert caught.value.kind == "process"
    with pytest.raises(SandboxViolation, match="change its resource limits"):
        sandbox.run_callable(_raise_own_limits)
    with pytest.raises(SandboxViolation, match="send a signal.*os.kill") as caught:
        sandbox.run_callable(_kill_parent)
    assert caught.value.kind == "signal"
    assert sandbox.run_callable(_parent_pid_and_double, 2)[1] == 4


# -- limits --


@pytest.mark.parametrize("hog", ["bytearray", "torch"])
def test_limits__allocate_2gb__memory_limit_and_executor_still_serves(sandbox, base, hog):
    with pytest.raises(JobLimitExceeded, match="memory limit \\(512 MB") as caught:
        if hog == "bytearray":
            sandbox.run_callable(bytearray, 2 * 1024**3)
        else:
            sandbox.run_callable(_torch_alloc, 2)
    assert caught.value.limit == "memory"
    _still_serves(sandbox, base)


def test_limits__cpu_spin__cpu_limit_and_executor_still_serves(sandbox, base):
    with pytest.raises(JobLimitExceeded, match="CPU-time limit of 1 s") as caught:
        sandbox.run_callable(_spin, limits=SandboxLimits(cpu_seconds=1, wall_seconds=30))
    assert caught.value.limit == "cpu"
    _still_serves(sandbox, base)


def test_limits__sleep__wall_clock_limit_and_executor_still_serves(sandbox, base):
    started = time.monotonic()
    with pytest.raises(JobLimitExceeded, match="wall-clock limit of 1 s") as caught:
        sandbox.run_callable(time.sleep, 30, limits=SandboxLimits(wall_seconds=1))
    assert caught.value.limit == "wall" and time.monotonic() - started < 10
    _still_serves(sandbox, base)


def test_limits__open_many_files__open_files_limit_and_executor_still_serves(sandbox, base):
    with pytest.raises(JobLimitExceeded, match="open-files limit of 32") as caught:
        sandbox.run_callable(_open_many, 1000)
    assert caught.value.limit == "open_files"
    assert sandbox.run_callable(_open_many, 8) == 8  # well under the limit: fine
    _still_serves(sandbox, base)


def test_limits__bad_values__value_error_naming_the_field():
    with pytest.raises(ValueError, match="memory_mb must be an integer >= 16"):
        SandboxLimits(memory_mb=0)
    with pytest.raises(ValueError, match="wall_seconds must be a number > 0"):
        SandboxLimits(wall_seconds=-1)
    with pytest.raises(ValueError, match="network must be one of"):
        SandboxedExecutor(network="off")  # type: ignore[arg-type]


# -- failures of the job itself --


def test_run_callable__exception_or_crash__job_failed_and_executor_still_serves(sandbox, base):
    with pytest.raises(JobFailed, match="ValueError: the callable's own error") as caught:
        sandbox.run_callable(_raise_value_error)
    assert caught.value.remote_type == "ValueError"
    with pytest.raises(JobFailed, match="killed by SIGSEGV without a result"):
        sandbox.run_callable(_segfault)
    with pytest.raises(JobFailed, match="exited with status 3 without a result"):
        sandbox.run_callable(os._exit, 3)
    with pytest.raises(JobFailed, match="not JSON"):
        sandbox.run_callable(socket.socket)  # a socket object cannot come back
    with pytest.raises(JobLimitExceeded, match="result exceeded") as caught:
        sandbox.run_callable(bytes, 70 * 1024 * 1024)
    assert caught.value.limit == "output"
    _still_serves(sandbox, base)


# -- fallback modes, restarts (zygotes without torch: they start in well under a second) --


def test_audit_fallback__blocks_connect_lookup_and_ctypes__then_serves():
    with SandboxedExecutor(limits=LIGHT, network="audit", import_runtime=False) as executor:
        assert executor.isolation == "audit"
        with pytest.raises(SandboxViolation, match="use the network.*127.0.0.1"):
            executor.run_callable(_connect, "127.0.0.1", 80)
        with pytest.raises(SandboxViolation, match="use the network.*getaddrinfo"):
            executor.run_callable(socket.getaddrinfo, "localhost", 80)
        with pytest.raises(SandboxViolation, match="ctypes") as caught:
            executor.run_callable(_native_connect, "127.0.0.1", 80)  # the easy way past the hook
        assert caught.value.kind == "ctypes"
        with pytest.raises(JobLimitExceeded, match="memory"):
            executor.run_callable(bytearray, 2 * 1024**3)
        assert executor.run_callable(_parent_pid_and_double, 5)[1] == 10


def test_userns_mode__unprivileged_namespaces__native_connect_unreachable():
    try:
        executor = SandboxedExecutor(limits=LIGHT, network="userns", import_runtime=False)
        isolation = executor.isolation
    except SandboxError as exc:
        pytest.skip(f"user namespaces are unavailable here: {exc}")
    with executor:
        assert isolation == "userns"
        assert executor.run_callable(_native_connect, "127.0.0.1", 80) == errno.ENETUNREACH
        with pytest.raises(SandboxViolation, match="use the network"):
            executor.run_callable(_connect, "127.0.0.1", 80)


def test_zygote_killed__next_job_restarts_it_transparently():
    with SandboxedExecutor(limits=LIGHT, import_runtime=False) as executor:
        assert executor.run_callable(_parent_pid_and_double, 1)[1] == 2
        first = executor.zygote_pid
        os.kill(first, signal.SIGKILL)
        _wait_until_dead(first)
        assert executor.run_callable(_parent_pid_and_double, 3)[1] == 6
        assert executor.zygote_pid != first


def test_close__stops_the_zygote_and_refuses_new_jobs():
    executor = SandboxedExecutor(limits=LIGHT, import_runtime=False)
    pid = executor.zygote_pid
    executor.close()
    with pytest.raises(SandboxError, match="closed; create a new one"):
        executor.run_callable(_parent_pid_and_double, 1)
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_run_callable__agent_secrets_in_its_environment__job_sees_none_of_them(monkeypatch):
    monkeypatch.setenv("TRIBUTA_PRIVATE_KEY", "0x" + "11" * 32)
    monkeypatch.setenv("TRIBUTA_KEY_PASSWORD", "hunter2")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-for-jobs")
    with SandboxedExecutor(import_runtime=False) as fresh:  # started after the secrets were set
        seen = fresh.run_callable(_environment)
    assert "PATH" in seen
    assert not {"TRIBUTA_PRIVATE_KEY", "TRIBUTA_KEY_PASSWORD", "AWS_SECRET_ACCESS_KEY"} & set(seen)
    assert set(seen) <= set(sandbox_module._ZYGOTE_ENV_PASSED) | set(sandbox_module._ZYGOTE_ENV) | {"PYTHONPATH"}
