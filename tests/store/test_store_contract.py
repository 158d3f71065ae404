"""The Store contract, run against every backend (embedded always; Kubo when a daemon is up)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.store.helpers import data, write
from tributa.store.base import Store
from tributa.store.cid import Cid, digest_to_cid
from tributa.store.errors import CidError, NotFound, StoreError
from tributa.store.layout import CHUNK_SIZE

# A CID no test ever adds (the sha256 of a phrase, as a dag-pb CIDv0).
UNKNOWN = digest_to_cid(bytes.fromhex("5f" * 32))


def test_put_bytes__get_bytes__round_trips_and_is_pinned(store: Store) -> None:
    content = data(3 * CHUNK_SIZE + 17, seed=1)
    cid = store.put_bytes(content)
    assert store.get_bytes(cid) == content
    assert store.get_bytes(str(cid)) == content
    assert store.has(cid)
    assert cid in store.pins()
    assert cid == store.cid_of(content)


def test_get__streams_a_large_file_in_chunk_sized_pieces(store: Store) -> None:
    content = data(5 * CHUNK_SIZE + 3, seed=2)
    cid = store.put_bytes(content)
    pieces = list(store.get(cid))
    assert len(pieces) > 1
    assert max(len(piece) for piece in pieces) <= 4 * CHUNK_SIZE
    assert b"".join(pieces) == content


def test_put_file__reports_progress_up_to_the_file_size(store: Store, tmp_path: Path) -> None:
    content = data(4 * CHUNK_SIZE + 5, seed=3)
    path = write(tmp_path / "model.bin", content)
    seen: list[tuple[int, int]] = []
    cid = store.put_file(path, lambda done, total: seen.append((done, total)))
    assert seen and seen[-1] == (len(content), len(content))
    assert [done for done, _ in seen] == sorted(done for done, _ in seen)
    assert store.get_bytes(cid) == content
    assert cid == store.cid_of(path)


def test_put_file__empty_file__is_kubos_empty_file_cid(store: Store, tmp_path: Path) -> None:
    cid = store.put_file(write(tmp_path / "empty", b""))
    assert str(cid) == "QmbFMke1KXqnYyBBWxB74N4c5SBnJMVAiMNRcGu6x1AwQH"
    assert store.get_bytes(cid) == b""


def test_put_dir__exports_the_same_tree(store: Store, tmp_path: Path) -> None:
    tree = tmp_path / "dataset"
    write(tree / "train.jsonl", data(2 * CHUNK_SIZE + 1, seed=4))
    write(tree / "meta" / "card.md", b"# card\n")
    write(tree / ".attributes", b"hidden but kept")
    (tree / "empty").mkdir()
    os.symlink("train.jsonl", tree / "latest")
    cid = store.put_dir(tree)
    assert cid == store.cid_of(tree)
    out = tmp_path / "exported"
    store.export(cid, out)
    assert (out / "train.jsonl").read_bytes() == (tree / "train.jsonl").read_bytes()
    assert (out / "meta" / "card.md").read_bytes() == b"# card\n"
    assert (out / ".attributes").exists() and (out / "empty").is_dir()
    assert os.readlink(out / "latest") == "train.jsonl"
    assert store.cid_of(out) == cid


def test_cid_version_1__round_trips_with_raw_leaves(store: Store) -> None:
    content = data(2 * CHUNK_SIZE + 9, seed=5)
    cid = store.put_bytes(content, cid_version=1)
    assert (cid.version, cid.codec) == (1, "dag-pb")
    assert str(cid).startswith("bafybei")
    assert store.get_bytes(cid) == content
    small = store.put_bytes(b"tiny", cid_version=1)
    assert small.codec == "raw" and store.get_bytes(small) == b"tiny"


def test_verify__counts_every_block(store: Store) -> None:
    cid = store.put_bytes(data(3 * CHUNK_SIZE, seed=6))
    report = store.verify(cid)
    assert report.cid == cid
    assert report.blocks == 4  # three leaves and the root
    assert report.bytes > 3 * CHUNK_SIZE


def test_unpin_then_gc__removes_the_content_but_keeps_other_pins(store: Store) -> None:
    keep = store.put_bytes(data(CHUNK_SIZE + 1, seed=7))
    drop = store.put_bytes(data(CHUNK_SIZE + 1, seed=8))
    store.unpin(drop)
    assert drop not in store.pins()
    stats = store.gc()
    assert stats.removed_blocks >= 3
    assert not store.has(drop)
    assert store.get_bytes(keep) == data(CHUNK_SIZE + 1, seed=7)
    with pytest.raises(NotFound):
        store.get_bytes(drop)


def test_gc__keeps_blocks_shared_with_a_pinned_file(store: Store) -> None:
    shared = data(CHUNK_SIZE, seed=9)
    kept = store.put_bytes(shared + b"tail one")
    dropped = store.put_bytes(shared + b"tail two")
    store.unpin(dropped)
    store.gc()
    assert store.get_bytes(kept) == shared + b"tail one"


def test_pin__after_unpin__protects_content_again(store: Store) -> None:
    cid = store.put_bytes(b"pin me")
    store.unpin(cid)
    store.pin(cid)
    store.gc()
    assert store.get_bytes(cid) == b"pin me"


def test_cid_of__stores_nothing(store: Store) -> None:
    content = b"only hashed " + os.urandom(16)
    cid = store.cid_of(content)
    assert not store.has(cid)
    assert cid == store.put_bytes(content)


# -- bad input: a clear one-line error, nothing stored is lost ----------------------------------


def test_get__unknown_cid__raises_not_found_at_once(store: Store) -> None:
    kept = store.put_bytes(b"still here")
    with pytest.raises(NotFound) as info:
        store.get(UNKNOWN)
    assert "\n" not in str(info.value)
    assert not store.has(UNKNOWN)
    assert store.get_bytes(kept) == b"still here"


@pytest.mark.parametrize("bad", ["not-a-cid", "Qm123", "bafy!!"])
def test_every_cid_argument__invalid_text__raises_cid_error(store: Store, bad: str) -> None:
    for call in (store.get, store.get_bytes, store.has, store.pin, store.unpin, store.verify):
        with pytest.raises(CidError):
            call(bad)


def test_put_file__missing_path__raises_not_found(store: Store, tmp_path: Path) -> None:
    with pytest.raises(NotFound, match="no such file or directory"):
        store.put_file(tmp_path / "nope.bin")
    with pytest.raises(NotFound, match="no such file or directory"):
        store.put_dir(tmp_path / "nope")
    with pytest.raises(NotFound):
        store.cid_of(tmp_path / "nope")


def test_put_file_and_put_dir__wrong_kind_of_path__say_which_call_to_use(store: Store, tmp_path: Path) -> None:
    folder = tmp_path / "folder"
    folder.mkdir()
    file = write(tmp_path / "file", b"x")
    with pytest.raises(StoreError, match="put_dir"):
        store.put_file(folder)
    with pytest.raises(StoreError, match="put_file"):
        store.put_dir(file)


def test_get__directory_cid__says_to_export_it(store: Store, tmp_path: Path) -> None:
    write(tmp_path / "d" / "f", b"x")
    cid = store.put_dir(tmp_path / "d")
    with pytest.raises(StoreError, match="is a directory"):
        store.get(cid)


def test_export__onto_an_existing_path__is_refused_and_the_path_untouched(store: Store, tmp_path: Path) -> None:
    cid = store.put_bytes(b"content")
    existing = write(tmp_path / "existing", b"precious")
    with pytest.raises(StoreError, match="already exists"):
        store.export(cid, existing)
    assert existing.read_bytes() == b"precious"


def test_unpin__content_that_is_not_pinned__raises_not_found(store: Store) -> None:
    cid = store.put_bytes(b"once")
    store.unpin(cid)
    with pytest.raises(NotFound, match="not pinned"):
        store.unpin(cid)
    assert store.get_bytes(cid) == b"once"


def test_add__unsupported_cid_version__is_refused(store: Store) -> None:
    with pytest.raises(StoreError, match="use 0 or 1"):
        store.put_bytes(b"x", cid_version=2)


def test_put_bytes__not_bytes__is_refused(store: Store) -> None:
    with pytest.raises(StoreError, match="takes bytes"):
        store.put_bytes("text")  # type: ignore[arg-type]


def test_cid_objects_and_text__are_interchangeable(store: Store) -> None:
    cid = store.put_bytes(b"either form")
    assert isinstance(cid, Cid)
    assert store.has(str(cid)) and store.has(Cid.parse(str(cid)))
