"""Attacks from inside a sandboxed serving worker, and from malicious model folders.

The worker's test-only hook (`WorkerConfig(test_hook=True)`, never set by the agent) runs code in
the worker as a job subverted through a model would; every attack must fail while the worker
keeps serving real jobs."""

from __future__ import annotations

import ast
import errno
import json
import logging
import os
import py_compile
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tributa.catalog import describe_folder
from tributa.ml.folder_check import UnsafeModelFolder, check_model_folder
from tributa.ml.models import ensure_demo_models
from tributa.runtime import bwrap, cgroups, landlock, sandbox_process
from tributa.runtime import worker as worker_module
from tributa.runtime.worker import ModelWorker, WorkerConfig, WorkerCrashed, WorkerLoadError
from tributa.store import open_store

pytestmark = pytest.mark.skipif(bwrap.bwrap_path() is None, reason="needs bubblewrap: `make setup` installs it")

SECRET = "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d"


@pytest.fixture(scope="module")
def demo():
    return ensure_demo_models()


@pytest.fixture(scope="module")
def outside(tmp_path_factory):
    """Files the agent can read but a worker must not: a keystore and another job's output."""
    root = tmp_path_factory.mktemp("agent-files")
    keystore = root / "keystore.json"
    keystore.write_text(json.dumps({"private_key": SECRET}))
    keystore.chmod(0o600)
    return root


@pytest.fixture(scope="module")
def worker(demo):
    adapters = tuple(str(p) for p in demo.adapters.values())
    config = WorkerConfig(
        "generate", str(demo.base_dir), threads=1, isolation="bwrap", read_only=adapters, memory_mb=4096, test_hook=True
    )
    environ = {**os.environ, "TRIBUTA_PRIVATE_KEY": SECRET, "TRIBUTA_KEY_PASSWORD": "hunter2"}
    with ModelWorker(config, environ=environ) as worker:
        worker.start()
        yield worker


def _attack(worker: ModelWorker, code: str) -> dict:
    return worker.run({"exec": code}, timeout=120)


def _still_serves(worker: ModelWorker, demo) -> None:
    name, path = next(iter(demo.adapters.items()))
    reply = worker.run({"prompt": "The", "adapter": name, "adapter_path": str(path), "max_new_tokens": 3}, timeout=120)
    assert len(reply["ok"]["token_ids"]) == 3


def test_worker__reads_keystore_shadow_or_repo__not_in_its_filesystem(worker, demo, outside):
    for path in (outside / "keystore.json", "/etc/shadow", "/etc/passwd", Path.home() / ".bash_history"):
        reply = _attack(worker, f"result = open({str(path)!r}).read()")
        assert reply.get("error") == "exec" and "No such file" in reply["message"], (path, reply)
    reply = _attack(worker, "import os; result = sorted(os.listdir('/'))")
    assert SECRET not in reply["ok"]["result"]
    _still_serves(worker, demo)


def test_worker__environment__holds_no_agent_secret(worker, demo):
    reply = _attack(worker, "import os; result = dict(os.environ)")
    env = reply["ok"]["result"]
    assert SECRET not in env and "hunter2" not in env and "TRIBUTA_" not in env
    reply = _attack(worker, "result = open('/proc/1/environ', 'rb').read()")
    assert SECRET not in str(reply)  # pid 1 is bwrap's init in the worker's own pid namespace
    _still_serves(worker, demo)


def test_worker__sees_only_its_own_processes(worker):
    reply = _attack(worker, "import os; result = sorted(int(p) for p in os.listdir('/proc') if p.isdigit())")
    assert len(eval(reply["ok"]["result"])) <= 3  # bwrap's init and the worker itself


@pytest.mark.parametrize(
    "target",
    [
        "/work-escape",
        "model",
        "/usr/lib/escape",
        "/proc/sys/vm/drop_caches",
        "/proc/sys/kernel/core_pattern",
        "/proc/mtrr",
    ],
)
def test_worker__writes_outside_its_tmpfs__refused(worker, demo, target):
    path = str(Path(demo.base_dir) / "escape.txt") if target == "model" else target
    reply = _attack(worker, f"f = open({path!r}, 'w'); f.write('3'); f.close()")
    assert reply.get("error") == "exec", reply
    assert not (Path(demo.base_dir) / "escape.txt").exists()
    assert _attack(worker, "open('/tmp/scratch', 'w').write('x'); result = 'ok'")["ok"]["result"] == "'ok'"


