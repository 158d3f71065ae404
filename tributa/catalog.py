"""Local model folders, addressed by the digests the DataRegistry stores.

A model's on-chain `weights_digest` (and each adapter digest) is the sha2-256 digest
inside the CID that `ipfs add -r` gives the folder, so anyone holding the folder can
prove it is the registered model.

A folder this agent lacks can be rebuilt from its CID (`fetch_folder`): block by block, each
re-hashed against its CID as it arrives, written only as plain files and folders under a new
directory; `ModelCatalog.add_fetched` then re-hashes the folder and runs the safety check
before anything may load it.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tributa.errors import TributaError
from tributa.ml.folder_check import UnsafeModelFolder, check_model_folder
from tributa.store import cid as cidlib
from tributa.store import dag
from tributa.store.cid import Cid
from tributa.store.errors import NotFound, StoreError
from tributa.store.unixfs import DataType

# Bounds on a folder rebuilt from its CID: what a stranger's DAG may make this agent store.
MAX_BLOCK_BYTES = 2 * 2**20  # Kubo's own limit on a block it exchanges; ours are <= 256 KiB + framing
MAX_FETCH_ENTRIES = 10_000  # files and folders in one fetched folder
MAX_FETCH_DEPTH = 32  # folders inside folders
MAX_NAME_BYTES = 255
# Block reads per fetch: an honest folder reads each block once (a file's root twice), and even a
# 4 KiB chunker stays under this for MAX_ADAPTER-sized folders; links that repeat one block do not.
MIN_FETCH_VISITS = 100_000
BYTES_PER_VISIT = 4096


@dataclass(frozen=True)
class LocalModel:
    path: Path
    cid: str
    digest: bytes
    kind: str  # "generate", "embed" or "adapter"


def model_kind(path: Path) -> str:
    """What a Hugging Face folder holds, from its config files."""
    if (path / "adapter_config.json").exists():
        return "adapter"
    config_file = path / "config.json"
    if not config_file.exists():
        raise TributaError(f"{path} is not a model folder (no config.json or adapter_config.json)")
    try:
        config = json.loads(config_file.read_text())
    except ValueError:
        raise TributaError(f"{config_file} is not valid JSON") from None
    return config_kind(config)


def config_kind(config: dict) -> str:
    """ "generate" or "embed", from a base folder's parsed config.json (as agents classify it;
    tributa.model_kind reads a registered folder's config.json by CID for the same answer)."""
    architectures = " ".join(config.get("architectures") or [config.get("model_type", "")])
    if "LMHead" in architectures or "CausalLM" in architectures:
        return "generate"
    return "embed"


def describe_folder(store, path: Path) -> LocalModel:
    path = Path(path)
    if not path.is_dir():
        raise TributaError(f"model folder {path} does not exist")
    check_model_folder(path)  # no pickles, remote code or symlinks out, before anything reads it
    cid = str(store.cid_of(path))
    return LocalModel(path=path, cid=cid, digest=cidlib.cid_to_digest(cid), kind=model_kind(path))


class ModelCatalog:
    """The folders one agent (or the CLI) can serve, by digest."""

    def __init__(self, store) -> None:
        self.store = store
        self._by_digest: dict[bytes, LocalModel] = {}

    def add(self, path: Path) -> LocalModel:
        model = describe_folder(self.store, path)
        self._by_digest[model.digest] = model
        return model

    def get(self, digest: bytes) -> LocalModel | None:
        return self._by_digest.get(bytes(digest))

    def __len__(self) -> int:
        return len(self._by_digest)

    def add_fetched(self, path: Path, digest: bytes) -> LocalModel:
        """Admit a folder rebuilt from a registered adapter's CID: it must pass the safety check,
        re-hash to that very CID (so the bytes on disk are what was registered, in the layout
        `ipfs add` gives) and be an adapter folder. Anything else is FolderRefused(everywhere=True):
        every agent would find the same in the registered content."""
        path = Path(path)
        wanted = str(cidlib.digest_to_cid(bytes(digest)))
        try:
            model = describe_folder(self.store, path)
        except UnsafeModelFolder as exc:  # name the file inside the folder, not this agent's paths
            raise FolderRefused(
                str(exc).replace(f"{path}/", "").replace(str(path), "the folder"), everywhere=True
            ) from None
        except TributaError as exc:
            raise FolderRefused(str(exc).replace(str(path), "the folder"), everywhere=True) from None
        if model.digest != bytes(digest):
            raise FolderRefused(
                f"the rebuilt folder hashes to {model.cid}, not the registered {wanted}", everywhere=True
            )
        if model.kind != "adapter":
            raise FolderRefused(f"{wanted} is not a LoRA adapter folder (no adapter_config.json)", everywhere=True)
        self._by_digest[model.digest] = model
        return model


class FolderRefused(TributaError):
    """A folder fetched by CID that may not be served. `everywhere`: the registered content itself
    is at fault (every agent would refuse it: not safe, not an adapter, over the bounds); otherwise
    this copy or this fetch is (bytes that do not hash to their CID, a block the source lacks)."""

    def __init__(self, message: str, everywhere: bool = False) -> None:
        super().__init__(message)
        self.everywhere = everywhere


