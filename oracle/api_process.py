"""The job API in a process of its own, forked from the oracle's worker.

One process held both before, and the worker's settlement passes (web3 and SQLAlchemy, pure
Python) and the API's requests took turns on one GIL: on a busy oracle an agent's request
queued behind a settlement. Now each has its own interpreter and core. They share nothing but
the database (every job transition is a transaction there already), the chain tip's timestamp
(a shared integer the worker refreshes) and a queue that carries the worker's metric updates
to the API, which serves /metrics.

The API process opens its own database engine, store and RPC connection after the fork (none of
those may be shared across one) and dies with the worker, so a killed oracle leaves nothing behind.
"""

from __future__ import annotations

import ctypes
import logging
import multiprocessing
import os
import signal
import threading
from dataclasses import dataclass

from tributa.config import Settings

log = logging.getLogger("tributa.oracle.api")

_PR_SET_PDEATHSIG = 1


@dataclass(frozen=True)
class ApiSpec:
    """What the API process needs from the worker's process, fixed at start."""

    settings: Settings
    db_url: str
    host: str
    port: int
    lease_s: float
    oracle_key: bytes
    info: dict


class SharedClock:
    """The chain tip's timestamp, written by the worker and read by the API across the fork."""

    def __init__(self, initial: int) -> None:
        self._value = multiprocessing.get_context("fork").RawValue("q", initial)

    def set(self, timestamp: int) -> None:
        self._value.value = timestamp

    def __call__(self) -> int:
        return self._value.value


def start_api_process(spec: ApiSpec, clock: SharedClock, metrics_queue) -> multiprocessing.Process:
    process = multiprocessing.get_context("fork").Process(
        target=_serve, args=(spec, clock, metrics_queue, os.getpid()), name="oracle-api", daemon=True
    )
    process.start()
    return process


def _die_with(parent_pid: int) -> None:
    """Ask Linux to SIGTERM this process when the worker dies (even by SIGKILL)."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass  # not Linux: the process group's signal (how the oracle is stopped) still reaches it
    if os.getppid() != parent_pid:  # the worker died before prctl took effect
        os._exit(0)


def _serve(spec: ApiSpec, clock: SharedClock, metrics_queue, parent_pid: int) -> None:
    _die_with(parent_pid)
    import uvicorn

    from oracle.api import create_app
    from oracle.auth import RequestAuthenticator
    from oracle.db import Database
    from oracle.jobs import JobBook
    from oracle.service import AgentDirectory
    from oracle.status import task_counts
    from tributa.chain.contracts import load_contracts
    from tributa.metrics import OracleMetrics, apply_relayed
    from tributa.store import open_store

    contracts = load_contracts(spec.settings)
    db = Database(spec.db_url)
    store = open_store(spec.settings.store_dir)
    metrics = OracleMetrics(task_counts=lambda: task_counts(db))
    threading.Thread(target=apply_relayed, args=(metrics, metrics_queue), name="metrics-relay", daemon=True).start()
    directory = AgentDirectory(contracts)
    escrow = contracts.escrow.address
    book = JobBook(db, store, contracts.chain_id, escrow, spec.lease_s, oracle_key=spec.oracle_key, agent_pubkey=directory.pubkey)
    auth = RequestAuthenticator(db, contracts.chain_id, escrow, directory.is_registered)
    app = create_app(db, book, auth, store, directory, clock, spec.info, metrics)
    log.info("oracle serving jobs on http://%s:%s", spec.host, spec.port)
    # A short graceful shutdown: long-polling agents retry, nothing is lost by closing their polls.
    config = uvicorn.Config(app, host=spec.host, port=spec.port, log_level="warning", timeout_graceful_shutdown=2)
    uvicorn.Server(config).run()