def test_worker__connects_out_even_to_loopback__refused(worker, demo):
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    accepted: list[socket.socket] = []
    threading.Thread(target=lambda: accepted.append(server.accept()[0]), daemon=True).start()
    try:
        reply = _attack(worker, f"import socket; socket.create_connection(('127.0.0.1', {port}), timeout=2)")
        assert reply.get("error") == "exec" and "Address family not supported" in reply["message"], reply
        reply = _attack(worker, "import socket; socket.create_connection(('10.0.0.1', 80), timeout=2)")
        assert reply.get("error") == "exec", reply
        assert not accepted
    finally:
        server.close()
    _still_serves(worker, demo)


@pytest.mark.parametrize(
    "code",
    [
        "import os; os.fork()",
        "import subprocess; subprocess.run(['/bin/true'])",
        "import os; os.execv('/bin/true', ['true'])",
        # unshare(CLONE_NEWUSER) through libc (os.unshare is Python 3.12+)
        "import ctypes, os; libc = ctypes.CDLL(None, use_errno=True)\n"
        "if libc.unshare(0x10000000): raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))",
        # io_uring_setup(4, params): its operations would run out of the filter's sight
        "import ctypes, os; libc = ctypes.CDLL(None, use_errno=True); params = ctypes.create_string_buffer(120)\n"
        "if libc.syscall(425, 4, params) < 0: raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))",
    ],
)
def test_worker__starts_processes_or_namespaces__refused(worker, demo, code):
    reply = _attack(worker, code)
    assert reply.get("error") == "exec" and "Operation not permitted" in reply["message"], reply
    # threads still work: torch needs them
    assert _attack(worker, "import threading; t = threading.Thread(target=int); t.start(); t.join(); result = 1")["ok"]
    _still_serves(worker, demo)


def test_worker__stdout_and_stderr__its_own_pipes_not_the_agents(worker, demo):
    # Through /proc/self/fd a job could reopen inherited ones and read or truncate the agent's log.
    reply = _attack(worker, "import os; result = [os.readlink(f'/proc/self/fd/{n}') for n in (1, 2)]")
    links = ast.literal_eval(reply["ok"]["result"])
    ours = {os.readlink(f"/proc/self/fd/{n}") for n in (1, 2)}
    assert len(links) == 2 and all(link.startswith("pipe:") for link in links), reply
    assert not ours & set(links), (ours, links)
    _still_serves(worker, demo)


def test_worker__allocates_past_its_memory_limit__memory_error(worker, demo):
    reply = _attack(worker, "result = len(bytearray(6 * 2**30))")
    assert reply.get("error") == "exec" and "MemoryError" in reply["message"], reply
    _still_serves(worker, demo)


def test_worker__job_kills_its_worker__that_job_fails_and_the_next_runs(demo):
    config = WorkerConfig("generate", str(demo.base_dir), threads=1, isolation="bwrap", test_hook=True)
    with ModelWorker(config) as worker:
        with pytest.raises(WorkerCrashed, match="died running this job 2 times"):
            worker.run({"exec": "import os; os._exit(9)"}, timeout=120)
        assert worker.restarts == 2
        assert worker.run({"prompt": "The", "adapter": None, "adapter_path": None, "max_new_tokens": 2}, timeout=120)[
            "ok"
        ]


# --- getting out of the worker's limits, or outliving it -------------------------------------


def _call_worker(**settings) -> ModelWorker:
    """A sandboxed worker with no model (quick to start) that runs test-hook code."""
    config = dict(kind="call", base_dir=None, isolation="bwrap", memory_mb=512, test_hook=True, batch_timeout_s=120)
    return ModelWorker(WorkerConfig(**{**config, **settings}))


def _in_namespace(pid_ns: str) -> list[int]:
    """Host pids of the live processes (not zombies) in the pid namespace `pid_ns`."""
    found = []
    for entry in os.listdir("/proc"):
        try:
            if (
                entry.isdigit()
                and os.readlink(f"/proc/{entry}/ns/pid") == pid_ns
                and Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
            ):
                found.append(int(entry))
        except OSError:
            pass
    return found


