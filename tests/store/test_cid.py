"""Cid parsing and printing, and the on-chain digest round trip."""

from __future__ import annotations

import hashlib

import pytest

from tributa.store.cid import Cid, cid_to_digest, digest_to_cid
from tributa.store.errors import CidError

EMPTY_FILE_V0 = "QmbFMke1KXqnYyBBWxB74N4c5SBnJMVAiMNRcGu6x1AwQH"
EMPTY_RAW_V1 = "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"
# `ipfs cid base32` of EMPTY_FILE_V0: same digest, CIDv1 dag-pb.
EMPTY_FILE_V1 = "bafybeif7ztnhq65lumvvtr4ekcwd2ifwgm3awq4zfr3srh462rwyinlb4y"


def test_parse__cidv0__exposes_version_codec_and_digest() -> None:
    cid = Cid.parse(EMPTY_FILE_V0)
    assert (cid.version, cid.codec) == (0, "dag-pb")
    assert cid.digest == hashlib.sha256(bytes.fromhex("0a0408021800")).digest()
    assert str(cid) == EMPTY_FILE_V0


def test_parse__raw_cidv1__is_the_sha256_of_the_raw_bytes() -> None:
    cid = Cid.parse(EMPTY_RAW_V1)
    assert (cid.version, cid.codec) == (1, "raw")
    assert cid.digest == hashlib.sha256(b"").digest()
    assert str(cid) == EMPTY_RAW_V1


def test_encode__v0_as_v1__matches_ipfs_cid_base32() -> None:
    assert Cid.parse(EMPTY_FILE_V0).encode(1) == EMPTY_FILE_V1
    assert Cid.parse(EMPTY_FILE_V1).encode(0) == EMPTY_FILE_V0


@pytest.mark.parametrize("text", [EMPTY_FILE_V0, EMPTY_RAW_V1, EMPTY_FILE_V1])
def test_binary_form__round_trips(text: str) -> None:
    cid = Cid.parse(text)
    assert Cid.from_bytes(cid.to_bytes()) == cid


def test_parse__other_multibases__give_the_same_cid() -> None:
    cid = Cid.parse(EMPTY_FILE_V1)
    base16 = "f" + cid.to_bytes().hex()
    assert Cid.parse(base16) == cid
    assert Cid.parse(EMPTY_FILE_V1.upper()) == cid
    assert Cid.parse(f"/ipfs/{EMPTY_FILE_V0}") == Cid.parse(EMPTY_FILE_V0)


@pytest.mark.parametrize("version,codec", [(0, "dag-pb"), (1, "dag-pb"), (1, "raw")])
def test_digest__round_trips_through_cid_and_text(version: int, codec: str) -> None:
    digest = hashlib.sha256(f"{version}{codec}".encode()).digest()
    cid = digest_to_cid(digest, version=version, codec=codec)  # type: ignore[arg-type]
    assert cid_to_digest(cid) == digest
    assert cid_to_digest(str(cid)) == digest
    assert Cid.parse(str(cid)) == cid
    assert (cid.version, cid.codec) == (version, codec)


def test_digest_to_cid__defaults_to_the_cidv0_ipfs_add_prints() -> None:
    digest = cid_to_digest(EMPTY_FILE_V0)
    assert str(digest_to_cid(digest)) == EMPTY_FILE_V0
    assert str(digest_to_cid("0x" + digest.hex())) == EMPTY_FILE_V0


@pytest.mark.parametrize(
    "text,message",
    [
        ("", "empty"),
        ("hello", "expected a CIDv0"),
        ("Qm" + "0" * 44, "not a base58btc character"),
        (EMPTY_FILE_V0[:-1], "expected a CIDv0"),
        ("bafy!!!", "not valid base32"),
        ("b" + "a" * 10, "supported"),
        # CIDv1 dag-cbor (0x71): a valid CID this store does not handle.
        ("bafyreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku", "codec 0x71"),
        # sha2-512 raw CID from Kubo's tests.
        (
            "bafkrgqbqt3gerhas23vuzrapkdeqf4vu2dwxp3srdj6hvg6nhsug2tgyn6mj3u23yx7utftq3i2ckw2fwdh5qmhid5qf3t35yvkc5e5ottlw6",
            "only sha2-256",
        ),
    ],
)
def test_parse__invalid_text__raises_value_error_saying_why(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message) as info:
        Cid.parse(text)
    assert isinstance(info.value, CidError)
    assert "\n" not in str(info.value)


def test_digest_to_cid__wrong_length__raises_value_error() -> None:
    with pytest.raises(ValueError, match="exactly 32 bytes"):
        digest_to_cid(b"\x00" * 31)


def test_cidv0__cannot_name_a_raw_block() -> None:
    with pytest.raises(CidError, match="raw"):
        digest_to_cid(b"\x00" * 32, version=0, codec="raw")
    with pytest.raises(CidError, match="no CIDv0 form"):
        Cid.parse(EMPTY_RAW_V1).to_v0()
