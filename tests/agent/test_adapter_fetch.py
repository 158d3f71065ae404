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
    os.symlink(outside, folder / ".adapter_model.safetensors.tributa-tmp")  # a temp name an exporter might write through
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
