"""Private-task encryption: envelopes, re-encryption oracle -> agent, contexts, keys and failures."""

from __future__ import annotations

import hashlib
import json

import coincurve
import pytest
from Crypto.Cipher import AES
from Crypto.Hash import SHA256
from Crypto.Protocol.KDF import HKDF
from eth_account import Account
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tributa import crypto
from tributa.crypto import (
    MAX_ENVELOPE_BYTES,
    OVERHEAD_BYTES,
    CryptoError,
    EnvelopeTooLargeError,
    InvalidContextError,
    InvalidPrivateKeyError,
    InvalidPublicKeyError,
    MalformedEnvelopeError,
    PublicKeyOwnerError,
    TamperedEnvelopeError,
    WrongContextError,
    WrongKeyError,
    address_of_public_key,
    check_public_key_owner,
    context_for,
    decrypt_with,
    encrypt_to,
    is_encrypted,
    public_key_of,
    reencrypt,
)
from tributa.errors import TributaError
from tributa.tasks import encode_input

MNEMONIC = "test test test test test test test test test test test junk"
CHAIN_ID = 31337
ESCROW = "0x5FbDB2315678afecb367f032d93F642f64180aa3"
REQUESTER = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"
OTHER_REQUESTER = "0x90F79bf6EB2c4f870365E785982E1f101E93b906"
PAYLOAD = encode_input(prompt="the secret prompt", max_new_tokens=8)
SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _dev_account(index: int):
    Account.enable_unaudited_hdwallet_features()
    return Account.from_mnemonic(MNEMONIC, account_path=f"m/44'/60'/0'/0/{index}")


ORACLE = _dev_account(0)
AGENT = _dev_account(2)
OTHER_AGENT = _dev_account(3)
INPUT_CONTEXT = context_for("input", CHAIN_ID, ESCROW, REQUESTER)
JOB_CONTEXT = context_for("job-input", CHAIN_ID, ESCROW, REQUESTER, task_id=7)


def _pub(account) -> bytes:
    return public_key_of(bytes(account.key))


def _sealed_input() -> bytes:
    return encrypt_to(_pub(ORACLE), PAYLOAD, INPUT_CONTEXT)


def _flip(data: bytes, index: int, mask: int = 0x01) -> bytes:
    return data[:index] + bytes([data[index] ^ mask]) + data[index + 1 :]


# --- round trips -------------------------------------------------------------------------------


def test_decrypt__envelope_from_encrypt_to__returns_the_plaintext():
    envelope = _sealed_input()

    assert decrypt_with(bytes(ORACLE.key), envelope, INPUT_CONTEXT) == PAYLOAD
    assert len(envelope) == len(PAYLOAD) + OVERHEAD_BYTES
    assert PAYLOAD not in envelope and b"secret" not in envelope


def test_encrypt_to__same_plaintext_twice__gives_unrelated_envelopes():
    first, second = _sealed_input(), _sealed_input()

    assert first != second
    assert first[crypto.HEADER_BYTES :] != second[crypto.HEADER_BYTES :]


@SETTINGS
@given(payload=st.binary(max_size=4096), context=st.binary(min_size=1, max_size=64))
def test_encrypt_to__random_payload_and_context__round_trips_with_fixed_overhead(payload, context):
    envelope = encrypt_to(_pub(AGENT), payload, context)

    assert is_encrypted(envelope)
    assert len(envelope) == len(payload) + OVERHEAD_BYTES
    assert decrypt_with(bytes(AGENT.key), envelope, context) == payload


def test_encrypt_to__empty_payload__round_trips():
    envelope = encrypt_to(_pub(AGENT), b"", JOB_CONTEXT)

    assert decrypt_with(bytes(AGENT.key), envelope, JOB_CONTEXT) == b""


# --- re-encryption oracle -> agent ---------------------------------------------------------------


