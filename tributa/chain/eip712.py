"""EIP-712 messages: agents' result and lease signatures, and signed job-API requests.

Both are bound to the chain id and the TaskEscrow address, so a signature made for one
deployment is worthless on any other.
"""

from __future__ import annotations

from eth_account import Account
from eth_account.messages import encode_typed_data
from eth_account.signers.local import LocalAccount

RESULT_DOMAIN_NAME = "Tributa TaskEscrow"
API_DOMAIN_NAME = "Tributa Oracle API"
DOMAIN_VERSION = "1"

_RESULT_TYPES = {"Result": [{"name": "task_id", "type": "uint256"}, {"name": "result_digest", "type": "bytes32"}]}
# An agent's acceptance of a lease: the evidence TaskEscrow needs to slash it for silence.
_LEASE_TYPES = {"Lease": [{"name": "task_id", "type": "uint256"}, {"name": "expires_at", "type": "uint256"}]}
_REQUEST_TYPES = {
    "ApiRequest": [
        {"name": "agent", "type": "address"},
        {"name": "method", "type": "string"},
        {"name": "path", "type": "string"},
        {"name": "body_hash", "type": "bytes32"},
        {"name": "nonce", "type": "uint256"},
        {"name": "expiry", "type": "uint256"},
    ]
}


def _domain(name: str, chain_id: int, escrow: str) -> dict:
    return {"name": name, "version": DOMAIN_VERSION, "chainId": chain_id, "verifyingContract": escrow}


def _result_message(chain_id: int, escrow: str, task_id: int, result_digest: bytes):
    return encode_typed_data(
        domain_data=_domain(RESULT_DOMAIN_NAME, chain_id, escrow),
        message_types=_RESULT_TYPES,
        message_data={"task_id": task_id, "result_digest": result_digest},
    )


def sign_result(account: LocalAccount, chain_id: int, escrow: str, task_id: int, result_digest: bytes) -> bytes:
    """The agent's 65-byte signature over Result(task_id, result_digest)."""
    return bytes(account.sign_message(_result_message(chain_id, escrow, task_id, result_digest)).signature)


def recover_result_signer(chain_id: int, escrow: str, task_id: int, result_digest: bytes, signature: bytes) -> str:
    return Account.recover_message(_result_message(chain_id, escrow, task_id, result_digest), signature=signature)


def _lease_message(chain_id: int, escrow: str, task_id: int, expires_at: int):
    return encode_typed_data(
        domain_data=_domain(RESULT_DOMAIN_NAME, chain_id, escrow),
        message_types=_LEASE_TYPES,
        message_data={"task_id": task_id, "expires_at": expires_at},
    )


def lease_digest(chain_id: int, escrow: str, task_id: int, expires_at: int) -> bytes:
    """hashTypedDataV4(Lease(task_id, expires_at)): what `TaskEscrow.lease_digest_to_sign` returns."""
    from eth_utils import keccak

    message = _lease_message(chain_id, escrow, task_id, expires_at)
    return keccak(b"\x19" + message.version + message.header + message.body)


def sign_lease(account: LocalAccount, chain_id: int, escrow: str, task_id: int, expires_at: int) -> bytes:
    """The agent's 65-byte signature over Lease(task_id, expires_at): it accepts the job and may
    be slashed if it holds the lease past `expires_at` (chain time) without answering."""
    return bytes(account.sign_message(_lease_message(chain_id, escrow, task_id, expires_at)).signature)


def recover_lease_signer(chain_id: int, escrow: str, task_id: int, expires_at: int, signature: bytes) -> str:
    return Account.recover_message(_lease_message(chain_id, escrow, task_id, expires_at), signature=signature)


def _request_message(
    chain_id: int, escrow: str, agent: str, method: str, path: str, body_hash: bytes, nonce: int, expiry: int
):
    return encode_typed_data(
        domain_data=_domain(API_DOMAIN_NAME, chain_id, escrow),
        message_types=_REQUEST_TYPES,
        message_data={
            "agent": agent,
            "method": method,
            "path": path,
            "body_hash": body_hash,
            "nonce": nonce,
            "expiry": expiry,
        },
    )


def sign_request(
    account: LocalAccount, chain_id: int, escrow: str, method: str, path: str, body_hash: bytes, nonce: int, expiry: int
) -> bytes:
    message = _request_message(chain_id, escrow, account.address, method, path, body_hash, nonce, expiry)
    return bytes(account.sign_message(message).signature)


REQUEST_TTL_S = 60


def request_headers(
    account: LocalAccount,
    chain_id: int,
    escrow: str,
    method: str,
    path: str,
    body: bytes,
    nonce: int | None = None,
    expiry: int | None = None,
) -> dict[str, str]:
    """The oracle API's auth headers for one request (a fresh random nonce; valid REQUEST_TTL_S)."""
    import secrets
    import time

    from web3 import Web3

    nonce = secrets.randbits(63) if nonce is None else nonce
    expiry = int(time.time()) + REQUEST_TTL_S if expiry is None else expiry
    signature = sign_request(account, chain_id, escrow, method, path, bytes(Web3.keccak(body)), nonce, expiry)
    return {
        "x-tributa-agent": account.address,
        "x-tributa-nonce": str(nonce),
        "x-tributa-expiry": str(expiry),
        "x-tributa-signature": "0x" + signature.hex(),
    }


def recover_request_signer(
    chain_id: int,
    escrow: str,
    agent: str,
    method: str,
    path: str,
    body_hash: bytes,
    nonce: int,
    expiry: int,
    signature: bytes,
) -> str:
    message = _request_message(chain_id, escrow, agent, method, path, body_hash, nonce, expiry)
    return Account.recover_message(message, signature=signature)
