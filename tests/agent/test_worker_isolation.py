"""Attacks from inside a sandboxed serving worker, and from malicious model folders.

The worker's test-only hook (`WorkerConfig(test_hook=True)`, never set by the agent) runs code in
the worker as a job subverted through a model would; every attack must fail while the worker
keeps serving real jobs."""

from __future__ import annotations

import ast
import json
import os
import shutil
import socket
import threading
from pathlib import Path

import pytest

from tributa.catalog import describe_folder
from tributa.ml.folder_check import UnsafeModelFolder, check_model_folder
from tributa.ml.models import ensure_demo_models
from tributa.runtime import bwrap
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
    config = WorkerConfig("generate", str(demo.base_dir), threads=1, isolation="bwrap", read_only=adapters, memory_mb=4096, test_hook=True)
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


@pytest.mark.parametrize("target", [
    "/work-escape", "model", "/usr/lib/escape", "/proc/sys/vm/drop_caches", "/proc/sys/kernel/core_pattern", "/proc/mtrr",
])
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
        assert reply.get("error") == "exec" and ("refused" in reply["message"] or "unreachable" in reply["message"]), reply
        reply = _attack(worker, "import socket; socket.create_connection(('10.0.0.1', 80), timeout=2)")
        assert reply.get("error") == "exec", reply
        assert not accepted
    finally:
        server.close()
    _still_serves(worker, demo)


@pytest.mark.parametrize("code", [
    "import os; os.fork()",
    "import subprocess; subprocess.run(['/bin/true'])",
    "import os; os.execv('/bin/true', ['true'])",
    # unshare(CLONE_NEWUSER) through libc (os.unshare is Python 3.12+)
    "import ctypes, os; libc = ctypes.CDLL(None, use_errno=True)\n"
    "if libc.unshare(0x10000000): raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))",
    # io_uring_setup(4, params): its operations would run out of the filter's sight
    "import ctypes, os; libc = ctypes.CDLL(None, use_errno=True); params = ctypes.create_string_buffer(120)\n"
    "if libc.syscall(425, 4, params) < 0: raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))",
])
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
        assert worker.run({"prompt": "The", "adapter": None, "adapter_path": None, "max_new_tokens": 2}, timeout=120)["ok"]


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


@pytest.mark.parametrize("poison", [_pickle, _auto_map, _custom_tokenizer, _symlink_out, _hard_link, _fifo, _oversized_config])
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
    config = WorkerConfig("generate", str(demo.base_dir), threads=1, isolation="bwrap", read_only=(str(folder),), test_hook=True)
    with ModelWorker(config) as worker:
        reply = worker.run({"exec": f"result = open({str(folder / 'notes.txt')!r}).read()"}, timeout=120)
    assert reply.get("error") == "exec" and "No such file" in reply["message"]


def test_model_folder__clean_demo_and_minilm__accepted(demo):
    from tributa.ml.embeddings import model_dir

    for folder in (demo.base_dir, *demo.adapters.values(), model_dir()):
        check_model_folder(folder)
