"""Adapters rebuilt from their CID, on a real content store: every block re-hashed, the folder
re-hashed to the registered CID and safety-checked, and a stranger's DAG never writes outside
the new folder. (The network version, fetching from the oracle's API, is
tests/e2e/test_adapter_fetch.py.)"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

import pytest

from compute_agent import service
from compute_agent.client import OracleRefused
from compute_agent.service import AdapterCache, AdapterRefused
from tributa.catalog import FolderRefused, ModelCatalog, fetch_folder
from tributa.store import cid as cidlib
from tributa.store import dag, open_store
from tributa.store.cid import Cid


def _adapter(folder: Path, seed: int = 1, size: int = 600_000) -> Path:
    """A LoRA-shaped folder: its config and a weights file of several 256 KiB chunks."""
    folder.mkdir(parents=True)
    (folder / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 4, "target_modules": ["q_proj"]}))
    (folder / "adapter_model.safetensors").write_bytes(bytes((i * seed) % 251 for i in range(size)))
    (folder / "sub").mkdir()
    (folder / "sub" / "README.md").write_text("a note\n")
    return folder


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def store(tmp_path):
    return open_store(tmp_path / "store")


def test_fetch_folder__from_verified_blocks__same_files_same_cid(store, tmp_path):
    source = _adapter(tmp_path / "a")
    cid = store.put_dir(source)
    reads: list[Cid] = []

    def read(block: Cid) -> bytes:
        reads.append(block)
        return store.read(block)

    fetch_folder(read, str(cid), tmp_path / "out", max_bytes=10**7)

    assert _files(tmp_path / "out") == _files(source)
    assert store.cid_of(tmp_path / "out") == cid
    assert len(reads) == len(set(reads)) == sum(1 for _ in dag.walk(store, cid))  # each block once


def test_fetch_folder__a_block_altered_in_transit__refused_for_this_copy_only(store, tmp_path):
    cid = store.put_dir(_adapter(tmp_path / "a"))
    weights = dict(dag.list_dir(store, dag.load(store, cid)))[b"adapter_model.safetensors"]
    victim = dag.load(store, weights).links[1].cid  # the second 256 KiB chunk

    def read(block: Cid) -> bytes:
        data = store.read(block)
        return data[:-1] + bytes([data[-1] ^ 1]) if block == victim else data

    with pytest.raises(FolderRefused, match="does not hash to its CID") as refused:
        fetch_folder(read, cid, tmp_path / "out", max_bytes=10**7)
    assert not refused.value.everywhere  # another copy may be intact: the task goes to another agent


def test_fetch_folder__a_unixfs_symlink__refused_and_nothing_written_through_it(store, tmp_path):
    outside = tmp_path / "outside.txt"
    outside.write_text("keep me")
    folder = _adapter(tmp_path / "a")
    os.symlink(
        outside, folder / ".adapter_model.safetensors.tributa-tmp"
    )  # a temp name an exporter might write through
    cid = store.put_dir(folder)

    with pytest.raises(FolderRefused, match="symlink") as refused:
        fetch_folder(store.read, cid, tmp_path / "out", max_bytes=10**7)
    assert refused.value.everywhere
    assert outside.read_text() == "keep me"
    assert not any(p.is_symlink() for p in (tmp_path / "out").rglob("*"))


def test_fetch_folder__over_the_size_bound__refused_before_the_file_is_read(store, tmp_path):
    cid = store.put_dir(_adapter(tmp_path / "a", size=600_000))
    reads: list[Cid] = []

    def read(block: Cid) -> bytes:
        reads.append(block)
        return store.read(block)

    with pytest.raises(FolderRefused, match="pass 100000 bytes") as refused:
        fetch_folder(read, cid, tmp_path / "out", max_bytes=100_000)
    assert refused.value.everywhere
    assert len(reads) < 5  # the declared size stops it: no chunk of the big file was fetched


def test_fetch_folder__a_file_not_a_folder__refused(store, tmp_path):
    cid = store.put_bytes(b"not a folder")
    with pytest.raises(FolderRefused, match="not a folder"):
        fetch_folder(store.read, cid, tmp_path / "out", max_bytes=10**7)


def _cache(store, tmp_path, name="agent") -> AdapterCache:
    return AdapterCache(ModelCatalog(store), store, tmp_path / name / "adapters")


def _no_oracle(block: Cid) -> bytes:
    raise AssertionError(f"the oracle was asked for {block}")


def test_adapter_cache__in_its_own_store__fetched_without_the_oracle_and_kept_across_restarts(store, tmp_path):
    cid = store.put_dir(_adapter(tmp_path / "a"))
    digest = cidlib.cid_to_digest(str(cid))
    cache = _cache(store, tmp_path)

    model = cache.ensure(digest, _no_oracle)

    assert model.cid == str(cid) and model.kind == "adapter" and model.path == cache.root / str(cid)
    assert cache.catalog.get(digest) == model
    assert not [p for p in cache.root.iterdir() if p.name.startswith(".")]  # no staging left behind
    # A restarted agent (new catalog) re-checks the cached folder instead of fetching it again.
    again = _cache(store, tmp_path).ensure(digest, _no_oracle)
    assert again.path == model.path and again.digest == digest


def test_adapter_cache__from_the_remote_when_its_store_lacks_blocks(store, tmp_path):
    publisher = open_store(tmp_path / "publisher-store")
    cid = publisher.put_dir(_adapter(tmp_path / "a"))
    served: list[Cid] = []

    def remote(block: Cid) -> bytes:
        served.append(block)
        return publisher.read(block)

    model = _cache(store, tmp_path).ensure(cidlib.cid_to_digest(str(cid)), remote)
    assert model.cid == str(cid) and len(served) == sum(1 for _ in dag.walk(publisher, cid))


def test_adapter_cache__unsafe_registered_folder__refused_everywhere_removed_and_remembered(store, tmp_path):
    folder = _adapter(tmp_path / "a")
    (folder / "training_args.bin").write_bytes(b"\x80\x04N.")  # a pickle, as HF Trainer writes one
    cid = store.put_dir(folder)
    digest = cidlib.cid_to_digest(str(cid))
    cache = _cache(store, tmp_path)

    with pytest.raises(AdapterRefused, match="training_args.bin: pickle-based weights") as refused:
        cache.ensure(digest, _no_oracle)
    assert refused.value.everywhere and str(tmp_path) not in str(refused.value)
    assert list(cache.root.iterdir()) == [] and cache.catalog.get(digest) is None
    cache.store = None  # the refusal is remembered: a second fetch would ask the oracle, which fails the test
    with pytest.raises(AdapterRefused, match="pickle"):
        cache.ensure(digest, _no_oracle)


def test_adapter_cache__blocks_that_verify_but_another_layout__refused_by_the_rehash(store, tmp_path):
    """A DAG with raw leaves (CIDv1 import): every block hashes right, but the folder does not
    re-hash to the registered CID the way `ipfs add` lays it out, so it is not what agents prove."""
    cid_v1 = store.put_dir(_adapter(tmp_path / "a"), cid_version=1)
    digest = cid_v1.digest  # as registered on-chain: the root's digest

    with pytest.raises(AdapterRefused, match="hashes to .*not the registered") as refused:
        _cache(store, tmp_path).ensure(digest, _no_oracle)
    assert refused.value.everywhere


def test_adapter_cache__not_an_adapter_folder__refused(store, tmp_path):
    folder = tmp_path / "base"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"architectures": ["LlamaForCausalLM"]}))
    cid = store.put_dir(folder)
    with pytest.raises(AdapterRefused, match="not a LoRA adapter folder"):
        _cache(store, tmp_path).ensure(cidlib.cid_to_digest(str(cid)), _no_oracle)


def test_adapter_cache__concurrent_jobs__one_fetch_each_block_once(store, tmp_path):
    publisher = open_store(tmp_path / "publisher-store")
    cid = publisher.put_dir(_adapter(tmp_path / "a"))
    served: list[Cid] = []

    def slow_remote(block: Cid) -> bytes:
        served.append(block)
        time.sleep(0.05)
        return publisher.read(block)

    cache = _cache(store, tmp_path)
    results: list = []
    threads = [threading.Thread(target=lambda: results.append(cache.ensure(cid.digest, slow_remote))) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 4 and len({r.path for r in results}) == 1
    assert len(served) == len(set(served)) == sum(1 for _ in dag.walk(publisher, cid))


def test_adapter_cache__oracle_lacks_a_block__refused_for_now_then_tried_again(store, tmp_path, monkeypatch):
    publisher = open_store(tmp_path / "publisher-store")
    cid = publisher.put_dir(_adapter(tmp_path / "a"))
    asked: list[Cid] = []

    def remote(block: Cid) -> bytes:
        asked.append(block)
        if len(asked) == 1:
            raise OracleRefused(404, f"{block} is not in the oracle's store")
        return publisher.read(block)

    cache = _cache(store, tmp_path)
    with pytest.raises(AdapterRefused, match="404") as refused:
        cache.ensure(cid.digest, remote)
    assert not refused.value.everywhere
    with pytest.raises(AdapterRefused, match="404"):  # within REFETCH_AFTER_S: the same answer, nothing asked
        cache.ensure(cid.digest, remote)
    assert len(asked) == 1
    monkeypatch.setattr(service, "REFETCH_AFTER_S", 0.0)
    assert cache.ensure(cid.digest, remote).cid == str(cid)


# -- crafted DAGs: blocks that hash right but are shaped to exhaust the agent -----------------


def _put(blocks: dict[Cid, bytes], block: bytes, codec: str = "dag-pb") -> Cid:
    import hashlib

    cid = Cid(version=0 if codec == "dag-pb" else 1, codec=codec, digest=hashlib.sha256(block).digest())
    blocks[cid] = block
    return cid


def _node(links: list[tuple[Cid, bytes]], data: bytes) -> bytes:
    from tributa.store import dagpb

    return dagpb.encode_node([dagpb.encode_link(c.to_bytes(), name, 1) for c, name in links], data)


HAMT_SHARD_DATA = b"\x08\x05\x28\x22\x30\x80\x02"  # Type HAMTShard, hashType murmur3, fanout 256


def test_fetch_folder__hamt_shards_nested_thousands_deep__refused_everywhere_not_a_crash(tmp_path):
    blocks: dict[Cid, bytes] = {}
    inner = _put(blocks, _node([], HAMT_SHARD_DATA))
    for _ in range(3000):  # each shard's only link is a two-character sub-shard name
        inner = _put(blocks, _node([(inner, b"00")], HAMT_SHARD_DATA))

    with pytest.raises(FolderRefused, match="HAMT shards more than 64 deep") as refused:
        fetch_folder(blocks.__getitem__, inner, tmp_path / "out", max_bytes=10**7)
    assert refused.value.everywhere


def test_fetch_folder__a_file_repeating_one_big_leaf__stops_at_its_declared_size(tmp_path):
    from tributa.store import unixfs

    blocks: dict[Cid, bytes] = {}
    leaf = _put(blocks, bytes(2**20), codec="raw")  # 1 MiB, read once and then served from the cache
    file_root = _put(blocks, _node([(leaf, b"")] * 2000, unixfs.encode_file_node_data(10, [])))  # claims 10 bytes
    folder = _put(blocks, _node([(file_root, b"adapter_model.safetensors")], unixfs.DIRECTORY_DATA))

    with pytest.raises(FolderRefused, match="more than the 10 bytes") as refused:
        fetch_folder(blocks.__getitem__, folder, tmp_path / "out", max_bytes=10**9)
    assert refused.value.everywhere
    assert (tmp_path / "out" / "adapter_model.safetensors").stat().st_size == 0  # not 2 GiB: nothing past the size


def test_fetch_folder__a_file_repeating_one_empty_leaf__bounded_by_block_reads(tmp_path):
    from tributa.store import unixfs

    blocks: dict[Cid, bytes] = {}
    empty = _put(blocks, b"", codec="raw")
    file_root = _put(blocks, _node([(empty, b"")] * 20_000, unixfs.encode_file_node_data(0, [])))
    folder = _put(blocks, _node([(file_root, b"weights.safetensors")], unixfs.DIRECTORY_DATA))
    reads = []

    def read(block: Cid) -> bytes:
        reads.append(block)
        return blocks[block]

    with pytest.raises(FolderRefused, match="more than 5000 block reads") as refused:
        fetch_folder(read, folder, tmp_path / "out", max_bytes=10**9, max_visits=5000)
    assert refused.value.everywhere
    assert len(reads) <= 4  # the folder, the file's root and the one leaf: the rest were the cache's


def test_fetch_folder__a_source_that_misbehaves__refused_for_this_copy_not_raised(tmp_path):
    def read(block: Cid) -> str:
        return "a block source returning text, not bytes"  # a transport defect: TypeError inside

    with pytest.raises(FolderRefused, match="failed unexpectedly: TypeError") as refused:
        fetch_folder(
            read, Cid.parse("QmUNLLsPACCz1vLxQVkXqqLX5R1X345qqfHbsf67hvA3Nn"), tmp_path / "out", max_bytes=10**7
        )
    assert not refused.value.everywhere  # a fault of this path is no proof against the content