def _wait_until(condition, timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


# bwrap's reaper (pid 1) once ran beside the worker with only bwrap's filter and none of its
# limits; writing code over it through /proc/1/mem got exec back, shed every rlimit, and left a
# process that outlived the agent's teardown (red team B1).
HIJACK = r"""
import ctypes, os
others = sorted(int(p) for p in os.listdir('/proc') if p.isdigit() and int(p) != os.getpid())
opened = []
for pid in others:
    try:
        open(f'/proc/{pid}/mem', 'r+b', buffering=0).close()
        opened.append(pid)
    except OSError:
        pass
libc = ctypes.CDLL(None, use_errno=True)
cleared = libc.prctl(1, 0, 0, 0, 0)  # PR_SET_PDEATHSIG 0: outlive bwrap
result = {'pid': os.getpid(), 'others': others, 'opened': opened, 'pdeathsig_cleared': cleared == 0}
"""


def test_worker__writes_into_another_sandbox_process_or_clears_its_death_signal__nothing_to_hijack(worker, demo):
    reply = ast.literal_eval(_attack(worker, HIJACK)["ok"]["result"])
    # The worker is its namespace's init: no other process in it to write into.
    assert reply == {"pid": 1, "others": [], "opened": [], "pdeathsig_cleared": False}, reply
    _still_serves(worker, demo)


@pytest.mark.skipif(landlock.abi() is None, reason="this kernel has no Landlock")
def test_worker__in_a_landlock_domain__its_handled_accesses_refused(worker, demo):
    # Landlock's ptrace scoping (no /proc/PID/mem of a process outside the domain) has nothing
    # left to act on inside; what shows the domain is there is its ruleset: no FIFO, no socket file.
    for code in ("import os; os.mkfifo('fifo')", "import socket; socket.socket(socket.AF_UNIX).bind('sock')"):
        reply = _attack(worker, code)
        assert reply.get("error") == "exec" and "Permission denied" in reply["message"], (code, reply)
    _still_serves(worker, demo)


def test_worker__closed_or_its_agent_killed__no_process_of_the_sandbox_survives(tmp_path):
    with _call_worker() as worker:
        worker.start()
        init = worker._sandbox.init_pid
        groups = list(worker._sandbox.cgroup.dirs.values())
        namespace = os.readlink(f"/proc/{init}/ns/pid")
        worker.run({"exec": HIJACK})
    assert _in_namespace(namespace) == []
    assert not any(group.exists() for group in groups)

    # An agent killed outright: bwrap dies with it, and the worker with bwrap.
    script = tmp_path / "agent.py"
    script.write_text(
        "import sys, time\n"
        "from tributa.runtime.worker import ModelWorker, WorkerConfig\n"
        "w = ModelWorker(WorkerConfig('call', None, isolation='bwrap', memory_mb=512, test_hook=True))\n"
        "w.start(); w.run({'exec': sys.argv[1]})\n"
        "print(w._sandbox.init_pid, flush=True); time.sleep(600)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(bwrap.PACKAGE_ROOT.parent)}
    agent = subprocess.Popen([sys.executable, str(script), HIJACK], stdout=subprocess.PIPE, text=True, env=env)
    try:
        init = int(agent.stdout.readline())
        namespace = os.readlink(f"/proc/{init}/ns/pid")
        assert _in_namespace(namespace) == [init]
    finally:
        agent.kill()
        agent.wait()
    assert _wait_until(lambda: _in_namespace(namespace) == []), _in_namespace(namespace)
    cgroups.sweep()  # the groups the killed agent could not remove


def test_worker__socket_of_any_family_but_unix__refused(worker, demo):
    # AF_VSOCK ignores network namespaces: a listener inside was the whole VM's port (red team B2).
    code = (
        "import socket\nresult = {}\n"
        "for family in ('AF_VSOCK', 'AF_INET', 'AF_INET6', 'AF_NETLINK', 'AF_PACKET'):\n"
        "    try:\n        socket.socket(getattr(socket, family), socket.SOCK_DGRAM if family == 'AF_NETLINK' else socket.SOCK_STREAM).close()\n"
        "        result[family] = 0\n"
        "    except OSError as e:\n        result[family] = e.errno\n"
        "a, b = socket.socketpair(); a.send(b'x'); result['unix'] = b.recv(1)"
    )
    result = ast.literal_eval(_attack(worker, code)["ok"]["result"])
    assert result == {
        "AF_VSOCK": errno.EAFNOSUPPORT,
        "AF_INET": errno.EAFNOSUPPORT,
        "AF_INET6": errno.EAFNOSUPPORT,
        "AF_NETLINK": errno.EAFNOSUPPORT,
        "AF_PACKET": errno.EAFNOSUPPORT,
        "unix": b"x",
    }, result
    _still_serves(worker, demo)


FILL = r"""
import os
def fill(path, limit_mb):
    written = 0
    chunk = b'x' * 2**20
    try:
        with open(path, 'wb') as f:
            while written < limit_mb:
                f.write(chunk); f.flush(); written += 1
    except OSError as e:
        return written, e.errno
    return written, 0
"""


def test_worker__fills_tmpfs_shm_or_a_memfd_past_its_memory_limit__stopped():
    # Pages in a tmpfs or a memfd are not in the address space that RLIMIT_AS caps (red team B3).
    with _call_worker(memory_mb=512) as worker:
        code = FILL + (
            "import ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\n"
            "result = {'tmp': fill('/tmp/fill', 640), 'shm': fill('/dev/shm/fill', 640), 'dev': fill('/dev/fill', 1)}\n"
            "try:\n    os.memfd_create('m'); result['memfd'] = 0\nexcept OSError as e:\n    result['memfd'] = e.errno\n"
            "result['shmget'] = (libc.shmget(0, 2**30, 0o1600), ctypes.get_errno())"
        )
        result = ast.literal_eval(worker.run({"exec": code}, timeout=120)["ok"]["result"])
        assert result["tmp"][1] == errno.ENOSPC and result["tmp"][0] <= 128, result
        assert result["shm"][1] == errno.ENOSPC and result["shm"][0] <= 64, result
        assert result["dev"][1] == errno.EROFS, result
        assert result["memfd"] == errno.EPERM and result["shmget"] == (-1, errno.EPERM), result
        assert worker.run({"exec": "result = 1"})["ok"]


@pytest.mark.skipif(not cgroups.kernel_has("memory"), reason="this kernel has no memory cgroup controller")
def test_worker__tmpfs_and_memory_together_past_its_limit__killed_by_its_memory_cgroup():
    with _call_worker(memory_mb=512) as worker:
        worker.start()
        group = worker._sandbox.cgroup.dirs.get("memory")
        assert group is not None, f"no memory cgroup for the worker: {cgroups.missing()}"
        limit = group / ("memory.max" if (group / "memory.max").exists() else "memory.limit_in_bytes")
        assert int(limit.read_text()) == 512 * 2**20
        # Each alone fits: 128 MiB of /tmp, 64 of /dev/shm, 380 of address space; together,
        # what the worker holds is past 512 MiB, and only a cgroup counts it all.
        code = (
            FILL + "fill('/tmp/fill', 128); fill('/dev/shm/fill', 64); held = b'x' * (380 * 2**20); result = len(held)"
        )
        with pytest.raises(WorkerCrashed, match="died running this job 2 times"):
            worker.run({"exec": code}, timeout=120)
        assert worker.run({"exec": "result = 1"})["ok"]


@pytest.mark.skipif(not cgroups.kernel_has("pids"), reason="this kernel has no pids cgroup controller")
def test_worker__starts_thousands_of_threads__capped_at_a_few_hundred():
    # Each thread is a host task; uid 0 is exempt from RLIMIT_NPROC (red team B4).
    def host_tasks() -> int:
        return int(Path("/proc/loadavg").read_text().split()[3].split("/")[1])

    with _call_worker(memory_mb=2048) as worker:
        worker.start()
        assert "pids" in worker._sandbox.cgroup.limits, f"no pids cgroup for the worker: {cgroups.missing()}"
        before = host_tasks()
        code = (
            "import threading, builtins\nthreading.stack_size(32768)\nbuiltins.hold = threading.Event(); started = 0\n"
            "try:\n    for _ in range(4000):\n        threading.Thread(target=builtins.hold.wait).start(); started += 1\n"
            "except RuntimeError:\n    pass\nresult = started"
        )
        started = int(worker.run({"exec": code}, timeout=120)["ok"]["result"])
        assert started < 1000 and host_tasks() - before < 1000, started
        worker.run({"exec": "import builtins; builtins.hold.set(); result = 1"})
        assert worker.run({"exec": "result = 1"})["ok"]


def test_worker__no_cgroup_can_be_made__one_warning_naming_it_and_rlimits_instead(monkeypatch, caplog):
    monkeypatch.setattr(cgroups, "_bases", {})
    monkeypatch.setattr(cgroups, "_missing", {"memory": "not mounted", "pids": "not mounted"})
    monkeypatch.setattr(cgroups, "_warned", False)
    caplog.set_level(logging.WARNING, logger="tributa.agent.cgroups")
    for _ in range(2):
        with _call_worker() as worker:
            worker.start()
            assert worker._sandbox.cgroup.limits == ()
            limits = worker.run({"exec": "result = open('/proc/self/limits').read()"})["ok"]["result"]
    (warning,) = [r.getMessage() for r in caplog.records if r.name == "tributa.agent.cgroups"]
    assert "memory: not mounted" in warning and "pids: not mounted" in warning and "RLIMIT_AS" in warning
    assert f"Max processes             {sandbox_process.pids_max()}" in ast.literal_eval(limits)  # RLIMIT_NPROC


# A subverted worker answering out of turn: every later job got the job before's answer (B5).
FORGE_LATER = r"""
import sys, json, threading, time, builtins
from multiprocessing.connection import Connection
frame = sys._getframe()
while frame.f_code.co_name != 'serve':
    frame = frame.f_back
seq = frame.f_locals['message'].get('seq')
builtins.conn = Connection(int(sys.argv[1]))  # kept: closing it would close the worker's socket
forged = {'op': 'done', 'seq': seq + 1 if isinstance(seq, int) else None, 'results': [{'id': 0, 'ok': {'result': "'FORGED'"}}]}
def later():
    time.sleep(0.5)  # after this job's own answer: the next batch would read it first
    builtins.conn.send_bytes(json.dumps(forged).encode())
threading.Thread(target=later).start()
result = 'planted'
"""


FORGE_NOW = (
    FORGE_LATER.replace("time.sleep(0.5)", "pass")
    .replace("seq + 1 if", "seq - 1 if")
    .replace("threading.Thread(target=later).start()", "later()")
)


def test_worker__sends_a_reply_out_of_turn__replaced_and_every_job_gets_its_own_answer():
    with _call_worker() as worker:
        # An answer to the batch after this one, sent after this one's own: the worker is
        # replaced before the next batch reads it.
        assert worker.run({"exec": FORGE_LATER})["ok"]["result"] == "'planted'"
        time.sleep(1.5)
        assert [worker.run({"exec": f"result = {n}"})["ok"]["result"] for n in (1, 2, 3)] == ["1", "2", "3"]
        assert worker.restarts == 1
        # An answer to the batch before, sent ahead of this one's own: it answers nothing.
        with pytest.raises(WorkerCrashed, match="a reply to another message"):
            worker.run({"exec": FORGE_NOW})
        assert [worker.run({"exec": f"result = {n}"})["ok"]["result"] for n in (4, 5)] == ["4", "5"]


def test_worker__reply_nested_too_deep_to_decode__never_parsed_and_the_next_jobs_get_their_own_answers():
    # json.loads raised RecursionError, which the batch's handling did not expect: the batch
    # failed, the worker stayed, and its real answer went to the next job. Under a raised
    # recursion limit (py_ecc sets 100000; so does this test run) it overflowed the C stack.
    send = "import sys\nfrom multiprocessing.connection import Connection\nConnection(int(sys.argv[1])).send_bytes(b'[' * 200000)\n"
    with _call_worker() as worker:
        with pytest.raises(WorkerCrashed, match="nested deeper"):
            worker.run({"exec": send + "result = 'A'"})
        assert [worker.run({"exec": f"result = {n!r}"})["ok"]["result"] for n in "BC"] == ["'B'", "'C'"]
        assert worker.restarts >= 2


def test_worker__reply_past_what_its_batch_can_hold__never_read_and_replaced():
    # One 64 MiB reply of empty lists grew the agent by 1.5 GiB as json.loads built them (B10).
    huge = (
        "import sys, json\nfrom multiprocessing.connection import Connection\n"
        "frame = sys._getframe()\nwhile frame.f_code.co_name != 'serve': frame = frame.f_back\n"
        "reply = {'op': 'done', 'seq': frame.f_locals['message'].get('seq'), 'results': [{'id': 0, 'ok': {'result': 'x' * 2**24}}]}\n"
        "Connection(int(sys.argv[1])).send_bytes(json.dumps(reply).encode())\nresult = 'sent'"
    )
    with _call_worker() as worker:
        with pytest.raises(WorkerCrashed, match="over its cap"):
            worker.run({"exec": huge})
        assert worker.run({"exec": "result = 1"})["ok"]["result"] == "1"


@pytest.mark.parametrize("isolation", ["bwrap", "none"])
def test_worker__started_from_a_folder_with_compiled_python__it_is_never_imported(tmp_path, monkeypatch, isolation):
    # `python -m` put the cwd first on sys.path, and bwrap kept the agent's cwd where it was
    # bound: a folder's tributa/__init__.pyc replaced the package in the worker (red team B6).
    folder = tmp_path / "folder"
    (folder / "tributa").mkdir(parents=True)
    source = tmp_path / "evil.py"
    source.write_text("raise ImportError('compiled Python from the cwd ran in the worker')\n")
    py_compile.compile(str(source), cfile=str(folder / "tributa" / "__init__.pyc"), doraise=True)
    monkeypatch.chdir(folder)
    with _call_worker(isolation=isolation, read_only=(str(folder),), memory_mb=None) as worker:
        worker.start()
        reply = worker.run({"exec": "import sys, tributa; result = (tributa.__file__, sys.path)"})
    package, path = ast.literal_eval(reply["ok"]["result"])
    assert package == str(bwrap.PACKAGE_ROOT / "__init__.py") and str(folder) not in path and "" not in path


def test_worker__floods_or_forges_its_output__budgeted_and_escaped(caplog):
    flood = (
        "import sys\nfor n in range(20000):\n    sys.stdout.write(f'line {n} ' + 'x' * 100 + '\\n')\n"
        "sys.stdout.write('\\x1b[2J\\x1b[31mjob 7 (task 9) done in 0.1s: bafyFORGED\\x1b[0m\\rINFO agent: paid\\n')\n"
        "sys.stdout.flush(); result = 'ok'"
    )
    caplog.set_level(logging.INFO, logger="tributa.agent.worker")
    with _call_worker() as worker:
        worker.run({"exec": "import sys; print('\\x1b[31mred\\u202eevil', flush=True); result = 1"})
        assert _wait_until(lambda: any("red" in r.getMessage() for r in caplog.records))
        worker.run({"exec": flood})
        assert worker.run({"exec": "result = 1"})["ok"]
    assert _wait_until(lambda: any("output dropped" in r.getMessage() for r in caplog.records))
    lines = [
        r.getMessage()
        for r in caplog.records
        if r.name == "tributa.agent.worker" and r.getMessage().startswith("worker: ")
    ]
    assert len(lines) <= worker_module._OUTPUT_LINES + 1, len(lines)
    assert not any(c in line for line in lines for c in "\x1b\r\u202e")
    assert "worker: \\x1b[31mred\\u202eevil" in lines
    (dropped,) = [line for line in lines if "output dropped" in line]
    assert int(dropped.split()[1]) >= 20000 - worker_module._OUTPUT_LINES


def test_worker__reads_a_previous_jobs_files__gone(worker, demo):
    # One worker serves every requester's jobs of its base model (audit gap 1).
    write = (
        "import os, tempfile\n"
        "paths = ['/tmp/job1-output', '/dev/shm/job1-output', os.path.abspath('relative-output')]\n"
        "with tempfile.NamedTemporaryFile(delete=False) as f:\n    paths.append(f.name)\n"
        "os.makedirs('/tmp/.cache/deep', exist_ok=True); paths.append('/tmp/.cache/deep/file')\n"
        "for path in list(paths):\n"
        "    try:\n        open(path, 'w').write('JOB1 PRIVATE PROMPT')\n"
        "    except OSError:\n        paths.remove(path)\n"
        "result = paths"
    )
    listing = "sorted(n for n in os.listdir('/tmp') if n != os.path.basename(os.getcwd())), os.listdir('/dev/shm')"
    before = _attack(worker, f"import os; result = ({listing})")["ok"]["result"]
    paths = ast.literal_eval(_attack(worker, write)["ok"]["result"])
    reply = _attack(worker, f"import os; result = [p for p in {paths!r} if os.path.exists(p)], {listing}")
    left, *after = ast.literal_eval(reply["ok"]["result"])
    assert left == [] and repr(tuple(after)) == before, reply  # what the model's load left, and no more
    assert len(paths) == 5 and os.path.dirname(paths[2]) != "/tmp"  # each job writes in a folder of its own
    _still_serves(worker, demo)


# --- malicious model folders ------------------------------------------------------------------


def _copy_model(demo, tmp_path: Path) -> Path:
    folder = tmp_path / "model"
    shutil.copytree(demo.base_dir, folder)
    return folder


def _pickle(folder: Path) -> str:
    import pickle

    (folder / "pytorch_model.bin").write_bytes(pickle.dumps({"weights": [1, 2, 3]}))
    return "pytorch_model.bin"


def _auto_map(folder: Path) -> str:
    config = json.loads((folder / "config.json").read_text())
    config["auto_map"] = {"AutoModelForCausalLM": "evil.EvilModel"}
    (folder / "config.json").write_text(json.dumps(config))
    return "config.json"


def _custom_tokenizer(folder: Path) -> str:
    path = folder / "tokenizer_config.json"
    config = json.loads(path.read_text()) if path.exists() else {}
    config["tokenizer_class"] = "EvilTokenizer"
    path.write_text(json.dumps(config))
    return "tokenizer_config.json"


def _symlink_out(folder: Path) -> str:
    (folder / "vocab.txt").symlink_to("/etc/passwd")
    return "vocab.txt"


def _hard_link(folder: Path) -> str:
    outside = folder.parent / "agent.log"  # same filesystem, outside the folder
    outside.write_text("AGENT")
    os.link(outside, folder / "notes.txt")
    return "notes.txt"


def _fifo(folder: Path) -> str:
    (folder / "config.json").unlink()
    os.mkfifo(folder / "config.json")  # reading it would block forever
    return "config.json"


def _oversized_config(folder: Path) -> str:
    path = folder / "tokenizer_config.json"
    config = json.loads(path.read_text()) if path.exists() else {}
    config["tokenizer_class"] = "EvilTokenizer"
    config["padding"] = "x" * (17 * 2**20)  # past the size the check reads
    path.write_text(json.dumps(config))
    return "tokenizer_config.json"


@pytest.mark.parametrize(
    "poison", [_pickle, _auto_map, _custom_tokenizer, _symlink_out, _hard_link, _fifo, _oversized_config]
)
def test_model_folder__malicious__refused_naming_the_file_at_register_start_and_in_the_worker(demo, tmp_path, poison):
    folder = _copy_model(demo, tmp_path)
    culprit = poison(folder)
    with pytest.raises(UnsafeModelFolder, match=culprit):
        check_model_folder(folder)
    with pytest.raises(UnsafeModelFolder, match=culprit):  # the path `model register` and the catalog take
        describe_folder(open_store(tmp_path / "store"), folder)
    config = WorkerConfig("generate", str(folder), threads=1, isolation="bwrap")
    with ModelWorker(config) as worker:  # even if the agent's check were skipped
        with pytest.raises(WorkerLoadError, match=culprit):
            worker.start()


def test_model_folder__symlink_out__unreadable_inside_the_sandbox_anyway(demo, tmp_path, outside):
    folder = tmp_path / "adapter"
    shutil.copytree(next(iter(demo.adapters.values())), folder)
    (folder / "notes.txt").symlink_to(outside / "keystore.json")
    config = WorkerConfig(
        "generate", str(demo.base_dir), threads=1, isolation="bwrap", read_only=(str(folder),), test_hook=True
    )
    with ModelWorker(config) as worker:
        reply = worker.run({"exec": f"result = open({str(folder / 'notes.txt')!r}).read()"}, timeout=120)
    assert reply.get("error") == "exec" and "No such file" in reply["message"]


def test_model_folder__clean_demo_and_minilm__accepted(demo):
    from tributa.ml.embeddings import model_dir

    for folder in (demo.base_dir, *demo.adapters.values(), model_dir()):
        check_model_folder(folder)
