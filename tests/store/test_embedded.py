"""The embedded store on disk: layout, integrity checks, repair, gc safety, full disks, memory."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tests.store.helpers import (
    MemorySink,
    data,
    flip_byte,
    overwrite_block,
    pack_files,
    pack_records,
    write,
)
from tributa.store import dagpb
from tributa.store.blockstore import BlockLocation, Blockstore
from tributa.store.cid import Cid
from tributa.store.embedded import EmbeddedStore
from tributa.store.errors import ContentIntegrityError, NotFound, StoreError
from tributa.store.importer import Importer
from tributa.store.layout import CHUNK_SIZE, directory_node

REPO_ROOT = Path(__file__).resolve().parents[2]


def leaf_cids(store: EmbeddedStore, root: Cid) -> list[Cid]:
    return [link.cid for link in dagpb.decode_node(store.read(root)).links]


def the_pack(store: EmbeddedStore) -> Path:
    (name,) = pack_files(store)
    return store.root / "packs" / name


def test_add__appends_its_blocks_to_one_pack_indexed_by_digest(embedded: EmbeddedStore) -> None:
    root = embedded.put_bytes(data(2 * CHUNK_SIZE + 1, seed=10))
    pack = the_pack(embedded)
    records = list(pack_records(pack))
    assert len(records) == 4  # three leaves and the root
    for digest, offset, block in records:
        assert hashlib.sha256(block).digest() == digest
        assert embedded.locate(Cid(0, "dag-pb", digest)) == BlockLocation(pack, offset, len(block))
    assert pack.stat().st_size == records[-1][1] + len(records[-1][2]), "nothing else in it"
    assert embedded.locate(root) is not None
    assert not (embedded.root / "blocks").exists() and not (embedded.root / "tmp").exists()


def test_add__same_content_twice__stores_its_blocks_once(embedded: EmbeddedStore) -> None:
    content = data(3 * CHUNK_SIZE, seed=11)
    first = embedded.put_bytes(content)
    before = pack_files(embedded)
    assert embedded.put_bytes(content) == first
    assert pack_files(embedded) == before, "no second pack, not even an empty one"


def test_write_batch__blocks_are_visible_at_once_here_and_elsewhere_once_indexed(
    tmp_path: Path,
) -> None:
    writer = Blockstore(tmp_path / "store")
    reader = Blockstore(tmp_path / "store")  # another instance: sees only the index
    block = b"a block written inside a batch"
    digest = hashlib.sha256(block).digest()
    with writer.writing() as batch:
        batch.put(digest, (block[:5], block[5:]))
        batch.put(digest, (block,))  # the same block again: not written twice
        assert writer.read(Cid(1, "raw", digest)) == block
        assert not reader.has(digest)
    assert reader.read(Cid(1, "raw", digest)) == block
    location = reader.locate(digest)
    assert location is not None
    assert [offset for _, offset, _ in pack_records(location.path)] == [location.offset]


def test_durable_store__adds_reads_and_collects_the_same(tmp_path: Path) -> None:
    store = EmbeddedStore(tmp_path / "store", durable=True)  # fsyncs packs, synchronous index
    content = data(3 * CHUNK_SIZE, seed=31)
    kept = store.put_bytes(content)
    dropped = store.put_bytes(b"dropped")
    store.unpin(dropped)
    assert store.gc().removed_blocks == 1
    assert store.get_bytes(kept) == content
    assert not store.has(dropped)


def test_get__flipped_byte_in_a_leaf__raises_integrity_error_naming_the_block(
    embedded: EmbeddedStore,
) -> None:
    content = data(2 * CHUNK_SIZE, seed=12)
    root = embedded.put_bytes(content)
    leaf = leaf_cids(embedded, root)[1]
    flip_byte(embedded, leaf, 1000)
    with pytest.raises(ContentIntegrityError, match=f"block {leaf} is corrupted") as info:
        embedded.get_bytes(root)
    assert "re-add the original content" in str(info.value)
    assert embedded.locate(leaf) is None, "the damaged block is forgotten so a re-add rewrites it"
    kept = embedded.root / "corrupt" / ("1220" + leaf.digest.hex())
    assert str(kept) in str(info.value)
    assert hashlib.sha256(kept.read_bytes()).digest() != leaf.digest


def test_readd__after_corruption_was_found__repairs_the_content(embedded: EmbeddedStore) -> None:
    content = data(2 * CHUNK_SIZE, seed=13)
    root = embedded.put_bytes(content)
    pack = the_pack(embedded)
    os.truncate(pack, pack.stat().st_size // 2)  # the second leaf and the root are cut off
    with pytest.raises(ContentIntegrityError, match="corrupted or truncated"):
        embedded.verify(root)
    assert embedded.put_bytes(content) == root
    assert embedded.get_bytes(root) == content
    assert embedded.verify(root).blocks == 3


def test_get__pack_file_gone__says_the_block_is_lost_and_readd_repairs(
    embedded: EmbeddedStore,
) -> None:
    content = data(CHUNK_SIZE + 1, seed=21)
    root = embedded.put_bytes(content)
    the_pack(embedded).unlink()
    with pytest.raises(ContentIntegrityError, match=f"block {root} is lost: its pack .* is gone"):
        embedded.get_bytes(root)
    assert embedded.put_bytes(content) == root
    assert embedded.get_bytes(root) == content


def test_get__missing_leaf__says_the_content_is_incomplete(embedded: EmbeddedStore) -> None:
    root = embedded.put_bytes(data(2 * CHUNK_SIZE, seed=14))
    leaf = leaf_cids(embedded, root)[1]
    assert Blockstore(embedded.root).forget(leaf.digest)  # dropped by another instance
    chunks = embedded.get(root)  # the root is fine: the error comes when the leaf is reached
    with pytest.raises(ContentIntegrityError, match=f"block {leaf} of {root} is missing"):
        b"".join(chunks)


def test_verify__damage_in_one_file__does_not_affect_another(embedded: EmbeddedStore) -> None:
    good = embedded.put_bytes(data(CHUNK_SIZE + 1, seed=15))
    bad = embedded.put_bytes(data(CHUNK_SIZE + 1, seed=16))
    overwrite_block(embedded, bad, 0, b"garbage")
    with pytest.raises(ContentIntegrityError):
        embedded.verify(bad)
    assert embedded.verify(good).blocks == 3


def test_gc__pinned_dag_with_a_damaged_inner_node__stops_and_deletes_nothing(
    embedded: EmbeddedStore,
) -> None:
    damaged = embedded.put_bytes(data(2 * CHUNK_SIZE, seed=17))
    unpinned = embedded.put_bytes(b"would normally be collected")
    embedded.unpin(unpinned)
    overwrite_block(embedded, damaged, 0, b"not the root any more")
    before = pack_files(embedded)
    with pytest.raises(ContentIntegrityError, match="gc stopped, nothing was deleted"):
        embedded.gc()
    assert pack_files(embedded) == before
    assert embedded.has(unpinned)


def test_gc__unpinned_blocks_are_compacted_away_and_pinned_ones_stay_identical(
    embedded: EmbeddedStore, tmp_path: Path
) -> None:
    kept_content = data(3 * CHUNK_SIZE, seed=22)
    tree = tmp_path / "tree"
    write(tree / "kept.bin", kept_content)
    write(tree / "dropped.bin", data(2 * CHUNK_SIZE, seed=23))
    folder = embedded.put_dir(tree)  # one add: everything in one pack
    kept = embedded.cid_of(tree / "kept.bin")
    embedded.pin(kept)
    embedded.unpin(folder)
    old_pack = the_pack(embedded)
    stats = embedded.gc()
    assert (stats.removed_blocks, stats.kept_blocks) == (4, 4)  # dropped.bin + folder; kept.bin
    assert stats.removed_bytes > 2 * CHUNK_SIZE
    assert not old_pack.exists()
    new_pack = the_pack(embedded)
    records = list(pack_records(new_pack))
    assert len(records) == 4, "only live blocks were copied"
    assert new_pack.stat().st_size == records[-1][1] + len(records[-1][2])
    assert embedded.get_bytes(kept) == kept_content
    assert embedded.verify(kept).blocks == 4
    assert not embedded.has(folder)


def test_gc__removes_leftovers_of_the_old_layout(embedded: EmbeddedStore) -> None:
    leftover = write(embedded.root / "tmp" / "deadbeef.123.456.tmp", b"half a block")
    embedded.gc()
    assert not leftover.exists()


def test_pin__content_with_a_missing_block__is_refused(embedded: EmbeddedStore) -> None:
    root = embedded.put_bytes(data(2 * CHUNK_SIZE, seed=18))
    embedded.unpin(root)
    assert Blockstore(embedded.root).forget(leaf_cids(embedded, root)[0].digest)
    with pytest.raises(NotFound, match="missing"):
        embedded.pin(root)
    assert root not in embedded.pins()


def test_export__entry_name_escaping_the_directory__is_refused(embedded: EmbeddedStore, tmp_path: Path) -> None:
    blocks = Blockstore(embedded.root)
    file_link = Importer(blocks).add_bytes(b"payload")
    evil = directory_node([(b"../escaped", file_link)], 0, blocks)
    with pytest.raises(ContentIntegrityError, match="unsafe entry name"):
        embedded.export(evil.cid, tmp_path / "out" / "inner")
    assert not (tmp_path / "out" / "escaped").exists()


def test_export__hamt_sharded_directory_made_by_kubo__lists_real_names(embedded: EmbeddedStore, tmp_path: Path) -> None:
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


def test_put_dir__fifo_inside__is_refused_with_the_path(embedded: EmbeddedStore, tmp_path: Path) -> None:
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
    limit = int(sys.argv[3]) if len(sys.argv) > 3 else 200_000
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
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
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=REPO_ROOT, timeout=120)


def assert_store_intact(store: EmbeddedStore, cid: Cid, content: bytes) -> None:
    for name in pack_files(store):
        pack = store.root / "packs" / name
        records = list(pack_records(pack))
        assert records, "a pack none of whose blocks got indexed was removed"
        for digest, offset, block in records:
            assert hashlib.sha256(block).digest() == digest
            assert Blockstore(store.root).locate(digest) == BlockLocation(pack, offset, len(block))
    assert store.get_bytes(cid) == content
    assert store.pins() == [cid]


def test_add__disk_fills_up__raises_store_full_and_loses_nothing(embedded: EmbeddedStore, tmp_path: Path) -> None:
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


def test_add__disk_fills_up_part_way__readd_completes_it_and_gc_reclaims_the_cut_record(
    embedded: EmbeddedStore, tmp_path: Path
) -> None:
    content = data(CHUNK_SIZE * 6, seed=24)
    big = write(tmp_path / "big.bin", content)
    # Room for three whole records: they get indexed; the fourth is cut short.
    result = run_child("-c", FULL_DISK_CHILD, str(embedded.root), str(big), "1000000")
    assert result.returncode == 3, result.stderr
    (cut,) = pack_files(embedded).values()
    assert cut == 1_000_000
    cid = embedded.put_file(big)  # writes only the blocks the failed add did not index
    assert embedded.get_bytes(cid) == content
    stats = embedded.gc()
    assert (stats.removed_blocks, stats.kept_blocks) == (0, 7)
    assert_store_intact(embedded, cid, content)
    assert sum(pack_files(embedded).values()) < 1_000_000 + 4 * (CHUNK_SIZE + 100)


ADD_THEN_DIE_CHILD = textwrap.dedent(
    """
    import os, sys
    from tributa.store.embedded import EmbeddedStore

    def progress(done, total):
        if done >= 3 * 262144:
            os._exit(9)  # killed in the middle of the add: nothing indexed, nothing pinned

    EmbeddedStore(sys.argv[1]).put_file(sys.argv[2], progress)
    """
)


def test_gc__add_killed_midway__its_unindexed_pack_is_removed(embedded: EmbeddedStore, tmp_path: Path) -> None:
    earlier = embedded.put_bytes(b"stored before the crash")
    before = pack_files(embedded)
    big = write(tmp_path / "big.bin", data(CHUNK_SIZE * 8, seed=25))
    assert run_child("-c", ADD_THEN_DIE_CHILD, str(embedded.root), str(big)).returncode == 9
    (crashed,) = set(pack_files(embedded)) - set(before)
    assert list(pack_records(embedded.root / "packs" / crashed)), "blocks were written"
    stats = embedded.gc()
    assert (stats.removed_blocks, stats.kept_blocks) == (0, 1)
    assert pack_files(embedded) == before
    assert_store_intact(embedded, earlier, b"stored before the crash")


# -- two processes adding at once --------------------------------------------------------------

ADD_ON_SIGNAL_CHILD = textwrap.dedent(
    """
    import os, sys, time
    from tributa.store.embedded import EmbeddedStore

    store = EmbeddedStore(sys.argv[1])
    open(sys.argv[3] + ".ready", "w").close()
    while not os.path.exists(sys.argv[4]):  # start together
        time.sleep(0.001)
    print(store.put_file(sys.argv[2]))
    """
)


def test_add__two_processes_at_once__both_land_and_a_running_reader_sees_them(
    embedded: EmbeddedStore, tmp_path: Path
) -> None:
    shared = data(CHUNK_SIZE * 8, seed=26)  # both files start with it: the same leaf blocks
    contents = [shared + data(CHUNK_SIZE * 24, seed=seed) for seed in (27, 28)]
    go = tmp_path / "go"
    children = []
    for number, content in enumerate(contents):
        source = write(tmp_path / f"file{number}.bin", content)
        args = [str(embedded.root), str(source), str(tmp_path / f"child{number}"), str(go)]
        children.append(
            subprocess.Popen(
                [sys.executable, "-c", ADD_ON_SIGNAL_CHILD, *args],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                cwd=REPO_ROOT,
            )
        )
    while not all((tmp_path / f"child{number}.ready").exists() for number in (0, 1)):
        assert all(child.poll() is None for child in children)
        time.sleep(0.01)
    go.touch()
    cids = []
    for child in children:
        out, err = child.communicate(timeout=120)
        assert child.returncode == 0, err
        cids.append(Cid.parse(out.strip()))
    assert len(pack_files(embedded)) == 2, "each add wrote its own pack"
    for cid, content in zip(cids, contents, strict=False):  # `embedded` was opened before they started
        assert embedded.get_bytes(cid) == content
    assert sorted(embedded.pins(), key=str) == sorted(cids, key=str)
    embedded.gc()  # drops the second copy of shared leaves, if both adds wrote them
    for cid, content in zip(cids, contents, strict=False):
        assert embedded.get_bytes(cid) == content


def test_store_used_on_both_sides_of_a_fork__each_side_reads_and_adds(
    embedded: EmbeddedStore,
) -> None:
    content = data(2 * CHUNK_SIZE, seed=32)
    cid = embedded.put_bytes(content)  # the index connection is open before the fork
    child_cid = embedded.cid_of(b"added by the child")
    pid = os.fork()
    if pid == 0:  # the child: its own connection, never the parent's
        ok = embedded.get_bytes(cid) == content
        ok = ok and embedded.put_bytes(b"added by the child") == child_cid
        os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert embedded.get_bytes(child_cid) == b"added by the child"
    assert embedded.verify(cid).blocks == 3


# -- stores made with one file per block -------------------------------------------------------


def old_layout_store(root: Path, content: bytes) -> Cid:
    """A store as the one-file-per-block version left it: blocks/<2 hex>/1220<hex>, a pin,
    a tmp/ leftover and one damaged block file."""
    sink = MemorySink()
    cid = Importer(sink).add_bytes(content).cid
    for digest, block in sink.blocks.items():
        write(root / "blocks" / digest.hex()[:2] / ("1220" + digest.hex()), block)
    (root / "blocks" / "00").mkdir(exist_ok=True)  # it made all 256 shard folders
    write(root / "blocks" / "ff" / ("1220" + "ff" * 32), b"damaged: not what the name says")
    write(root / "pins" / str(cid), b"")
    write(root / "tmp" / "cafe.1.2.tmp", b"half a block")
    return cid


def test_open__old_one_file_per_block_store__moves_its_blocks_into_a_pack(tmp_path: Path) -> None:
    root = tmp_path / "store"
    content = data(3 * CHUNK_SIZE + 5, seed=29)
    cid = old_layout_store(root, content)
    store = EmbeddedStore(root)
    assert not (root / "blocks").exists() and not (root / "tmp").exists()
    assert (root / "corrupt" / ("1220" + "ff" * 32)).exists(), "the damaged file is set aside"
    assert len(list(pack_records(the_pack(store)))) == 5  # four leaves and the root
    assert store.pins() == [cid]
    assert store.get_bytes(cid) == content
    assert store.gc().kept_blocks == 5


def test_open__migration_interrupted_before_old_files_were_deleted__finishes_without_copies(
    tmp_path: Path,
) -> None:
    root = tmp_path / "store"
    content = data(2 * CHUNK_SIZE, seed=30)
    cid = old_layout_store(root, content)
    old_files = {path: path.read_bytes() for path in (root / "blocks").rglob("*") if path.is_file()}
    packed = pack_files(EmbeddedStore(root))
    for path, block in old_files.items():  # as if it crashed after indexing, before deleting
        write(path, block)
    store = EmbeddedStore(root)
    assert pack_files(store) == packed, "blocks already indexed are not written again"
    assert not (root / "blocks").exists()
    assert store.get_bytes(cid) == content


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


def test_add_and_get__large_file__stay_within_a_small_memory_bound(embedded: EmbeddedStore, tmp_path: Path) -> None:
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
