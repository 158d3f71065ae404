"""Encryption for private tasks: task inputs and outputs sealed to one secp256k1 key.

The flow (after PAI3's encrypted inference):

1. the requester seals the input to the oracle's key, under ``context_for("input", ...)``;
   the content store only ever holds the envelope;
2. the oracle opens it and reseals it to each assigned agent's registered key
   (``reencrypt``, context ``"job-input"``), after ``check_public_key_owner`` has shown that the
   registered key belongs to the agent's address;
3. the agent opens it inside the job's sandbox process;
4. when the requester asked for it, the agent seals the output to the requester's key
   (context ``"output"``).

Construction (ECIES, done here with coincurve rather than eciespy)
------------------------------------------------------------------
eciespy has no associated data, and binding a context is the point of the exercise: a ciphertext
made for one deployment, requester, task or purpose must not open under another. Hashing the
context into the plaintext frame would also work, but it needs a second framing layer and only
fails after the whole payload is decrypted; AEAD associated data is the standard tool. So:

* a fresh ephemeral secp256k1 key ``e`` per envelope; ``ikm = ECDH(e, R)`` with coincurve
  (libsecp256k1's ECDH: SHA-256 of the compressed shared point), ``R`` the recipient's key;
* ``key = HKDF-SHA256(ikm, salt="", info=INFO ‖ E ‖ R)`` (RFC 5869; ``E`` and ``R`` compressed),
  which ties the key to both public keys;
* AES-256-GCM, random 96-bit nonce, associated data = the envelope header ‖ the context.

Envelope v1 (82 bytes of overhead)::

    magic "\\x89TRB" (4) | version 0x01 (1) | recipient key id (8) | context tag (8)
    | ephemeral public key, compressed (33) | nonce (12) | ciphertext (n) | GCM tag (16)

The magic starts with 0x89, which never begins valid UTF-8 (the PNG trick), so no JSON document
(RFC 8259 requires UTF-8) is ever mistaken for an envelope. The key id (a hash of the recipient's
public key) and the context tag (a hash of the context) exist only so a failure can say *why* it
failed (wrong key, wrong context) before the AEAD check; security rests on the AEAD alone, since
both fields and the full context are in the associated data. They do reveal which public key an
envelope is for, which is public anyway (the oracle's key, an agent's on-chain registration).

Python cannot wipe memory, so decrypted plaintext and key bytes live until garbage collected;
keep the process that holds them (the sandbox) short-lived. No message here contains key bytes.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
from typing import Literal

import coincurve
from Crypto.Cipher import AES
from eth_utils import keccak, to_checksum_address

from tributa.errors import TributaError

MAGIC = b"\x89TRB"
VERSION = 1
INFO = b"tributa/ecies/v1"

KEY_ID_BYTES = 8
CONTEXT_TAG_BYTES = 8
EPHEMERAL_KEY_BYTES = 33
NONCE_BYTES = 12
TAG_BYTES = 16
HEADER_BYTES = len(MAGIC) + 1 + KEY_ID_BYTES + CONTEXT_TAG_BYTES + EPHEMERAL_KEY_BYTES + NONCE_BYTES
OVERHEAD_BYTES = HEADER_BYTES + TAG_BYTES

# Inputs are prompts or short lists of texts; 1 MiB bounds memory and AES work per request.
MAX_ENVELOPE_BYTES = 1 << 20
MAX_CONTEXT_BYTES = 1024

PRIVATE_KEY_BYTES = 32
PUBLIC_KEY_BYTES = 65

Purpose = Literal["input", "job-input", "output", "oracle-copy"]
_ADDRESS = re.compile(r"0x[0-9a-fA-F]{40}")


class CryptoError(TributaError):
    """A private-task payload could not be sealed or opened."""


class InvalidPublicKeyError(CryptoError):
    """A public key is not 65 bytes 0x04 ‖ X ‖ Y, or not a point on secp256k1."""


class InvalidPrivateKeyError(CryptoError):
    """A private key is not 32 bytes in [1, n-1]."""


class InvalidContextError(CryptoError):
    """A context is empty, too long, or built from bad parts."""


class MalformedEnvelopeError(CryptoError):
    """The bytes are not a Tributa envelope of a known version."""


class EnvelopeTooLargeError(CryptoError):
    """The envelope (or the one a plaintext would make) is over the size limit."""


class WrongKeyError(CryptoError):
    """The envelope was sealed to a different public key."""


class WrongContextError(CryptoError):
    """The envelope was sealed for a different deployment, requester, task or purpose."""


class TamperedEnvelopeError(CryptoError):
    """The envelope was altered after sealing (authentication failed)."""


class PublicKeyOwnerError(CryptoError):
    """A public key does not belong to the address that registered it."""


def is_encrypted(data: bytes) -> bool:
    """True when `data` starts like an envelope (any version); plaintext JSON never does."""
    return bytes(data[: len(MAGIC)]) == MAGIC


def public_key_of(private_key: bytes) -> bytes:
    """The 65-byte uncompressed public key (0x04 ‖ X ‖ Y) of a 32-byte private key."""
    return _private_key(private_key).public_key.format(compressed=False)


def address_of_public_key(pubkey: bytes) -> str:
    """The checksummed Ethereum address of a public key: last 20 bytes of keccak256(X ‖ Y)."""
    point = _public_key(pubkey).format(compressed=False)
    return to_checksum_address(keccak(point[1:])[-20:])


def check_public_key_owner(pubkey: bytes, address: str) -> None:
    """Raise PublicKeyOwnerError unless `pubkey` is the key of `address` (agent registrations)."""
    if not isinstance(address, str) or not _ADDRESS.fullmatch(address):
        raise PublicKeyOwnerError("the address to check against is not a 0x-prefixed 20-byte hex address")
    if address_of_public_key(pubkey).lower() != address.lower():
        raise PublicKeyOwnerError(
            f"the registered public key does not belong to {address}: re-register the agent with the key of its own account"
        )


def context_for(purpose: Purpose, chain_id: int, escrow: str, requester: str, task_id: int | None = None) -> bytes:
    """The canonical context for each hop, so CLI, oracle and agent build the same bytes.

    The input context names the requester: otherwise anyone could post their own task pointing at
    someone else's input envelope and have the oracle decrypt it for them. "input" is sealed
    before the task exists, so it has no task id; the others must name the task.
    """
    if purpose not in ("input", "job-input", "output", "oracle-copy"):
        raise InvalidContextError(f"unknown purpose {purpose!r}: use 'input', 'job-input', 'output' or 'oracle-copy'")
    if isinstance(chain_id, bool) or not isinstance(chain_id, int) or chain_id <= 0:
        raise InvalidContextError("chain_id must be a positive integer")
    for name, value in (("escrow", escrow), ("requester", requester)):
        if not isinstance(value, str) or not _ADDRESS.fullmatch(value):
            raise InvalidContextError(f"{name} must be a 0x-prefixed 20-byte hex address")
    parts = [b"tributa", purpose.encode(), str(chain_id).encode(), escrow.lower().encode(), requester.lower().encode()]
    if purpose == "input":
        if task_id is not None:
            raise InvalidContextError(
                "an input context has no task id: the task does not exist when the input is sealed"
            )
    else:
        if isinstance(task_id, bool) or not isinstance(task_id, int) or task_id <= 0:
            raise InvalidContextError(f"a {purpose} context needs the task id (a positive integer)")
        parts.append(str(task_id).encode())
    return b"/".join(parts)


def encrypt_to(pubkey: bytes, plaintext: bytes, context: bytes, *, max_bytes: int = MAX_ENVELOPE_BYTES) -> bytes:
    """Seal `plaintext` to the holder of `pubkey` (65 bytes, uncompressed), bound to `context`."""
    recipient = _public_key(pubkey)
    _check_context(context)
    if not isinstance(plaintext, (bytes, bytearray, memoryview)):
        raise TypeError("plaintext must be bytes")
    if len(plaintext) + OVERHEAD_BYTES > max_bytes:
        raise EnvelopeTooLargeError(
            f"a {len(plaintext)}-byte payload makes an envelope over the {max_bytes}-byte limit: send a smaller input"
        )
    return _seal(recipient, bytes(plaintext), bytes(context), coincurve.PrivateKey(), os.urandom(NONCE_BYTES))


def decrypt_with(private_key: bytes, envelope: bytes, context: bytes, *, max_bytes: int = MAX_ENVELOPE_BYTES) -> bytes:
    """Open an envelope sealed to `private_key`'s public key under `context`.

    Raises MalformedEnvelopeError, EnvelopeTooLargeError, WrongKeyError, WrongContextError or
    TamperedEnvelopeError (in the order they are checked), all CryptoError.
    """
    key = _private_key(private_key)
    _check_context(context)
    envelope = _check_envelope(envelope, max_bytes)
    recipient = key.public_key.format(compressed=True)
    key_id, context_tag, ephemeral, nonce = _split_header(envelope)
    if not hmac.compare_digest(key_id, _key_id(recipient)):
        raise WrongKeyError("this envelope was sealed to a different public key: open it with the recipient's key")
    if not hmac.compare_digest(context_tag, _context_tag(bytes(context))):
        raise WrongContextError(
            "this envelope was sealed for a different context (deployment, requester, task or purpose): refusing to open it"
        )
    try:
        shared = key.ecdh(ephemeral)
    except ValueError:
        raise TamperedEnvelopeError("the envelope's ephemeral key is not a curve point: it was altered") from None
    cipher = AES.new(
        _hkdf_sha256(shared, b"", INFO + ephemeral + recipient), AES.MODE_GCM, nonce=nonce, mac_len=TAG_BYTES
    )
    cipher.update(envelope[:HEADER_BYTES] + bytes(context))
    try:
        return cipher.decrypt_and_verify(envelope[HEADER_BYTES:-TAG_BYTES], envelope[-TAG_BYTES:])
    except ValueError:
        raise TamperedEnvelopeError(
            "the envelope failed authentication: it was altered or truncated in transit"
        ) from None


def reencrypt(
    oracle_key: bytes,
    envelope: bytes,
    agent_pubkey: bytes,
    in_context: bytes,
    out_context: bytes,
    *,
    max_bytes: int = MAX_ENVELOPE_BYTES,
) -> bytes:
    """Open an envelope with the oracle's key and seal the payload to an agent's key.

    Both envelopes have the same size, so the limit that admitted the input admits the output.
    """
    _public_key(agent_pubkey)  # a bad agent key should fail before any decryption happens
    _check_context(out_context)
    plaintext = decrypt_with(oracle_key, envelope, in_context, max_bytes=max_bytes)
    return encrypt_to(agent_pubkey, plaintext, out_context, max_bytes=max_bytes)


def _seal(
    recipient: coincurve.PublicKey, plaintext: bytes, context: bytes, ephemeral_key: coincurve.PrivateKey, nonce: bytes
) -> bytes:
    recipient_bytes = recipient.format(compressed=True)
    ephemeral = ephemeral_key.public_key.format(compressed=True)
    header = MAGIC + bytes([VERSION]) + _key_id(recipient_bytes) + _context_tag(context) + ephemeral + nonce
    key = _hkdf_sha256(ephemeral_key.ecdh(recipient_bytes), b"", INFO + ephemeral + recipient_bytes)
    cipher = AES.new(key, AES.MODE_GCM, nonce=nonce, mac_len=TAG_BYTES)
    cipher.update(header + context)
    body, tag = cipher.encrypt_and_digest(plaintext)
    return header + body + tag


def _hkdf_sha256(ikm: bytes, salt: bytes, info: bytes, length: int = 32) -> bytes:
    """RFC 5869 HKDF with SHA-256, on the stdlib's C HMAC."""
    prk = hmac.digest(salt or bytes(32), ikm, "sha256")
    okm, block = b"", b""
    for counter in range(1, -(-length // 32) + 1):
        block = hmac.digest(prk, block + info + bytes([counter]), "sha256")
        okm += block
    return okm[:length]


def _key_id(compressed_pubkey: bytes) -> bytes:
    return hashlib.sha256(b"tributa/key-id\x00" + compressed_pubkey).digest()[:KEY_ID_BYTES]


def _context_tag(context: bytes) -> bytes:
    return hashlib.sha256(b"tributa/context\x00" + context).digest()[:CONTEXT_TAG_BYTES]


def _split_header(envelope: bytes) -> tuple[bytes, bytes, bytes, bytes]:
    at = len(MAGIC) + 1
    key_id = envelope[at : at + KEY_ID_BYTES]
    at += KEY_ID_BYTES
    context_tag = envelope[at : at + CONTEXT_TAG_BYTES]
    at += CONTEXT_TAG_BYTES
    ephemeral = envelope[at : at + EPHEMERAL_KEY_BYTES]
    at += EPHEMERAL_KEY_BYTES
    return key_id, context_tag, ephemeral, envelope[at : at + NONCE_BYTES]


def _check_envelope(envelope: bytes, max_bytes: int) -> bytes:
    if not isinstance(envelope, (bytes, bytearray, memoryview)):
        raise MalformedEnvelopeError("an envelope must be bytes")
    if len(envelope) > max_bytes:
        # Checked before any parsing or crypto, so an oversized upload costs nothing.
        raise EnvelopeTooLargeError(f"the envelope is {len(envelope)} bytes, over the {max_bytes}-byte limit")
    envelope = bytes(envelope)
    if not is_encrypted(envelope):
        raise MalformedEnvelopeError(
            "these bytes are not a Tributa envelope (no magic prefix): was the payload sent in plaintext?"
        )
    if len(envelope) <= len(MAGIC):
        raise MalformedEnvelopeError("the envelope is truncated: it has no version byte")
    if envelope[len(MAGIC)] != VERSION:
        raise MalformedEnvelopeError(
            f"envelope version {envelope[len(MAGIC)]} is not supported (this build reads version {VERSION}): upgrade tributa"
        )
    if len(envelope) < OVERHEAD_BYTES:
        raise MalformedEnvelopeError(
            f"the envelope is truncated: {len(envelope)} bytes, a v1 envelope has at least {OVERHEAD_BYTES}"
        )
    return envelope


def _check_context(context: bytes) -> None:
    if not isinstance(context, (bytes, bytearray)):
        raise InvalidContextError("a context must be bytes: build it with context_for()")
    if not 0 < len(context) <= MAX_CONTEXT_BYTES:
        raise InvalidContextError(f"a context must be 1 to {MAX_CONTEXT_BYTES} bytes: build it with context_for()")


def _public_key(pubkey: bytes) -> coincurve.PublicKey:
    if not isinstance(pubkey, (bytes, bytearray)):
        raise InvalidPublicKeyError("a public key must be bytes (65 bytes: 0x04 ‖ X ‖ Y)")
    if len(pubkey) != PUBLIC_KEY_BYTES or pubkey[0] != 0x04:
        raise InvalidPublicKeyError(
            f"a public key must be 65 bytes, 0x04 ‖ X ‖ Y (uncompressed secp256k1); got {len(pubkey)} bytes"
        )
    try:
        return coincurve.PublicKey(bytes(pubkey))
    except ValueError:
        raise InvalidPublicKeyError("the public key is not a point on secp256k1: check the registered key") from None


def _private_key(private_key: bytes) -> coincurve.PrivateKey:
    if not isinstance(private_key, (bytes, bytearray)):
        raise InvalidPrivateKeyError("a private key must be 32 raw bytes")
    if len(private_key) != PRIVATE_KEY_BYTES:
        raise InvalidPrivateKeyError(f"a private key must be 32 bytes; got {len(private_key)} bytes")
    try:
        return coincurve.PrivateKey(bytes(private_key))
    except ValueError:
        # from None: the underlying exception is not allowed to carry the secret into a traceback.
        raise InvalidPrivateKeyError(
            "the private key is out of range for secp256k1 (0 or >= the group order)"
        ) from None
