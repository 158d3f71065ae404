"""Shared setup for the durability tests: database backends and private Anvil nodes.

- `database_urls(kind, tmp_path)`: a fresh, empty database of either backend (SQLite file, or a
  new PostgreSQL database on the server in TRIBUTA_TEST_PG_URL, dropped afterwards);
- `private_chain(contracts, …)`: a second Anvil node holding a copy of the session's deployed
  chain (anvil_dumpState → anvil_loadState), for tests that reorganise, stop or restart it.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from web3 import Web3

PG_ENV = "TRIBUTA_TEST_PG_URL"
BACKENDS = ("sqlite", "postgresql")
PG_SKIP_REASON = (
    f"{PG_ENV} is not set: run `make test`, or start one with `scripts/pg.sh` and export {PG_ENV}=<its output>"
)


def backend_params() -> list:
    """pytest params for both backends; PostgreSQL ones skip (with the reason) when no server is given."""
    return [
        pytest.param("sqlite", id="sqlite"),
        pytest.param(
            "postgresql", id="postgresql", marks=pytest.mark.skipif(not os.environ.get(PG_ENV), reason=PG_SKIP_REASON)
        ),
    ]


@contextmanager
def database_url(kind: str, tmp_path: Path) -> Iterator[str]:
    """The URL of a fresh, empty database of the given backend."""
    if kind == "sqlite":
        yield f"sqlite:///{tmp_path / f'oracle-{uuid.uuid4().hex[:8]}.sqlite'}"
        return
    base = make_url(os.environ[PG_ENV])
    name = f"tributa_t_{uuid.uuid4().hex[:12]}"
    admin = create_engine(base, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield base.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def chain_state(contracts) -> str:
    """The whole state of the session's chain (accounts, code, storage, blocks) as Anvil dumps it."""
    return contracts.w3.provider.make_request("anvil_dumpState", [])["result"]


def load_state(node, state: str) -> Web3:
    w3 = Web3(Web3.HTTPProvider(node.rpc_url, request_kwargs={"timeout": 10}))
    answer = w3.provider.make_request("anvil_loadState", [state])
    assert answer.get("result") is True, answer
    return w3


@contextmanager
def private_chain(contracts, log_dir: Path, state: str | None = None) -> Iterator[tuple[object, object]]:
    """(node, contracts) on a fresh Anvil node holding a copy of the deployed chain."""
    from tributa.chain.contracts import bind
    from tributa.devnet import AnvilNode

    node = AnvilNode(log_path=log_dir / "private-anvil.log").start()
    try:
        w3 = load_state(node, state or chain_state(contracts))
        yield node, bind(w3, contracts.deployment)
    finally:
        node.stop()


def rpc(w3, method: str, *params):
    """A raw JSON-RPC call that must succeed (Anvil's test methods are not in web3's API)."""
    answer = w3.provider.make_request(method, list(params))
    assert "error" not in answer, f"{method}{params}: {answer['error']}"
    return answer.get("result")


def fail_task_call(escrow, task_id: int, reason: str):
    """escrow.fail_task(task_id, reason[, no agents to slash]), whichever arity the deployed ABI has."""
    inputs = next(e["inputs"] for e in escrow.abi if e.get("type") == "function" and e["name"] == "fail_task")
    return escrow.functions.fail_task(task_id, reason, *([[]] * (len(inputs) - 2)))


# Two small datasets whose texts share no span, for attribution tests.
ASTRO = (
    "The Moon orbits the Earth once every twenty seven days, and the same face of the Moon always "
    "points toward us because its spin is locked to its orbit by the pull of the Earth. "
) * 4
BAKING = (
    "Knead the dough on a floured table for ten minutes until it is smooth and springs back, then "
    "leave it covered in a warm place until it has doubled in size. "
) * 4
