"""Authenticating agents' API requests.

A request carries X-Tributa-Agent, -Nonce, -Expiry and -Signature headers; the signature
is EIP-712 over (agent, method, path, keccak(body), nonce, expiry), bound to the chain id
and the escrow contract. A nonce is accepted once; an expired request is refused.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

from sqlalchemy import delete
from sqlalchemy.exc import IntegrityError
from web3 import Web3

from oracle.db import ApiNonce, Database
from oracle.jobs import JobError
from tributa.chain.eip712 import recover_request_signer

MAX_EXPIRY_AHEAD_S = 300


class AuthError(JobError):
    """A request whose agent, signature, nonce or expiry does not check out (a 4xx)."""


@dataclass(frozen=True)
class SignedHeaders:
    agent: str
    nonce: int
    expiry: int
    signature: bytes

    @classmethod
    def parse(cls, headers) -> "SignedHeaders":
        try:
            agent = Web3.to_checksum_address(headers["x-tributa-agent"])
            nonce = int(headers["x-tributa-nonce"])
            expiry = int(headers["x-tributa-expiry"])
            signature = bytes.fromhex(headers["x-tributa-signature"].removeprefix("0x"))
        except KeyError as exc:
            raise AuthError(401, f"missing header {exc.args[0]}; sign requests with the agent key") from None
        except ValueError:
            raise AuthError(401, "malformed auth headers (agent address, integer nonce/expiry, hex signature)") from None
        if len(signature) != 65 or nonce < 0:
            raise AuthError(401, "signature must be 65 bytes and nonce non-negative")
        return cls(agent, nonce, expiry, signature)


class RequestAuthenticator:
    def __init__(self, db: Database, chain_id: int, escrow: str, is_registered: Callable[[str], bool]) -> None:
        self.db = db
        self.chain_id = chain_id
        self.escrow = escrow
        self.is_registered = is_registered

    def verify(self, headers, method: str, path: str, body: bytes) -> str:
        """The authenticated agent address, or AuthError."""
        h = SignedHeaders.parse(headers)
        now = int(time.time())
        if h.expiry < now:
            raise AuthError(401, "request expired; sign with an expiry in the future")
        if h.expiry > now + MAX_EXPIRY_AHEAD_S:
            raise AuthError(401, f"expiry is more than {MAX_EXPIRY_AHEAD_S}s ahead")
        try:
            signer = recover_request_signer(
                self.chain_id, self.escrow, h.agent, method, path, bytes(Web3.keccak(body)), h.nonce, h.expiry, h.signature
            )
        except Exception:  # eth_account raises several types for undecodable signatures
            raise AuthError(401, "signature does not decode") from None
        if signer != h.agent:
            raise AuthError(401, "signature does not match the agent header")
        if not self.is_registered(h.agent):
            raise AuthError(403, f"agent {h.agent} is not registered on-chain; run `tributa agent run` to register")
        self._use_nonce(h.agent, h.nonce, h.expiry, now)
        return h.agent

    def _use_nonce(self, agent: str, nonce: int, expiry: int, now: int) -> None:
        try:
            with self.db.session() as s:
                s.execute(delete(ApiNonce).where(ApiNonce.expiry < now - 60))
                s.add(ApiNonce(agent=agent, nonce=str(nonce), expiry=expiry))
        except IntegrityError:
            raise AuthError(409, "nonce already used (replayed request)") from None