def test_reencrypt__oracle_to_agent__agent_reads_the_requester_plaintext():
    for_agent = reencrypt(bytes(ORACLE.key), _sealed_input(), _pub(AGENT), INPUT_CONTEXT, JOB_CONTEXT)

    assert decrypt_with(bytes(AGENT.key), for_agent, JOB_CONTEXT) == PAYLOAD
    with pytest.raises(WrongKeyError):
        decrypt_with(bytes(ORACLE.key), for_agent, JOB_CONTEXT)
    with pytest.raises(WrongKeyError):
        decrypt_with(bytes(OTHER_AGENT.key), for_agent, JOB_CONTEXT)


def test_reencrypt__k_agents__each_gets_its_own_envelope():
    sealed = _sealed_input()
    agents = [AGENT, OTHER_AGENT, _dev_account(4)]

    envelopes = [reencrypt(bytes(ORACLE.key), sealed, _pub(a), INPUT_CONTEXT, JOB_CONTEXT) for a in agents]

    assert len(set(envelopes)) == len(agents)
    assert all(decrypt_with(bytes(a.key), e, JOB_CONTEXT) == PAYLOAD for a, e in zip(agents, envelopes, strict=False))


def test_reencrypt__agent_key_not_on_curve__raises_invalid_public_key_error():
    with pytest.raises(InvalidPublicKeyError):
        reencrypt(bytes(ORACLE.key), _sealed_input(), b"\x04" + b"\x01" * 64, INPUT_CONTEXT, JOB_CONTEXT)


def test_reencrypt__input_context_of_another_requester__raises_wrong_context_error():
    other = context_for("input", CHAIN_ID, ESCROW, OTHER_REQUESTER)

    with pytest.raises(WrongContextError):
        reencrypt(bytes(ORACLE.key), _sealed_input(), _pub(AGENT), other, JOB_CONTEXT)


def test_encrypt_to__output_for_requester__opens_only_under_the_output_context():
    requester = _dev_account(1)
    output_context = context_for("output", CHAIN_ID, ESCROW, requester.address, task_id=7)
    envelope = encrypt_to(_pub(requester), b'{"text":"answer"}', output_context)

    assert decrypt_with(bytes(requester.key), envelope, output_context) == b'{"text":"answer"}'
    with pytest.raises(WrongContextError):
        decrypt_with(
            bytes(requester.key), envelope, context_for("output", CHAIN_ID, ESCROW, requester.address, task_id=8)
        )


# --- failures ----------------------------------------------------------------------------------


def test_decrypt__wrong_key__raises_wrong_key_error():
    with pytest.raises(WrongKeyError, match="different public key"):
        decrypt_with(bytes(AGENT.key), _sealed_input(), INPUT_CONTEXT)


@pytest.mark.parametrize(
    "region",
    ["ephemeral_key", "nonce", "first_ciphertext_byte", "last_ciphertext_byte", "gcm_tag"],
)
def test_decrypt__tampered_byte__raises_integrity_error(region):
    envelope = _sealed_input()
    ephemeral_at = crypto.HEADER_BYTES - crypto.NONCE_BYTES - crypto.EPHEMERAL_KEY_BYTES
    index = {
        "ephemeral_key": ephemeral_at + 5,
        "nonce": crypto.HEADER_BYTES - 1,
        "first_ciphertext_byte": crypto.HEADER_BYTES,
        "last_ciphertext_byte": len(envelope) - crypto.TAG_BYTES - 1,
        "gcm_tag": len(envelope) - 1,
    }[region]

    with pytest.raises(TamperedEnvelopeError):
        decrypt_with(bytes(ORACLE.key), _flip(envelope, index), INPUT_CONTEXT)


