"""The kind of a registered model: "generation", "embedding" or unknown, with the reason.

The chain stores only the base folder's digest (its CID), not what the folder holds. The kind is
read from the folder's config.json, as agents classify their folders (tributa.catalog.config_kind):
the folder's directory node and config.json are read block by block from this machine's store
when it holds them, else from the oracle's content API (GET /v1/blocks/{cid}), every block
re-hashed against its CID (tributa.catalog._CheckedBlocks, the reader agents rebuild adapter
folders with). Nothing else of the folder is read: never the weights.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from tributa import json_input
from tributa.catalog import FolderRefused, _CheckedBlocks, config_kind
from tributa.errors import TributaError
from tributa.store import cid as cidlib
from tributa.store import dag
from tributa.store.cid import Cid
from tributa.store.errors import NotFound, StoreError
from tributa.store.unixfs import DataType

GENERATION, EMBEDDING, UNKNOWN = "generation", "embedding", "unknown"
_FROM_CATALOG = {"generate": GENERATION, "embed": EMBEDDING}
MAX_CONFIG_BYTES = 1 * 2**20  # a Hugging Face config.json is a few KiB
MAX_BLOCK_READS = 2_000  # the directory node (or its HAMT shards) and config.json's blocks
REMOTE_TIMEOUT_S = 10.0  # each request's connect and read steps
TOTAL_TIMEOUT_S = 20.0  # the whole lookup: task submit waits no longer before going on


@dataclass(frozen=True)
class ModelKind:
    kind: str  # GENERATION, EMBEDDING or UNKNOWN
    reason: str | None = None  # why it is unknown
    source: str | None = None  # where config.json came from: "local store" or "oracle"

    @property
    def known(self) -> bool:
        return self.kind != UNKNOWN

    def __str__(self) -> str:
        return self.kind if self.known else f"unknown ({self.reason})"


def kind_of_weights(weights_digest: bytes, store, remote=None, total_s: float = TOTAL_TIMEOUT_S) -> ModelKind:
    """The kind of the base folder registered as `weights_digest`, read from `store`, else from
    `remote` (a tributa.content_api.ContentApi, or None: local only), within `total_s` seconds
    however the remote answers (past it: unknown, and the caller goes on)."""
    root = cidlib.digest_to_cid(bytes(weights_digest))
    from_oracle = False  # some block came from the oracle's content API
    remote_error: str | None = None  # why the oracle's content API could not serve a block
    deadline = time.monotonic() + total_s

    def read_block(cid: Cid) -> bytes:
        nonlocal from_oracle, remote_error
        try:
            return store.read(cid)  # re-hashed by the store; _CheckedBlocks checks it again
        except StoreError:  # absent, or a damaged copy
            pass
        if remote is None:
            raise NotFound(f"{cid} is not in this machine's store")
        if time.monotonic() > deadline:
            remote_error = f"the oracle's content API took over {total_s:.0f}s to serve its folder"
            raise NotFound(remote_error)
        try:
            data = remote.read(cid, deadline)
        except NotFound:
            raise NotFound(f"neither this machine's store nor the oracle's holds block {cid}") from None
        except (StoreError, TributaError) as exc:  # unreachable, refused, or bytes that do not hash
            remote_error = str(exc)
            raise NotFound(str(exc)) from None
        from_oracle = True
        return data

    source = _CheckedBlocks(read_block, MAX_CONFIG_BYTES, MAX_BLOCK_READS)
    try:
        node = dag.load(source, root)
        if node.kind not in (DataType.DIRECTORY, DataType.HAMT_SHARD):
            return ModelKind(UNKNOWN, f"its weights {root} are a UnixFS {node.kind.name.lower()}, not a model folder")
        names = {}
        for name, link in dag.entries(source, node):  # up to config.json, not the whole listing
            names[name] = link
            if name == "config.json":
                break
        if "config.json" not in names:
            what = "an adapter folder" if "adapter_config.json" in names else "a folder without config.json"
            return ModelKind(UNKNOWN, f"its weights {root} are {what}")
        config_node = dag.load(source, names["config.json"])
        dag.require_file(config_node)
        size = config_node.fs.filesize if config_node.fs is not None and config_node.fs.filesize is not None else 0
        if size > MAX_CONFIG_BYTES:
            return ModelKind(
                UNKNOWN, f"its config.json is {size:,} bytes, over the {MAX_CONFIG_BYTES:,}-byte limit read"
            )
        raw = b"".join(dag.open_file(source, names["config.json"]))
    except FolderRefused as exc:
        return ModelKind(UNKNOWN, _unavailable(root, str(exc), remote, remote_error))
    except StoreError as exc:  # blocks that hash right but are no well-formed UnixFS folder
        return ModelKind(UNKNOWN, f"its weights {root} are not a well-formed folder: {exc}")
    where = "oracle" if from_oracle else "local store"
    try:
        config = json_input.loads(raw)
        kind = config_kind(config) if isinstance(config, dict) else None
    except (ValueError, TypeError, AttributeError):
        kind = None
    if kind is None:
        return ModelKind(UNKNOWN, f"the config.json of its weights {root} is not a JSON object with architectures")
    return ModelKind(_FROM_CATALOG[kind], source=where)


def _unavailable(root: Cid, detail: str, remote, remote_error: str | None) -> str:
    if remote is None:
        return f"its weights {root} are not in this machine's store"
    if remote_error is not None:
        return f"its weights {root} are not in this machine's store, and {remote_error}"
    if "neither" in detail:
        return f"its weights {root} are neither in this machine's store nor the oracle's"
    return f"its weights {root} could not be read: {detail}"


def registered_kind(
    contracts, store, oracle_url: str | None, weights_digest: bytes, timeout_s: float = REMOTE_TIMEOUT_S
) -> ModelKind:
    """`kind_of_weights`, asking the oracle's content API at `oracle_url` (unsigned block reads)
    for what this machine's store lacks; None: this machine's store only."""
    if not oracle_url:
        return kind_of_weights(weights_digest, store)
    from tributa.content_api import ContentApi

    with ContentApi(oracle_url, contracts.chain_id, contracts.escrow.address, timeout_s=timeout_s) as remote:
        return kind_of_weights(weights_digest, store, remote)
