"""Private tasks: who seals what to whom, under which context.

    requester --seal_input(oracle key)------------> store (ciphertext only) -> post_task
    oracle    --open_input, seal_job_input(agent key)--> job offer
    agent     --opens the job input inside its sandbox, runs, returns the output to the oracle
    oracle    --seal_output(requester key)--------> store; the chain gets the plaintext's digest
    oracle    --seal_oracle_copy(its own key)-----> store: what the verdict compares answers by
    requester --open_output, checks it against the on-chain digest

Every envelope is bound to the chain, the escrow and the requester (and, past the first hop, the
task), so it cannot be replayed into another task, deployment or account.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass

from tributa.crypto import (
    check_public_key_owner,
    context_for,
    decrypt_with,
    encrypt_to,
    is_encrypted,
)
from tributa.errors import TributaError

__all__ = [
    "Deployment",
    "OpenedInput",
    "is_encrypted",
    "open_input",
    "open_oracle_copy",
    "open_output",
    "seal_input",
    "seal_job_input",
    "seal_oracle_copy",
    "seal_output",
]


@dataclass(frozen=True)
class Deployment:
    chain_id: int
    escrow: str


@dataclass(frozen=True)
class OpenedInput:
    input_bytes: bytes
    output_pubkey: bytes  # the requester's key: outputs are sealed to it


def seal_input(
    oracle_pubkey: bytes, input_bytes: bytes, requester_pubkey: bytes, where: Deployment, requester: str
) -> bytes:
    """The requester's side: the job input and its own output key, sealed to the oracle."""
    check_public_key_owner(requester_pubkey, requester)
    payload = {"input_b64": base64.b64encode(input_bytes).decode(), "output_pubkey": requester_pubkey.hex()}
    plaintext = json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()
    return encrypt_to(oracle_pubkey, plaintext, context_for("input", where.chain_id, where.escrow, requester))


def open_input(oracle_key: bytes, envelope: bytes, where: Deployment, requester: str) -> OpenedInput:
    """The oracle's side: the input, and an output key proven to be the requester's."""
    plaintext = decrypt_with(oracle_key, envelope, context_for("input", where.chain_id, where.escrow, requester))
    try:
        payload = json.loads(plaintext)
        opened = OpenedInput(
            base64.b64decode(payload["input_b64"], validate=True), bytes.fromhex(payload["output_pubkey"])
        )
    except (ValueError, KeyError, TypeError):
        raise TributaError("the private input's payload is malformed (input_b64, output_pubkey)") from None
    check_public_key_owner(opened.output_pubkey, requester)
    return opened


def job_input_context(where: Deployment, requester: str, task_id: int) -> bytes:
    return context_for("job-input", where.chain_id, where.escrow, requester, task_id)


def seal_job_input(agent_pubkey: bytes, input_bytes: bytes, where: Deployment, requester: str, task_id: int) -> bytes:
    return encrypt_to(agent_pubkey, input_bytes, job_input_context(where, requester, task_id))


def seal_output(requester_pubkey: bytes, output: bytes, where: Deployment, requester: str, task_id: int) -> bytes:
    return encrypt_to(requester_pubkey, output, context_for("output", where.chain_id, where.escrow, requester, task_id))


def seal_oracle_copy(
    oracle_pubkey: bytes, output: bytes, where: Deployment, requester: str, task_id: int, job_id: int
) -> bytes:
    """An agent's answer to a private task, kept for the oracle alone: the verdict needs the outputs
    (equal digests are too strict across hardware), the store must hold no plaintext."""
    return encrypt_to(oracle_pubkey, output, _oracle_copy_context(where, requester, task_id, job_id))


def open_oracle_copy(
    oracle_key: bytes, envelope: bytes, where: Deployment, requester: str, task_id: int, job_id: int
) -> bytes:
    return decrypt_with(oracle_key, envelope, _oracle_copy_context(where, requester, task_id, job_id))


def _oracle_copy_context(where: Deployment, requester: str, task_id: int, job_id: int) -> bytes:
    # Bound to the job too: one agent's copy cannot stand in for another's.
    return context_for("oracle-copy", where.chain_id, where.escrow, requester, task_id) + b"/job:%d" % job_id


def open_output(requester_key: bytes, envelope: bytes, where: Deployment, requester: str, task_id: int) -> bytes:
    return decrypt_with(
        requester_key, envelope, context_for("output", where.chain_id, where.escrow, requester, task_id)
    )