@SETTINGS
@given(data=st.data())
def test_decrypt__any_single_byte_changed__raises_crypto_error_and_never_returns(data):
    envelope = encrypt_to(_pub(AGENT), data.draw(st.binary(max_size=256)), JOB_CONTEXT)
    index = data.draw(st.integers(0, len(envelope) - 1))
    mask = data.draw(st.integers(1, 255))

    with pytest.raises(CryptoError):
        decrypt_with(bytes(AGENT.key), _flip(envelope, index, mask), JOB_CONTEXT)


@SETTINGS
@given(data=st.data())
def test_decrypt__truncated_or_extended__raises_crypto_error(data):
    envelope = encrypt_to(_pub(AGENT), data.draw(st.binary(max_size=64)), JOB_CONTEXT)
    cut = data.draw(st.integers(0, len(envelope) - 1))
    extra = data.draw(st.binary(min_size=1, max_size=16))

    with pytest.raises(CryptoError):
        decrypt_with(bytes(AGENT.key), envelope[:cut], JOB_CONTEXT)
    with pytest.raises(TamperedEnvelopeError):
        decrypt_with(bytes(AGENT.key), envelope + extra, JOB_CONTEXT)


def test_decrypt__wrong_context__raises_wrong_context_error():
    other_chain = context_for("input", 1, ESCROW, REQUESTER)

    with pytest.raises(WrongContextError, match="different context"):
        decrypt_with(bytes(ORACLE.key), _sealed_input(), other_chain)


def test_decrypt__input_reposted_by_another_requester__raises_wrong_context_error():
    # Someone who re-posts a victim's input CID as their own task must not get it decrypted.
    with pytest.raises(WrongContextError):
        decrypt_with(bytes(ORACLE.key), _sealed_input(), context_for("input", CHAIN_ID, ESCROW, OTHER_REQUESTER))


def test_decrypt__context_tag_rewritten_to_match_another_context__still_raises_integrity_error():
    # The tag is only a diagnostic: the full context is associated data, so forging it fails.
    other = context_for("input", CHAIN_ID, ESCROW, OTHER_REQUESTER)
    at = len(crypto.MAGIC) + 1 + crypto.KEY_ID_BYTES
    envelope = _sealed_input()
    forged = envelope[:at] + crypto._context_tag(other) + envelope[at + crypto.CONTEXT_TAG_BYTES :]

    with pytest.raises(TamperedEnvelopeError):
        decrypt_with(bytes(ORACLE.key), forged, other)


def test_decrypt__plaintext_json__raises_malformed_envelope_error():
    with pytest.raises(MalformedEnvelopeError, match="plaintext"):
        decrypt_with(bytes(ORACLE.key), PAYLOAD, INPUT_CONTEXT)


def test_decrypt__unknown_version__raises_malformed_envelope_error():
    envelope = bytearray(_sealed_input())
    envelope[len(crypto.MAGIC)] = 2

    assert is_encrypted(bytes(envelope))
    with pytest.raises(MalformedEnvelopeError, match="version 2"):
        decrypt_with(bytes(ORACLE.key), bytes(envelope), INPUT_CONTEXT)


@pytest.mark.parametrize("length", [0, 4, 5, OVERHEAD_BYTES - 1])
def test_decrypt__shorter_than_a_header__raises_malformed_envelope_error(length):
    with pytest.raises(MalformedEnvelopeError):
        decrypt_with(bytes(ORACLE.key), _sealed_input()[:length], INPUT_CONTEXT)


def test_decrypt__envelope_over_the_limit__raises_envelope_too_large_error():
    with pytest.raises(EnvelopeTooLargeError, match="limit"):
        decrypt_with(bytes(ORACLE.key), crypto.MAGIC + bytes(MAX_ENVELOPE_BYTES), INPUT_CONTEXT)


def test_encrypt_to__payload_at_and_over_the_limit__fits_then_raises_envelope_too_large_error():
    largest = bytes(MAX_ENVELOPE_BYTES - OVERHEAD_BYTES)

    envelope = encrypt_to(_pub(ORACLE), largest, INPUT_CONTEXT)
    assert len(envelope) == MAX_ENVELOPE_BYTES
    assert decrypt_with(bytes(ORACLE.key), envelope, INPUT_CONTEXT) == largest
    with pytest.raises(EnvelopeTooLargeError):
        encrypt_to(_pub(ORACLE), largest + b"\x00", INPUT_CONTEXT)