class _CheckedBlocks:
    """A dag.BlockSource over `read_block`, re-hashing every block against its CID and counting
    the bytes read; it keeps the last block, since a file is decoded once to check it and again
    by dag.open_file."""

    def __init__(self, read_block: Callable[[Cid], bytes], max_bytes: int, max_visits: int) -> None:
        self._read_block = read_block
        self.max_bytes = max_bytes
        self.max_visits = max_visits
        self.bytes_read = 0
        self.visits = 0
        self._last: tuple[Cid, bytes] | None = None

    def read(self, cid: Cid) -> bytes:
        self.visits += 1  # cached reads too: links repeating one block cost time however cheap the block
        if self.visits > self.max_visits:
            raise FolderRefused(f"the folder's DAG takes more than {self.max_visits} block reads", everywhere=True)
        if self._last is not None and self._last[0] == cid:
            return self._last[1]
        try:
            data = bytes(self._read_block(cid))
        except NotFound as exc:  # this source lacks it; another may not
            raise FolderRefused(f"block {cid} is not available: {exc}") from None
        if hashlib.sha256(data).digest() != cid.digest:
            raise FolderRefused(f"block {cid} as served does not hash to its CID: the copy was altered")
        if len(data) > MAX_BLOCK_BYTES:
            raise FolderRefused(
                f"block {cid} is {len(data)} bytes, over the {MAX_BLOCK_BYTES}-byte block limit", everywhere=True
            )
        self.bytes_read += len(data)
        # Framing and directory nodes add a little to the files' bytes: allow 1/16 on top.
        if self.bytes_read > self.max_bytes + self.max_bytes // 16 + MAX_BLOCK_BYTES:
            raise FolderRefused(f"the folder's blocks pass {self.max_bytes} bytes", everywhere=True)
        self._last = (cid, data)
        return data


def fetch_folder(
    read_block: Callable[[Cid], bytes],
    cid: str | Cid,
    dest: Path,
    *,
    max_bytes: int,
    max_entries: int = MAX_FETCH_ENTRIES,
    max_visits: int | None = None,
) -> None:
    """Rebuild the UnixFS folder `cid` at `dest` (which must not exist) from the blocks
    `read_block(cid)` returns, each re-hashed here against its CID, so the folder is the one the
    CID names or nothing. The DAG may be a stranger's: only folders and regular files are made
    (each created new, never through a link: a UnixFS symlink is refused), entry names must be
    plain and unique, and the files' declared sizes, the blocks read, the entry count and the
    depth, the block reads and the shard nesting are bounded. Raises FolderRefused, and nothing
    else, whatever the blocks hold (a partial `dest` is the caller's to remove)."""
    root = Cid.parse(str(cid))
    if max_visits is None:
        max_visits = max(MIN_FETCH_VISITS, max_bytes // BYTES_PER_VISIT + 2 * max_entries)
    source = _CheckedBlocks(read_block, max_bytes, max_visits)
    budget = {"entries": 0, "bytes": 0}
    try:
        node = dag.load(source, root)
        if node.kind not in (DataType.DIRECTORY, DataType.HAMT_SHARD):
            raise FolderRefused(f"{root} is a UnixFS {node.kind.name.lower()}, not a folder", everywhere=True)
        _fetch_node(source, node, Path(dest), 0, budget, max_bytes, max_entries)
    except FolderRefused:
        raise
    except OSError as exc:  # this agent's disk (full, read-only): not the content's fault
        raise FolderRefused(f"cannot write the fetched folder: {exc.strerror or exc}") from None
    except StoreError as exc:  # blocks that hash right but are no well-formed UnixFS folder: the content's fault
        raise FolderRefused(f"{root} is not a well-formed UnixFS folder: {exc}", everywhere=True) from None
    except RecursionError:  # bounded above; kept so no shape of DAG can take the agent down
        raise FolderRefused(f"{root} nests too deep to rebuild", everywhere=True) from None
    except Exception as exc:  # a bug here, not proof against the content: this copy only, never a crash  # noqa: BLE001
        raise FolderRefused(f"rebuilding {root} failed unexpectedly: {type(exc).__name__}: {exc}") from None


def _fetch_node(
    source: _CheckedBlocks, node: dag.Node, dest: Path, depth: int, budget: dict, max_bytes: int, max_entries: int
) -> None:
    if node.kind in (DataType.DIRECTORY, DataType.HAMT_SHARD):
        if depth > MAX_FETCH_DEPTH:
            raise FolderRefused(f"folders nest more than {MAX_FETCH_DEPTH} deep", everywhere=True)
        os.mkdir(dest, 0o755)
        names: set[bytes] = set()
        for name, child in dag.list_dir(source, node):
            if not name or name in (b".", b"..") or b"/" in name or b"\0" in name or len(name) > MAX_NAME_BYTES:
                raise FolderRefused(f"entry name {name[:80]!r} is not a plain file name", everywhere=True)
            if name in names:
                raise FolderRefused(f"entry name {name[:80]!r} appears twice in one folder", everywhere=True)
            names.add(name)
            budget["entries"] += 1
            if budget["entries"] > max_entries:
                raise FolderRefused(f"the folder holds more than {max_entries} entries", everywhere=True)
            _fetch_node(
                source, dag.load(source, child), dest / os.fsdecode(name), depth + 1, budget, max_bytes, max_entries
            )
        return
    if node.kind == DataType.SYMLINK:
        raise FolderRefused(
            f"{dest.name} is a symlink: a fetched model folder holds only files and folders", everywhere=True
        )
    dag.require_file(node)
    declared = node.fs.filesize if node.fs is not None and node.fs.filesize is not None else len(node.block)
    budget["bytes"] += declared
    if budget["bytes"] > max_bytes:
        raise FolderRefused(f"the folder's files pass {max_bytes} bytes", everywhere=True)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    with os.fdopen(os.open(dest, flags, 0o644), "wb") as handle:
        for chunk in dag.open_file(source, node.cid):  # re-checks the declared size against the bytes
            handle.write(chunk)
