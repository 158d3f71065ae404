"""CARv1 files (tributa/store/car.py) and EmbeddedStore.put_blocks: the network upload path."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from tests.store.helpers import data, write
from tributa.store import dag, open_store
from tributa.store.car import CarError, car_header, iter_car, read_car
from tributa.store.cid import Cid
from tributa.store.errors import ContentIntegrityError, StoreError
from tributa.store.factory import IPFS_API_ENV
from tributa.store.layout import CHUNK_SIZE
from tributa.store.varint import encode_uvarint

EMPTY_DIR = "QmUNLLsPACCz1vLxQVkXqqLX5R1X345qqfHbsf67hvA3Nn"

# A CARv1 written by go-car: the data payload of the CARv2 fixture `goCarV2Bytes` in
# ipld/js-car's test/common.js (root QmfEoLyB…, dag-pb nodes without UnixFS, raw leaves).
GO_CAR_ROOT = "QmfEoLyB5NndqeKieExd1rtJzTduQUPEV8TwAYcUiy3H5Z"
GO_CAR = bytes.fromhex(
    "38a265726f6f747381d82a5823001220fb16f5083412ef1371d031ed4aa239903d84efdadf1ba3cd678e6475"
    "b1a232f86776657273696f6e01511220fb16f5083412ef1371d031ed4aa239903d84efdadf1ba3cd678e6475"
    "b1a232f8122d0a221220d9c0d5376d26f1931f7ad52d7acc00fc1090d2edb0808bf61eeb0a152826f6261204"
    "f09f8da418a40185011220d9c0d5376d26f1931f7ad52d7acc00fc1090d2edb0808bf61eeb0a152826f62612"
    "310a221220d745b7757f5b4593eeab7820306c7bc64eb496a7410a0d07df7a34ffec4b97f112096261727265"
    "6c657965183a122e0a2401551220a2e1c40da1ae335d4dffe729eb4d5ca23b74b9e51fc535f4a804a261080c"
    "294d1204f09f90a11807581220d745b7757f5b4593eeab7820306c7bc64eb496a7410a0d07df7a34ffec4b97"
    "f112340a2401551220b474a99a2705e23cf905a484ec6d14ef58b56bbe62e9292783466ec363b5072d120a66"
    "6973686d6f6e67657218042801551220b474a99a2705e23cf905a484ec6d14ef58b56bbe62e9292783466ec3"
    "63b5072d666973682b01551220a2e1c40da1ae335d4dffe729eb4d5ca23b74b9e51fc535f4a804a261080c29"
    "4d6c6f6273746572"
)


@pytest.fixture(autouse=True)
def _embedded_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(IPFS_API_ENV, raising=False)  # open_store must give the embedded store


@pytest.fixture
def store_a(tmp_path: Path):
    opened = open_store(tmp_path / "a")
    yield opened
    opened.close()


@pytest.fixture
def store_b(tmp_path: Path):
    opened = open_store(tmp_path / "b")
    yield opened
    opened.close()


def car_of(store, root: Cid) -> bytes:
    return b"".join(iter_car(store, root))


def folder(tmp_path: Path) -> Path:
    """A multi-chunk file, a small file and a sub-folder."""
    src = tmp_path / "src"
    write(src / "big.bin", data(3 * CHUNK_SIZE + 17, seed=1))
    write(src / "small.txt", b"hello car\n")
    write(src / "sub" / "note.txt", b"inside\n")
    return src


def section(cid: Cid, block: bytes) -> bytes:
    """A CAR section, built by hand from the CARv1 spec."""
    raw = cid.to_bytes()
    return encode_uvarint(len(raw) + len(block)) + raw + block


def raw_cid(block: bytes) -> Cid:
    return Cid(1, "raw", hashlib.sha256(block).digest())


def header_by_hand(cid_bytes: bytes) -> bytes:
    """{"roots": [cid], "version": 1} in dag-cbor, byte by byte from RFC 8949."""
    payload = b"\x00" + cid_bytes  # tag-42 byte strings start with the identity multibase prefix
    body = (
        bytes([0xA2])  # map of 2 pairs
        + bytes([0x60 | 5])
        + b"roots"  # text string, 5 bytes
        + bytes([0x81])  # array of 1
        + bytes([0xD8, 42])  # tag 42 (one-byte tag number follows 0xd8)
        + bytes([0x58, len(payload)])
        + payload  # byte string, one-byte length follows 0x58
        + bytes([0x60 | 7])
        + b"version"  # text string, 7 bytes
        + bytes([0x01])  # unsigned 1
    )
    return bytes([len(body)]) + body  # the varint length (under 128: one byte)


def small_car() -> tuple[Cid, list[tuple[Cid, bytes]]]:
    blocks = [b"first block", b"second block", b"third block"]
    cids = [raw_cid(block) for block in blocks]
    return cids[0], list(zip(cids, blocks, strict=False))


def car_bytes(root: Cid, blocks: list[tuple[Cid, bytes]]) -> bytes:
    return car_header(root) + b"".join(section(cid, block) for cid, block in blocks)


# -- round trips -------------------------------------------------------------------------------


def test_car__folder_round_trips_into_another_store__same_root_and_files(store_a, store_b, tmp_path: Path) -> None:
    src = folder(tmp_path)
    root = store_a.put_dir(src)
    car = car_of(store_a, root)

    got_root, blocks = read_car(car)
    assert got_root == root
    assert store_b.put_blocks(got_root, blocks) == root

    assert root in store_b.pins()
    store_b.export(root, tmp_path / "out")
    for name in ("big.bin", "small.txt", "sub/note.txt"):
        assert (tmp_path / "out" / name).read_bytes() == (src / name).read_bytes()
    assert store_b.cid_of(tmp_path / "out") == root
    assert car_of(store_b, root) == car, "store B writes the same CAR back"


def test_iter_car__sections_are_each_block_once_depth_first_with_link_cids(store_a, tmp_path: Path) -> None:
    root = store_a.put_dir(folder(tmp_path))
    _, blocks = read_car(car_of(store_a, root))
    in_walk_order = list(dict.fromkeys(node.cid for node in dag.walk(store_a, root)))
    assert [cid for cid, _ in blocks] == in_walk_order
    assert all(cid.version == 0 and cid.codec == "dag-pb" for cid, _ in blocks)


def test_iter_car__repeated_chunks__written_once(store_a, store_b) -> None:
    root = store_a.put_bytes(bytes(4 * CHUNK_SIZE))  # four identical zero leaves
    car = car_of(store_a, root)
    _, blocks = read_car(car)
    assert len(blocks) == 2 and blocks[0][0] == root
    assert len(car) < 2 * CHUNK_SIZE
    store_b.put_blocks(root, blocks)
    assert store_b.get_bytes(root) == bytes(4 * CHUNK_SIZE)


def test_car__raw_leaf_cidv1_dag__round_trips(store_a, store_b) -> None:
    content = data(2 * CHUNK_SIZE + 5, seed=2)
    root = store_a.put_bytes(content, cid_version=1)
    got_root, blocks = read_car(car_of(store_a, root))
    assert got_root == root and root.version == 1 and root.codec == "dag-pb"
    assert {cid.codec for cid, _ in blocks[1:]} == {"raw"} and len(blocks) == 4
    store_b.put_blocks(got_root, blocks)
    assert store_b.get_bytes(root) == content
    assert root in store_b.pins()


def test_car__single_raw_block_root__round_trips(store_a, store_b) -> None:
    root = store_a.put_bytes(b"tiny", cid_version=1)
    assert root.codec == "raw"
    store_b.put_blocks(*read_car(car_of(store_a, root)))
    assert store_b.get_bytes(root) == b"tiny"


# -- the header --------------------------------------------------------------------------------


def test_car_header__cidv0_root__the_exact_dag_cbor_bytes() -> None:
    root = Cid(0, "dag-pb", hashlib.sha256(b"a root").digest())
    expected = header_by_hand(bytes([0x12, 0x20]) + root.digest)
    assert car_header(root) == expected
    assert len(expected) == 1 + 0x38 and expected[0] == 0x38


def test_car_header__cidv1_root__the_exact_dag_cbor_bytes() -> None:
    root = Cid(1, "dag-pb", hashlib.sha256(b"a root").digest())
    expected = header_by_hand(bytes([0x01, 0x70, 0x12, 0x20]) + root.digest)
    assert car_header(root) == expected
    assert expected[0] == 0x3A and expected[11:13] == bytes([0x58, 0x25])


def test_car_header__empty_directory__as_go_car_writes_it(store_a, tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    root = store_a.put_dir(tmp_path / "empty")
    assert str(root) == EMPTY_DIR
    header = car_header(root)
    # go-car: 0x38 (56 header bytes follow; a CIDv1 root would make it 0x3a), map(2) "roots"
    # [tag 42 bytes(35) 0x00 + sha2-256 multihash] "version" 1
    start = bytes([0x38, 0xA2, 0x65]) + b"roots" + bytes([0x81, 0xD8, 0x2A, 0x58, 0x23])
    start += bytes([0x00, 0x12, 0x20])
    assert header.startswith(start)
    assert header[len(start) : len(start) + 32] == root.digest
    assert header[len(start) + 32 :] == bytes([0x67]) + b"version" + bytes([0x01])
    assert read_car(car_of(store_a, root))[0] == root


def test_read_car__a_car_go_car_wrote__parsed_and_rewritten_byte_for_byte(store_b) -> None:
    root, blocks = read_car(GO_CAR)
    assert str(root) == GO_CAR_ROOT
    assert [str(cid) for cid, _ in blocks] == [
        GO_CAR_ROOT,
        "QmczfirA7VEH7YVvKPTPoU69XM3qY4DC39nnTsWd4K3SkM",
        "Qmcpz2FHJD7VAhg1fxFXdYJKePtkx1BsHuCrAgWVnaHMTE",
        "bafkreifuosuzujyf4i6psbneqtwg2fhplc2wxptc5euspa2gn3bwhnihfu",
        "bafkreifc4hca3inognou377hfhvu2xfchn2ltzi7yu27jkaeujqqqdbjju",
    ]
    assert blocks[3][1] == b"fish" and blocks[4][1] == b"lobster"
    assert GO_CAR.startswith(car_header(root))

    class Blocks:  # the fixture's nodes carry no UnixFS data, so they are not a store's content
        def read(self, cid: Cid) -> bytes:
            return dict(blocks)[cid]

    assert b"".join(iter_car(Blocks(), root)) == GO_CAR


# -- refusals ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "cut", [0, 1, 20, -1, -5], ids=["empty", "header-length", "in-header", "last-byte", "in-block"]
)
def test_read_car__cut_short__refused_as_truncated(cut: int) -> None:
    car = car_bytes(*small_car())
    with pytest.raises(CarError, match="truncated|cut short|ends inside"):
        read_car(car[:cut])


def test_read_car__a_section_length_varint_cut_short__refused() -> None:
    root, _ = small_car()
    shown = r"length of section 1 at byte \d+ is not a valid varint \(truncated varint\)"
    with pytest.raises(CarError, match=shown):
        read_car(car_header(root) + b"\x80")


def test_read_car__an_empty_section__refused() -> None:
    root, blocks = small_car()
    with pytest.raises(CarError, match="section 2 ends inside its CID"):
        read_car(car_bytes(root, blocks[:1]) + b"\x00")


def header_with(body: bytes) -> bytes:
    return encode_uvarint(len(body)) + body


def tagged(cid: Cid) -> bytes:
    payload = b"\x00" + cid.to_bytes()
    return bytes([0xD8, 0x2A, 0x58, len(payload)]) + payload


@pytest.mark.parametrize(
    "body",
    [
        b"\xa2\x65roots\x82" + tagged(raw_cid(b"a")) + tagged(raw_cid(b"b")) + b"\x67version\x01",
        b"\xa2\x65roots\x80\x67version\x01",
        b"\xa2\x65roots\x81" + tagged(raw_cid(b"a")) + b"\x67version\x02",
        b"\xa1\x67version\x02",  # the CARv2 pragma
        b"\xa2\x67version\x01\x65roots\x81" + tagged(raw_cid(b"a")),  # keys not in dag-cbor order
        b"\xa3\x65roots\x81" + tagged(raw_cid(b"a")) + b"\x67version\x01\x61x\x01",
    ],
    ids=["two-roots", "no-roots", "version-2", "carv2", "unsorted-keys", "extra-key"],
)
def test_read_car__a_header_other_than_one_root_version_1__refused(body: bytes) -> None:
    with pytest.raises(CarError, match="only single-root CARv1 is accepted"):
        read_car(header_with(body) + section(*small_car()[1][0]))


def test_read_car__a_carv2_file__refused() -> None:
    with pytest.raises(CarError, match="only single-root CARv1 is accepted"):
        read_car(bytes.fromhex("0aa16776657273696f6e02") + bytes(40) + GO_CAR)


def test_read_car__a_dag_cbor_root__refused_as_unsupported_cid() -> None:
    body = b"\xa2\x65roots\x81\xd8\x2a\x58\x25\x00\x01\x71\x12\x20" + bytes(32) + b"\x67version\x01"
    with pytest.raises(CarError, match="root is not a CID this store holds.*0x71"):
        read_car(header_with(body))


@pytest.mark.parametrize(
    "cid_bytes",
    [
        b"\x01\x71\x12\x20" + bytes(32),  # dag-cbor
        b"\x01\x55\x13\x40" + bytes(64),  # sha2-512
        b"\x02\x55\x12\x20" + bytes(32),  # CID version 2
    ],
    ids=["dag-cbor", "sha2-512", "version-2"],
)
def test_read_car__a_section_with_an_unsupported_cid__refused(cid_bytes: bytes) -> None:
    root, blocks = small_car()
    bad = encode_uvarint(len(cid_bytes) + 3) + cid_bytes + b"abc"
    with pytest.raises(CarError, match="section 2 of the CAR names an unsupported CID"):
        read_car(car_bytes(root, blocks[:1]) + bad)


def test_read_car__a_block_over_the_size_limit__refused_naming_its_cid() -> None:
    root, blocks = small_car()
    big = bytes(1001)
    car = car_bytes(root, [*blocks, (raw_cid(big), big)])
    assert len(read_car(car, max_block_bytes=1001)[1]) == 4
    shown = f"block {raw_cid(big)} in the CAR is 1001 bytes, over the limit of 1000"
    with pytest.raises(CarError, match=shown):
        read_car(car, max_block_bytes=1000)


def test_read_car__more_blocks_than_allowed__refused() -> None:
    car = car_bytes(*small_car())
    assert len(read_car(car, max_blocks=3)[1]) == 3
    with pytest.raises(CarError, match="more than 2 blocks"):
        read_car(car, max_blocks=2)


def test_read_car__a_block_altered__refused_naming_its_cid() -> None:
    root, blocks = small_car()
    car = bytearray(car_bytes(root, blocks))
    car[-1] ^= 0x01  # the last byte of the third block
    with pytest.raises(CarError, match=f"block {blocks[2][0]} in the CAR does not hash to its CID"):
        read_car(bytes(car))


def test_read_car__a_duplicated_section__returned_once() -> None:
    root, blocks = small_car()
    got_root, got = read_car(memoryview(car_bytes(root, [*blocks, blocks[1], blocks[0]])))
    assert got_root == root and got == blocks


def test_car_error__is_a_store_error_and_a_value_error() -> None:
    assert issubclass(CarError, StoreError) and issubclass(CarError, ValueError)


# -- put_blocks --------------------------------------------------------------------------------


def test_put_blocks__an_inner_block_missing__refuses_to_pin_naming_it(store_a, store_b, tmp_path: Path) -> None:
    root = store_a.put_dir(folder(tmp_path))
    _, blocks = read_car(car_of(store_a, root))
    missing, _ = blocks[2]
    with pytest.raises(ContentIntegrityError, match=f"{root} is incomplete: block {missing} under"):
        store_b.put_blocks(root, [item for item in blocks if item[0] != missing])
    assert root not in store_b.pins()
    assert store_b.has(blocks[1][0]), "the blocks that came stay until gc"
    store_b.gc()
    assert not store_b.has(blocks[1][0])


def test_put_blocks__the_root_missing__refuses_to_pin(store_b) -> None:
    root, blocks = small_car()
    with pytest.raises(ContentIntegrityError, match=f"{root} is incomplete: block {root} under"):
        store_b.put_blocks(root, blocks[1:])
    assert store_b.pins() == []


def test_put_blocks__completed_by_blocks_already_stored__pins(store_a, store_b, tmp_path: Path) -> None:
    root = store_a.put_dir(folder(tmp_path))
    _, blocks = read_car(car_of(store_a, root))
    store_b.put_bytes(data(3 * CHUNK_SIZE + 17, seed=1))  # big.bin's blocks, under its own pin
    have = [item for item in blocks if not store_b.has(item[0])]
    assert len(have) < len(blocks)
    store_b.put_blocks(root, have)
    assert root in store_b.pins() and store_b.verify(root).blocks == len(blocks)


def test_put_blocks__a_block_not_matching_its_cid__refused_and_nothing_written(store_b) -> None:
    root, blocks = small_car()
    forged = [*blocks[:2], (blocks[2][0], b"something else")]
    with pytest.raises(ContentIntegrityError, match=f"block {blocks[2][0]} does not hash to its CID"):
        store_b.put_blocks(root, forged)
    assert not any(store_b.has(cid) for cid, _ in blocks)
    assert store_b.pins() == []