def test_decrypt__smaller_max_bytes__is_enforced():
    with pytest.raises(EnvelopeTooLargeError):
        decrypt_with(bytes(ORACLE.key), _sealed_input(), INPUT_CONTEXT, max_bytes=OVERHEAD_BYTES)


@pytest.mark.parametrize("context", [b"", b"x" * (crypto.MAX_CONTEXT_BYTES + 1), "tributa/input"])
def test_encrypt_and_decrypt__bad_context__raise_invalid_context_error(context):
    with pytest.raises(InvalidContextError):
        encrypt_to(_pub(ORACLE), PAYLOAD, context)
    with pytest.raises(InvalidContextError):
        decrypt_with(bytes(ORACLE.key), _sealed_input(), context)


# --- telling ciphertext from plaintext ---------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(), children, max_size=4),
    max_leaves=12,
)


@SETTINGS
@given(
    value=json_values,
    indent=st.sampled_from([None, 2]),
    ascii_only=st.booleans(),
    lead=st.sampled_from(["", " ", "\n", "\ufeff"]),
)
def test_is_encrypted__any_utf8_json_document__is_false(value, indent, ascii_only, lead):
    document = (lead + json.dumps(value, indent=indent, ensure_ascii=ascii_only)).encode("utf-8")

    assert not is_encrypted(document)


def test_is_encrypted__task_inputs_and_envelopes__tell_apart():
    assert not is_encrypted(PAYLOAD)
    assert not is_encrypted(encode_input(texts=["a", "b"]))
    assert not is_encrypted(b"")
    assert is_encrypted(_sealed_input())
    assert is_encrypted(bytearray(_sealed_input())) and is_encrypted(memoryview(_sealed_input()))


# --- keys and addresses ------------------------------------------------------------------------


@pytest.mark.parametrize("index", range(5))
def test_public_key_of__anvil_dev_account__matches_its_address_and_the_agent_registration(index):
    account = _dev_account(index)
    pubkey = public_key_of(bytes(account.key))

    assert len(pubkey) == 65 and pubkey[0] == 0x04
    assert pubkey == b"\x04" + account._key_obj.public_key.to_bytes()  # what compute_agent registers
    assert address_of_public_key(pubkey) == account.address
    check_public_key_owner(pubkey, account.address)
    check_public_key_owner(pubkey, account.address.lower())


def test_address_of_public_key__anvil_account_2__is_the_known_address():
    assert address_of_public_key(_pub(AGENT)) == "0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC"


def test_check_public_key_owner__key_of_another_account__raises_public_key_owner_error():
    with pytest.raises(PublicKeyOwnerError, match=AGENT.address):
        check_public_key_owner(_pub(OTHER_AGENT), AGENT.address)


@pytest.mark.parametrize("address", ["", "0x1234", "3C44CdDdB6a900fa2b585dd299e03d12FA4293BC", None])
def test_check_public_key_owner__not_an_address__raises_public_key_owner_error(address):
    with pytest.raises(PublicKeyOwnerError, match="not a 0x-prefixed"):
        check_public_key_owner(_pub(AGENT), address)


@pytest.mark.parametrize(
    "pubkey",
    [
        b"",
        b"\x04" * 64,  # X || Y without the prefix
        None,
        "04" + "11" * 64,
    ],
    ids=["empty", "64_bytes", "none", "hex_string"],
)
def test_encrypt_to__pubkey_of_wrong_length_or_type__raises_invalid_public_key_error(pubkey):
    with pytest.raises(InvalidPublicKeyError):
        encrypt_to(pubkey, PAYLOAD, INPUT_CONTEXT)


