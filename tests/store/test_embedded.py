"""The embedded store on disk: layout, integrity checks, repair, gc safety, full disks, memory."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.store.helpers import data, write
from tributa.store import dagpb
from tributa.store.blockstore import Blockstore
from tributa.store.cid import Cid
from tributa.store.embedded import EmbeddedStore
from tributa.store.errors import IntegrityError, NotFound, StoreError
from tributa.store.importer import Importer
from tributa.store.layout import CHUNK_SIZE, directory_node

REPO_ROOT = Path(__file__).resolve().parents[2]


def leaf_cids(store: EmbeddedStore, root: Cid) -> list[Cid]:
    return [link.cid for link in dagpb.decode_node(store.read(root)).links]


def all_block_files(store: EmbeddedStore) -> list[Path]:
    return sorted(path for path in (store.root / "blocks").rglob("*") if path.is_file())


def test_add__stores_one_file_per_block_named_by_its_multihash(embedded: EmbeddedStore) -> None:
    root = embedded.put_bytes(data(2 * CHUNK_SIZE + 1, seed=10))
    files = all_block_files(embedded)
    assert len(files) == 4  # three leaves and the root
    for path in files:
        digest = hashlib.sha256(path.read_bytes()).digest()
        assert path.name == "1220" + digest.hex()
        assert path.parent.name == digest.hex()[:2]
    assert embedded.block_path(root) in files
    assert list((embedded.root / "tmp").iterdir()) == []


def test_add__same_content_twice__stores_its_blocks_once(embedded: EmbeddedStore) -> None:
    content = data(3 * CHUNK_SIZE, seed=11)
    first = embedded.put_bytes(content)
    before = all_block_files(embedded)
    assert embedded.put_bytes(content) == first
    assert all_block_files(embedded) == before


def test_get__flipped_byte_in_a_leaf__raises_integrity_error_naming_the_block(
    embedded: EmbeddedStore,
) -> None:
    content = data(2 * CHUNK_SIZE, seed=12)
    root = embedded.put_bytes(content)
    leaf = leaf_cids(embedded, root)[1]
    path = embedded.block_path(leaf)
    damaged = bytearray(path.read_bytes())
    damaged[1000] ^= 0xFF
    path.write_bytes(bytes(damaged))
    with pytest.raises(IntegrityError, match=f"block {leaf} is corrupted") as info:
        embedded.get_bytes(root)
    assert "re-add the original content" in str(info.value)
    assert not path.exists(), "the damaged block is moved aside so a re-add can replace it"
    assert (embedded.root / "corrupt" / path.name).exists()


def test_readd__after_corruption_was_found__repairs_the_content(embedded: EmbeddedStore) -> None:
    content = data(2 * CHUNK_SIZE, seed=13)
    root = embedded.put_bytes(content)
    path = embedded.block_path(leaf_cids(embedded, root)[0])
    path.write_bytes(path.read_bytes()[:-10])  # truncated
    with pytest.raises(IntegrityError, match="corrupted or truncated"):
        embedded.verify(root)
    assert embedded.put_bytes(content) == root
    assert embedded.get_bytes(root) == content
    assert embedded.verify(root).blocks == 3


def test_get__missing_leaf__says_the_content_is_incomplete(embedded: EmbeddedStore) -> None:
    root = embedded.put_bytes(data(2 * CHUNK_SIZE, seed=14))
    leaf = leaf_cids(embedded, root)[1]
    embedded.block_path(leaf).unlink()
    chunks = embedded.get(root)  # the root is fine: the error comes when the leaf is reached
    with pytest.raises(IntegrityError, match=f"block {leaf} of {root} is missing"):
        b"".join(chunks)


def test_verify__damage_in_one_file__does_not_affect_another(embedded: EmbeddedStore) -> None:
    good = embedded.put_bytes(data(CHUNK_SIZE + 1, seed=15))
    bad = embedded.put_bytes(data(CHUNK_SIZE + 1, seed=16))
    embedded.block_path(bad).write_bytes(b"garbage")
    with pytest.raises(IntegrityError):
        embedded.verify(bad)
    assert embedded.verify(good).blocks == 3


def test_gc__pinned_dag_with_a_damaged_inner_node__stops_and_deletes_nothing(
    embedded: EmbeddedStore,
) -> None:
    damaged = embedded.put_bytes(data(2 * CHUNK_SIZE, seed=17))
    unpinned = embedded.put_bytes(b"would normally be collected")
    embedded.unpin(unpinned)
    embedded.block_path(damaged).write_bytes(b"not the root any more")
    before = all_block_files(embedded)
    with pytest.raises(IntegrityError, match="gc stopped, nothing was deleted"):
        embedded.gc()
    assert all_block_files(embedded) == [p for p in before if p.exists()]
    assert embedded.has(unpinned)


def test_gc__removes_leftovers_of_interrupted_writes(embedded: EmbeddedStore) -> None:
    leftover = embedded.root / "tmp" / "deadbeef.123.456.tmp"
    leftover.write_bytes(b"half a block")
    embedded.gc()
    assert not leftover.exists()


def test_pin__content_with_a_missing_block__is_refused(embedded: EmbeddedStore) -> None:
    root = embedded.put_bytes(data(2 * CHUNK_SIZE, seed=18))
    embedded.unpin(root)
    embedded.block_path(leaf_cids(embedded, root)[0]).unlink()
    with pytest.raises(NotFound, match="missing"):
        embedded.pin(root)
    assert root not in embedded.pins()


def test_export__entry_name_escaping_the_directory__is_refused(
    embedded: EmbeddedStore, tmp_path: Path
) -> None:
    blocks = Blockstore(embedded.root)
    file_link = Importer(blocks).add_bytes(b"payload")
    evil = directory_node([(b"../escaped", file_link)], 0, blocks)
    with pytest.raises(IntegrityError, match="unsafe entry name"):
        embedded.export(evil.cid, tmp_path / "out" / "inner")
    assert not (tmp_path / "out" / "escaped").exists()


def test_export__hamt_sharded_directory_made_by_kubo__lists_real_names(
    embedded: EmbeddedStore, tmp_path: Path
) -> None:
    blocks = Blockstore(embedded.root)
    alpha = Importer(blocks).add_bytes(b"alpha")
    beta = Importer(blocks).add_bytes(b"beta")

    def shard(links: list[tuple[bytes, Cid, int]]) -> Cid:
        # UnixFS HAMTShard: Type=5, hashType=murmur3 (0x22), fanout=256; names = 2-hex prefix.
        encoded = [dagpb.encode_link(cid.to_bytes(), name, size) for name, cid, size in links]
        block = dagpb.encode_node(encoded, b"\x08\x05\x28\x22\x30\x80\x02")
        digest = hashlib.sha256(block).digest()
        blocks.put(digest, (block,))
        return Cid(0, "dag-pb", digest)

    inner = shard([(b"00beta.txt", beta.cid, beta.tsize)])
    root = shard([(b"2Aalpha.txt", alpha.cid, alpha.tsize), (b"F1", inner, 100)])
    out = tmp_path / "sharded"
    embedded.export(root, out)
    assert sorted(os.listdir(out)) == ["alpha.txt", "beta.txt"]
    assert (out / "beta.txt").read_bytes() == b"beta"


def test_put_dir__fifo_inside__is_refused_with_the_path(
    embedded: EmbeddedStore, tmp_path: Path
) -> None:
    tree = tmp_path / "tree"
    write(tree / "ok.txt", b"fine")
    os.mkfifo(tree / "pipe")
    with pytest.raises(StoreError, match="named pipe"):
        embedded.put_dir(tree)
    assert embedded.pins() == []


# -- full disk: a real kernel-enforced file-size limit on a child process ----------------------

FULL_DISK_CHILD = textwrap.dedent(
    """
    import resource, sys
    # Python ignores SIGXFSZ, so writes past the limit fail with EFBIG, as on a full disk.
    resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, 200_000))
    from tributa.store.embedded import EmbeddedStore
    from tributa.store.errors import StoreFull
    try:
        EmbeddedStore(sys.argv[1]).put_file(sys.argv[2])
    except StoreFull as exc:
        print(exc)
        sys.exit(3)
    """
)


def run_child(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, cwd=REPO_ROOT, timeout=120
    )


def assert_store_intact(store: EmbeddedStore, cid: Cid, content: bytes) -> None:
    assert list((store.root / "tmp").iterdir()) == [], "the partial block was cleaned up"
    for path in all_block_files(store):
        assert path.name == "1220" + hashlib.sha256(path.read_bytes()).hexdigest()
    assert store.get_bytes(cid) == content
    assert store.pins() == [cid]


def test_add__disk_fills_up__raises_store_full_and_loses_nothing(
    embedded: EmbeddedStore, tmp_path: Path
) -> None:
    earlier = embedded.put_bytes(b"stored before the disk filled up")
    big = write(tmp_path / "big.bin", data(CHUNK_SIZE * 3, seed=19))
    result = run_child("-c", FULL_DISK_CHILD, str(embedded.root), str(big))
    assert result.returncode == 3, result.stderr
    message = result.stdout.strip()
    assert "\n" not in message and message.startswith("disk full while writing")
    assert "blocks already stored are intact" in message
    assert_store_intact(embedded, earlier, b"stored before the disk filled up")


def test_cli_add__disk_fills_up__prints_one_line_and_exits_1(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    store = EmbeddedStore(data_dir / "store")
    earlier = store.put_bytes(b"earlier")
    big = write(tmp_path / "big.bin", data(CHUNK_SIZE * 3, seed=20))
    child = (
        "import resource, runpy, sys\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, 200_000))\n"
        f"sys.argv = ['tributa store', '--data-dir', {str(data_dir)!r}, 'add', {str(big)!r}]\n"
        "runpy.run_module('tributa.store.cli', run_name='__main__')\n"
    )
    result = run_child("-c", child)
    assert result.returncode == 1
    assert result.stderr.startswith("Error: disk full while writing")
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert_store_intact(store, earlier, b"earlier")


# -- memory: adding and reading stream chunk by chunk ------------------------------------------

MEMORY_CHILD = textwrap.dedent(
    """
    import re, sys
    from tributa.store.embedded import EmbeddedStore

    def kib(field):
        return int(re.search(field + r":\\s+(\\d+)", open("/proc/self/status").read()).group(1))

    def restart_peak():
        with open("/proc/self/clear_refs", "w") as refs:
            refs.write("5")  # VmHWM restarts from the current RSS
        return kib("VmRSS")

    store = EmbeddedStore(sys.argv[1])
    base = restart_peak()
    cid = store.put_file(sys.argv[2])
    add_growth = kib("VmHWM") - base
    base = restart_peak()
    total = sum(len(chunk) for chunk in store.get(cid))
    get_growth = kib("VmHWM") - base
    print(total, add_growth // 1024, get_growth // 1024)
    """
)


def test_add_and_get__large_file__stay_within_a_small_memory_bound(
    embedded: EmbeddedStore, tmp_path: Path
) -> None:
    size = 192 << 20
    big = tmp_path / "sparse.bin"
    with open(big, "wb") as handle:  # sparse: cheap to create, still read and hashed in full
        handle.truncate(size)
    result = run_child("-c", MEMORY_CHILD, str(embedded.root), str(big))
    assert result.returncode == 0, result.stderr
    total, add_mib, get_mib = (int(value) for value in result.stdout.split())
    assert total == size
    assert add_mib < 64, f"adding grew RSS by {add_mib} MiB"
    assert get_mib < 64, f"reading grew RSS by {get_mib} MiB"
