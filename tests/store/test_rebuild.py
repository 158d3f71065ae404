"""Rebuilding the embedded store's index from its packs: a lost, emptied or damaged index.sqlite
never loses stored content."""

from __future__ import annotations

import logging
import os
import sqlite3
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import pytest
from click.testing import CliRunner

from tests.store.helpers import data, flip_byte, pack_files, write
from tributa.store import dagpb
from tributa.store.cid import Cid
from tributa.store.cli import store as store_cli
from tributa.store.embedded import EmbeddedStore
from tributa.store.errors import ContentIntegrityError, DamagedIndex
from tributa.store.layout import CHUNK_SIZE
from tributa.store.packformat import RECORD_HEADER


@pytest.fixture
def rebuild_log(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    """The blockstore's warnings, whatever the `tributa` logger was set up to do."""
    logger = logging.getLogger("tributa.store.blockstore")
    logger.addHandler(caplog.handler)
    yield caplog
    logger.removeHandler(caplog.handler)


def filled_store(root: Path, tmp_path: Path) -> tuple[EmbeddedStore, dict[Cid, bytes], Cid]:
    """A store with two files (one of several chunks) and a directory, all pinned."""
    store = EmbeddedStore(root)
    contents = {data(3 * CHUNK_SIZE + 7, seed=40): None, b"a small file": None}
    cids = {store.put_bytes(content): content for content in contents}
    tree = tmp_path / "tree"
    write(tree / "a.bin", data(CHUNK_SIZE + 1, seed=41))
    write(tree / "sub" / "b.txt", b"bee")
    folder = store.put_dir(tree)
    return store, cids, folder


def index_rows(root: Path) -> list[tuple[bytes, str, int, int]]:
    with closing(sqlite3.connect(root / "index.sqlite")) as conn:
        return conn.execute("SELECT * FROM blocks ORDER BY digest").fetchall()


def assert_all_there(store: EmbeddedStore, cids: dict[Cid, bytes], folder: Cid, out: Path) -> None:
    for cid, content in cids.items():
        assert store.get_bytes(cid) == content
        assert store.verify(cid).bytes >= len(content)
    store.export(folder, out)
    assert (out / "sub" / "b.txt").read_bytes() == b"bee"
    assert (out / "a.bin").read_bytes() == data(CHUNK_SIZE + 1, seed=41)


def lose_index(root: Path, how: str) -> None:
    index = root / "index.sqlite"
    if how == "deleted":  # its WAL is left beside it: it must not be replayed into the new one
        assert Path(f"{index}-wal").exists()
        index.unlink()
    elif how == "garbage":
        index.write_bytes(data(20000, seed=42))
    else:  # emptied, e.g. a copy that failed part way
        for sidecar in ("-wal", "-shm"):
            Path(f"{index}{sidecar}").unlink(missing_ok=True)
        os.truncate(index, 0)


@pytest.mark.parametrize("how", ["deleted", "garbage", "emptied"])
def test_open__index_lost_or_damaged__is_rebuilt_and_all_content_reads_back(
    tmp_path: Path, how: str, rebuild_log: pytest.LogCaptureFixture
) -> None:
    root = tmp_path / "store"
    store, cids, folder = filled_store(root, tmp_path)
    pins = store.pins()
    rows = index_rows(root)
    if how != "deleted":
        store.close()  # else its connection's WAL, holding every page, would keep answering
    lose_index(root, how)

    reopened = EmbeddedStore(root)
    assert_all_there(reopened, cids, folder, tmp_path / "out")
    assert reopened.pins() == pins
    assert index_rows(root) == rows, "the same blocks, found in the same places"
    assert reopened.gc().removed_blocks == 0, "every pinned block is reachable"
    warnings = [record.getMessage() for record in rebuild_log.records]
    assert any("rebuilding it from the packs" in line for line in warnings)
    assert any(f"rebuilt the index from 3 packs: {len(rows)} blocks" in line for line in warnings)
    if how == "deleted":  # the store open all along now uses the new index
        assert store.get_bytes(next(iter(cids))) == next(iter(cids.values()))
        later = store.put_bytes(b"added after the rebuild")
        assert EmbeddedStore(root).get_bytes(later) == b"added after the rebuild"
    kept = sorted(root.glob("index.sqlite.corrupt-*"))
    if how == "garbage":
        assert [path.read_bytes() for path in kept] == [data(20000, seed=42)]
        assert "is damaged (file is not a database)" in "\n".join(warnings)
    else:
        assert kept == []


def test_open__healthy_index__is_not_rebuilt(tmp_path: Path, rebuild_log: pytest.LogCaptureFixture) -> None:
    root = tmp_path / "store"
    EmbeddedStore(root).put_bytes(b"content")
    before = (root / "index.sqlite").stat().st_ino
    EmbeddedStore(root).close()
    assert (root / "index.sqlite").stat().st_ino == before
    assert not rebuild_log.records


def test_rebuild__damaged_record_and_torn_tail__indexes_the_rest_and_readd_repairs(
    embedded: EmbeddedStore,
) -> None:
    content = data(3 * CHUNK_SIZE, seed=43)
    root = embedded.put_bytes(content)
    (pack_name,) = pack_files(embedded)
    pack = embedded.root / "packs" / pack_name
    leaves = [link.cid for link in dagpb.decode_node(embedded.read(root)).links]
    damaged_at = embedded.locate(leaves[1]).offset - RECORD_HEADER.size
    flip_byte(embedded, leaves[1], 5)
    torn_at = pack.stat().st_size
    with open(pack, "ab") as tail:  # a block the disk filled up in the middle of
        tail.write(RECORD_HEADER.pack(b"\x07" * 32, CHUNK_SIZE) + b"x" * 1000)
    write(embedded.root / "packs" / "stray.pack", b"not a pack at all")

    report = embedded.rebuild_index()

    assert (report.packs, report.blocks) == (2, 3), "leaves 0 and 2 and the root after them"
    assert (report.damaged, report.torn, report.unreadable) == (1, 1, 1)
    assert report.problems == (
        f"pack {pack}: record at byte {damaged_at} does not hash to its digest",
        f"pack {pack}: record at byte {torn_at} is cut short",
        f"pack {embedded.root / 'packs' / 'stray.pack'}: it does not start with the pack magic",
    )
    assert report.summary() == (
        "rebuilt the index from 2 packs: 3 blocks, 1 damaged record skipped, "
        "1 pack cut short at the end, 1 unreadable file"
    )
    assert not embedded.has(leaves[1]) and embedded.has(leaves[2]) and embedded.has(root)
    with pytest.raises(ContentIntegrityError, match=f"block {leaves[1]} of {root} is missing"):
        embedded.get_bytes(root)
    assert embedded.put_bytes(content) == root  # writes the missing leaf again
    assert embedded.get_bytes(root) == content
    assert embedded.verify(root).blocks == 4


def test_rebuild__hole_left_by_a_killed_add__ends_that_pack_as_cut_short(
    embedded: EmbeddedStore,
) -> None:
    root = embedded.put_bytes(b"kept")
    (pack_name,) = pack_files(embedded)
    pack = embedded.root / "packs" / pack_name
    hole_at = pack.stat().st_size
    os.truncate(pack, hole_at + CHUNK_SIZE)  # a thread's record never written...
    with open(pack, "ab") as tail:  # ...while a later one was
        tail.write(RECORD_HEADER.pack(b"\x07" * 32, 3) + b"abc")
    report = embedded.rebuild_index()
    assert (report.blocks, report.damaged, report.torn) == (1, 0, 1)
    assert report.problems == (f"pack {pack}: record at byte {hole_at} is cut short",)
    assert embedded.get_bytes(root) == b"kept"


def test_rebuild__twice__gives_the_same_index_and_report(embedded: EmbeddedStore, tmp_path: Path) -> None:
    _, cids, _ = filled_store(embedded.root, tmp_path)
    flip_byte(embedded, next(iter(cids)), 10)  # the big file's root: one damaged record
    seen: list[tuple[int, int]] = []
    first = embedded.rebuild_index(lambda done, total: seen.append((done, total)))
    rows = index_rows(embedded.root)
    second = embedded.rebuild_index()
    assert second == first and first.damaged == 1
    assert index_rows(embedded.root) == rows
    total = sum(pack_files(embedded).values())
    assert seen[-1] == (total, total)
    assert [done for done, _ in seen] == sorted(done for done, _ in seen)


def test_rebuild__other_open_instances_switch_to_the_new_index(tmp_path: Path) -> None:
    root = tmp_path / "store"
    repairer = EmbeddedStore(root)
    old = repairer.put_bytes(b"added before the rebuild")
    other = EmbeddedStore(root)  # its index connection is open on the old file
    assert other.has(old)
    repairer.rebuild_index()
    new = other.put_bytes(b"added after the rebuild")  # must land in the new file
    assert EmbeddedStore(root).get_bytes(new) == b"added after the rebuild"
    assert other.get_bytes(old) == b"added before the rebuild"


def test_damaged_index__not_rebuilt_on_open__says_to_run_repair(tmp_path: Path) -> None:
    root = tmp_path / "store"
    first = EmbeddedStore(root)
    cid = first.put_bytes(b"content")
    first.close()  # else its WAL, which holds every page, keeps answering
    (root / "index.sqlite").write_bytes(b"garbage" * 1000)
    store = EmbeddedStore(root, check_index=False)
    with pytest.raises(DamagedIndex, match=r"damaged .*run `tributa store repair`"):
        store.has(cid)
    assert store.rebuild_index().blocks == 1
    assert store.get_bytes(cid) == b"content"


# -- `tributa store repair` ---------------------------------------------------------------------


def repair(data_dir: Path, *args: str) -> tuple[int, str, str]:
    result = CliRunner(mix_stderr=False).invoke(
        store_cli, ["--data-dir", str(data_dir), *args, "repair"], catch_exceptions=False
    )
    return result.exit_code, result.stdout, result.stderr


def test_cli_repair__lost_index__rebuilds_it_once_and_reports_one_line(
    tmp_path: Path, rebuild_log: pytest.LogCaptureFixture
) -> None:
    root = tmp_path / "data" / "store"
    store, cids, _ = filled_store(root, tmp_path)
    blocks = len(index_rows(root))
    store.close()
    (root / "index.sqlite").unlink()
    code, out, err = repair(tmp_path / "data")
    assert code == 0, err
    assert out == f"rebuilt the index from 3 packs: {blocks} blocks\n"
    assert err == "" and not rebuild_log.records, "no progress for a small store, no second scan"
    reopened = EmbeddedStore(root)
    assert all(reopened.get_bytes(cid) == content for cid, content in cids.items())


def test_cli_repair__damaged_record__names_it_on_a_second_line(tmp_path: Path) -> None:
    root = tmp_path / "data" / "store"
    store = EmbeddedStore(root)
    cid = store.put_bytes(data(CHUNK_SIZE, seed=44))  # one block: the file is its own leaf
    flip_byte(store, cid, 0)
    code, out, _ = repair(tmp_path / "data")
    assert code == 0
    first, second = out.splitlines()
    assert first == "rebuilt the index from 1 pack: 0 blocks, 1 damaged record skipped"
    assert second.startswith("not indexed: pack ") and "does not hash to its digest" in second
    assert second.endswith("is repaired by adding it again")


def test_cli_repair__large_store__shows_progress_on_stderr(tmp_path: Path) -> None:
    store = EmbeddedStore(tmp_path / "data" / "store")
    store.put_bytes(data(9 << 20, seed=45))
    code, out, err = repair(tmp_path / "data")
    assert code == 0
    assert out.startswith("rebuilt the index from 1 pack: ")
    assert "scanning packs: 100%" in err and err.endswith("\n")


def test_cli_repair__kubo_backend__is_a_one_line_error(tmp_path: Path) -> None:
    code, out, err = repair(tmp_path / "data", "--ipfs-api", "/ip4/127.0.0.1/tcp/1")
    assert code == 1 and out == ""
    assert err.startswith("Error: repair rebuilds the embedded store's index")
    assert err.count("\n") == 1