def test_encrypt_to__compressed_or_hybrid_pubkey__raises_invalid_public_key_error():
    point = coincurve.PublicKey(_pub(AGENT))
    hybrid = bytes([0x06 | (point.format(compressed=False)[-1] & 1)]) + point.format(compressed=False)[1:]

    for encoding in (point.format(compressed=True), hybrid):
        with pytest.raises(InvalidPublicKeyError, match="65 bytes"):
            encrypt_to(encoding, PAYLOAD, INPUT_CONTEXT)


def test_address_of_public_key__point_not_on_curve__raises_invalid_public_key_error():
    off_curve = _pub(AGENT)[:-1] + bytes([_pub(AGENT)[-1] ^ 1])

    with pytest.raises(InvalidPublicKeyError, match="not a point"):
        address_of_public_key(off_curve)


@pytest.mark.parametrize(
    "secret",
    [bytes(32), (2**256 - 1).to_bytes(32, "big"), bytes(31), bytes(33), "11" * 32],
    ids=["zero", "over_group_order", "31_bytes", "33_bytes", "hex_string"],
)
def test_decrypt__invalid_private_key__raises_invalid_private_key_error(secret):
    with pytest.raises(InvalidPrivateKeyError):
        decrypt_with(secret, _sealed_input(), INPUT_CONTEXT)


def test_errors__every_failure__carries_no_key_material():
    secret, out_of_range = bytes(AGENT.key), b"\xff" * 32
    failures = [
        lambda: decrypt_with(secret, _sealed_input(), INPUT_CONTEXT),
        lambda: decrypt_with(secret, _flip(encrypt_to(_pub(AGENT), PAYLOAD, JOB_CONTEXT), -1), JOB_CONTEXT),
        lambda: decrypt_with(secret, encrypt_to(_pub(AGENT), PAYLOAD, JOB_CONTEXT), INPUT_CONTEXT),
        lambda: decrypt_with(secret + b"\x00", _sealed_input(), INPUT_CONTEXT),
        lambda: public_key_of(out_of_range),
        lambda: encrypt_to(_pub(AGENT)[:-1] + b"\x00", PAYLOAD, INPUT_CONTEXT),
    ]
    for fail in failures:
        with pytest.raises(CryptoError) as caught:
            fail()
        text = str(caught.value) + repr(caught.value)
        for material in (secret, out_of_range):
            assert material.hex() not in text.lower() and repr(material) not in text
        # Tracebacks must not show a library exception that could quote the key either.
        assert caught.value.__suppress_context__ or caught.value.__context__ is None
        assert isinstance(caught.value, TributaError)


# --- contexts ----------------------------------------------------------------------------------


def test_context_for__each_purpose__gives_distinct_canonical_bytes():
    contexts = {
        context_for("input", CHAIN_ID, ESCROW, REQUESTER),
        context_for("job-input", CHAIN_ID, ESCROW, REQUESTER, task_id=1),
        context_for("output", CHAIN_ID, ESCROW, REQUESTER, task_id=1),
        context_for("output", CHAIN_ID, ESCROW, REQUESTER, task_id=2),
        context_for("input", 1, ESCROW, REQUESTER),
        context_for("input", CHAIN_ID, ESCROW, OTHER_REQUESTER),
    }

    assert len(contexts) == 6
    assert INPUT_CONTEXT == f"tributa/input/{CHAIN_ID}/{ESCROW.lower()}/{REQUESTER.lower()}".encode()
    assert context_for("input", CHAIN_ID, ESCROW.lower(), REQUESTER.upper().replace("0X", "0x")) == INPUT_CONTEXT


