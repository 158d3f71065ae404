"""Content identifiers (CIDs) for sha2-256 content, and the 32-byte digest used on-chain.

A CID names a block by the sha2-256 multihash of its bytes plus the codec the bytes are in:
`dag-pb` (UnixFS nodes) or `raw` (file data stored as is). CIDv0 (`Qm…`, base58btc) is always
dag-pb; CIDv1 is written in base32 (`bafy…` for dag-pb, `bafk…` for raw), as Kubo prints it.

On-chain, content is named by the 32-byte digest alone. `cid_to_digest` and `digest_to_cid`
convert between the two; the digest does not carry the version or codec, so `digest_to_cid`
takes them as arguments (dag-pb CIDv0 by default, which is what `ipfs add` gives).
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Literal

from tributa.store.errors import CidError
from tributa.store.varint import decode_uvarint, encode_uvarint

Codec = Literal["dag-pb", "raw"]

SHA2_256 = 0x12
DIGEST_SIZE = 32
_CODEC_CODES: dict[str, int] = {"dag-pb": 0x70, "raw": 0x55}
_CODEC_NAMES: dict[int, Codec] = {0x70: "dag-pb", 0x55: "raw"}

_B58_ALPHABET = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
_B58_INDEX = {ch: i for i, ch in enumerate(_B58_ALPHABET)}
_B36_ALPHABET = "0123456789abcdefghijklmnopqrstuvwxyz"


def _b58encode(data: bytes) -> str:
    zeros = len(data) - len(data.lstrip(b"\0"))
    num = int.from_bytes(data, "big")
    out = []
    while num:
        num, rem = divmod(num, 58)
        out.append(_B58_ALPHABET[rem])
    return "1" * zeros + "".join(reversed(out))


def _b58decode(text: str) -> bytes:
    num = 0
    for ch in text:
        try:
            num = num * 58 + _B58_INDEX[ch]
        except KeyError:
            raise CidError(f"invalid CID {text!r}: {ch!r} is not a base58btc character") from None
    zeros = len(text) - len(text.lstrip("1"))
    body = num.to_bytes((num.bit_length() + 7) // 8, "big") if num else b""
    return b"\0" * zeros + body


def _b36decode(text: str, original: str) -> bytes:
    num = 0
    for ch in text.lower():
        value = _B36_ALPHABET.find(ch)
        if value < 0:
            raise CidError(f"invalid CID {original!r}: {ch!r} is not a base36 character")
        num = num * 36 + value
    zeros = len(text) - len(text.lstrip("0"))
    body = num.to_bytes((num.bit_length() + 7) // 8, "big") if num else b""
    return b"\0" * zeros + body


def _b32encode(data: bytes) -> str:
    return base64.b32encode(data).decode("ascii").lower().rstrip("=")


def _b32decode(text: str, original: str) -> bytes:
    padded = text.upper() + "=" * (-len(text) % 8)
    try:
        return base64.b32decode(padded)
    except ValueError:
        raise CidError(f"invalid CID {original!r}: not valid base32") from None


@dataclass(frozen=True, slots=True)
class Cid:
    """A sha2-256 CID. `str(cid)` gives the canonical text (v0 base58btc, v1 base32)."""

    version: int
    codec: Codec
    digest: bytes

    def __post_init__(self) -> None:
        if self.version not in (0, 1):
            raise CidError(f"invalid CID: version must be 0 or 1, not {self.version!r}")
        if self.codec not in _CODEC_CODES:
            raise CidError(f"invalid CID: codec must be 'dag-pb' or 'raw', not {self.codec!r}")
        if not isinstance(self.digest, bytes) or len(self.digest) != DIGEST_SIZE:
            raise CidError("invalid CID: the sha2-256 digest must be exactly 32 bytes")
        if self.version == 0 and self.codec != "dag-pb":
            raise CidError("invalid CID: CIDv0 can only name dag-pb blocks; use version=1 for raw")

    # -- parsing -------------------------------------------------------------------------------

    @classmethod
    def parse(cls, text: str) -> Cid:
        """Parse a CID string: v0 (`Qm…`) or v1 in base32 (`b…`), base58btc (`z…`),
        base36 (`k…`) or base16 (`f…`). Raises CidError (a ValueError) saying what is wrong."""
        if isinstance(text, Cid):
            return text
        if not isinstance(text, str):
            raise CidError(f"invalid CID: expected a string, got {type(text).__name__}")
        stripped = text.strip()
        if stripped.startswith("/ipfs/"):
            stripped = stripped[len("/ipfs/") :]
        if not stripped:
            raise CidError("invalid CID: the string is empty")
        if len(stripped) == 46 and stripped.startswith("Qm"):
            return cls._from_multihash(_b58decode(stripped), version=0, codec="dag-pb", text=text)
        prefix, body = stripped[0], stripped[1:]
        if prefix in "bB":
            raw = _b32decode(body, text)
        elif prefix == "z":
            raw = _b58decode(body)
        elif prefix in "kK":
            raw = _b36decode(body, text)
        elif prefix in "fF":
            try:
                raw = bytes.fromhex(body)
            except ValueError:
                raise CidError(f"invalid CID {text!r}: not valid base16") from None
        else:
            raise CidError(
                f"invalid CID {text!r}: expected a CIDv0 ('Qm…', 46 characters) or a multibase CIDv1 ('bafy…', 'bafk…')"
            )
        return cls.from_bytes(raw, text=text)

    @classmethod
    def from_bytes(cls, raw: bytes, *, text: str | None = None) -> Cid:
        """Parse a binary CID (as found in dag-pb links)."""
        shown = text if text is not None else raw.hex()
        raw = bytes(raw)
        if len(raw) == 34 and raw[0] == SHA2_256:
            return cls._from_multihash(raw, version=0, codec="dag-pb", text=shown)
        try:
            version, pos = decode_uvarint(raw, 0)
            codec_code, pos = decode_uvarint(raw, pos)
        except ValueError:
            raise CidError(f"invalid CID {shown!r}: truncated header") from None
        if version != 1:
            raise CidError(f"invalid CID {shown!r}: unsupported CID version {version}")
        codec = _CODEC_NAMES.get(codec_code)
        if codec is None:
            raise CidError(f"invalid CID {shown!r}: codec 0x{codec_code:x} is not supported (only dag-pb and raw)")
        return cls._from_multihash(raw[pos:], version=1, codec=codec, text=shown)

    @classmethod
    def _from_multihash(cls, mh: bytes, *, version: int, codec: Codec, text: str) -> Cid:
        if len(mh) < 2:
            raise CidError(f"invalid CID {text!r}: truncated multihash")
        if mh[0] != SHA2_256:
            raise CidError(f"invalid CID {text!r}: hash function 0x{mh[0]:x} is not supported (only sha2-256)")
        if mh[1] != DIGEST_SIZE or len(mh) != 2 + DIGEST_SIZE:
            raise CidError(f"invalid CID {text!r}: a sha2-256 multihash must hold 32 digest bytes")
        return cls(version=version, codec=codec, digest=mh[2:])

    # -- encoding ------------------------------------------------------------------------------

    @property
    def multihash(self) -> bytes:
        return bytes((SHA2_256, DIGEST_SIZE)) + self.digest

    def to_bytes(self) -> bytes:
        """The binary form, as stored in dag-pb links."""
        if self.version == 0:
            return self.multihash
        return b"\x01" + encode_uvarint(_CODEC_CODES[self.codec]) + self.multihash

    def to_v0(self) -> Cid:
        if self.codec != "dag-pb":
            raise CidError(f"{self} names a raw block; raw blocks have no CIDv0 form")
        return Cid(0, "dag-pb", self.digest)

    def to_v1(self) -> Cid:
        return Cid(1, self.codec, self.digest)

    def encode(self, version: int | None = None) -> str:
        """The text form in the given version (default: this CID's own)."""
        target = (
            self if version is None or version == self.version else (self.to_v0() if version == 0 else self.to_v1())
        )
        if target.version == 0:
            return _b58encode(target.multihash)
        return "b" + _b32encode(target.to_bytes())

    def __str__(self) -> str:
        return self.encode()

    def __repr__(self) -> str:
        return f"Cid({self.encode()!r})"


def coerce_cid(value: Cid | str) -> Cid:
    """Accept a Cid or its string form."""
    return value if isinstance(value, Cid) else Cid.parse(value)


def cid_to_digest(cid: Cid | str) -> bytes:
    """The 32-byte sha2-256 digest that names this content on-chain."""
    return coerce_cid(cid).digest


def digest_to_cid(digest: bytes, version: int = 0, codec: Codec = "dag-pb") -> Cid:
    """Rebuild a CID from an on-chain digest (dag-pb CIDv0 by default, as `ipfs add` gives)."""
    if isinstance(digest, str):
        hexed = digest[2:] if digest.startswith("0x") else digest
        try:
            digest = bytes.fromhex(hexed)
        except ValueError:
            raise CidError(f"invalid digest {digest!r}: expected 32 bytes or 64 hex characters") from None
    if not isinstance(digest, (bytes, bytearray)) or len(digest) != DIGEST_SIZE:
        raise CidError("invalid digest: a sha2-256 digest is exactly 32 bytes")
    return Cid(version=version, codec=codec, digest=bytes(digest))