@pytest.mark.parametrize(
    "kwargs",
    [
        {"purpose": "secret"},
        {"chain_id": 0},
        {"chain_id": True},
        {"escrow": "0x1234"},
        {"requester": "not an address"},
        {"task_id": 3},  # an input context cannot name a task
        {"purpose": "job-input"},  # ... and a job-input context must
        {"purpose": "output", "task_id": 0},
    ],
)
def test_context_for__bad_part__raises_invalid_context_error(kwargs):
    args = {
        "purpose": "input",
        "chain_id": CHAIN_ID,
        "escrow": ESCROW,
        "requester": REQUESTER,
        "task_id": None,
    } | kwargs

    with pytest.raises(InvalidContextError):
        context_for(**args)


# --- the construction itself -------------------------------------------------------------------


@pytest.mark.parametrize(
    "ikm, salt, info, okm",
    [
        # RFC 5869 A.1 and A.3 (the first 32 bytes of each OKM).
        (
            "0b" * 22,
            "000102030405060708090a0b0c",
            "f0f1f2f3f4f5f6f7f8f9",
            "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf",
        ),
        ("0b" * 22, "", "", "8da4e775a563c18f715f802a063c5a31b8a11f5c5ee1879ec3454e5f3c738d2d"),
    ],
)
def test_hkdf_sha256__rfc5869_vectors__match(ikm, salt, info, okm):
    assert crypto._hkdf_sha256(bytes.fromhex(ikm), bytes.fromhex(salt), bytes.fromhex(info)).hex() == okm


def test_decrypt__envelope_built_by_hand_from_the_docstring_spec__opens():
    # An independent build (coincurve point multiply, pycryptodome HKDF) of the documented format.
    recipient = coincurve.PublicKey(_pub(AGENT)).format(compressed=True)
    ephemeral_secret, nonce = bytes([9]) * 32, bytes(range(12))
    ephemeral = coincurve.PrivateKey(ephemeral_secret).public_key.format(compressed=True)
    shared_point = coincurve.PublicKey(recipient).multiply(ephemeral_secret).format(compressed=True)
    key = HKDF(
        hashlib.sha256(shared_point).digest(), 32, b"", SHA256, context=b"tributa/ecies/v1" + ephemeral + recipient
    )
    header = (
        b"\x89TRB\x01"
        + hashlib.sha256(b"tributa/key-id\x00" + recipient).digest()[:8]
        + hashlib.sha256(b"tributa/context\x00" + JOB_CONTEXT).digest()[:8]
        + ephemeral
        + nonce
    )
    cipher = AES.new(key, AES.MODE_GCM, nonce=nonce)
    cipher.update(header + JOB_CONTEXT)
    body, tag = cipher.encrypt_and_digest(PAYLOAD)

    assert decrypt_with(bytes(AGENT.key), header + body + tag, JOB_CONTEXT) == PAYLOAD


GOLDEN_CONTEXT = b"tributa/test/golden"
GOLDEN_PLAINTEXT = b'{"prompt":"hi"}'
GOLDEN_V1 = bytes.fromhex(
    "8954524201f1e986f5ceb0b7960b16a384db48c96102989c0b76cb563971fdc9bef31ec06c3560f3249d6ee9e5d83c57"
    "625596e05f6f000102030405060708090a0bbe295d7aa2576cf874c79d8111dd31155f4ed59d8a3ad1e066b14aa3594c58"
)


def test_decrypt__golden_v1_envelope__still_opens():
    # Stored ciphertexts outlive releases: a format change must bump VERSION, not break this.
    assert decrypt_with(bytes(AGENT.key), GOLDEN_V1, GOLDEN_CONTEXT) == GOLDEN_PLAINTEXT


def test_seal__fixed_ephemeral_key_and_nonce__reproduces_the_golden_v1_bytes():
    recipient, ephemeral = coincurve.PublicKey(_pub(AGENT)), coincurve.PrivateKey(bytes([7]) * 32)

    envelope = crypto._seal(recipient, GOLDEN_PLAINTEXT, GOLDEN_CONTEXT, ephemeral, bytes(range(12)))

    assert envelope == GOLDEN_V1
