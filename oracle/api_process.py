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
from dataclasses import dataclass, field
from multiprocessing.process import BaseProcess

from oracle.content import UploadLimits
from oracle.jobs import ACCEPT_WINDOW_S
from tributa.config import Settings

log = logging.getLogger("tributa.oracle.api")

_PR_SET_PDEATHSIG = 1

# Connection hygiene against clients that hold sockets (half-open, slowloris, floods):
# a connection must deliver a request's headers within HEADER_TIMEOUT_S of opening (or of its
# previous response); an idle keep-alive one closes after KEEP_ALIVE_S; past MAX_CONNECTIONS open
# sockets a new one is closed at once (so the fd limit is never reached), and past
# LIMIT_CONCURRENCY requests in flight uvicorn answers 503; headers are capped at MAX_HEADER_BYTES.
HEADER_TIMEOUT_S = 10.0
KEEP_ALIVE_S = 5
MAX_CONNECTIONS = 4096
LIMIT_CONCURRENCY = 2048
MAX_HEADER_BYTES = 16 * 1024
BACKLOG = 1024
# Repeats of one server log message (uvicorn's "Exceeded concurrency limit.", asyncio's accept
# errors such as "Too many open files") are logged once per LOG_REPEAT_S, with a count.
LOG_REPEAT_S = 10.0


class RepeatFilter(logging.Filter):
    """Lets a given message through once per `every_s`, then once more with how many were dropped."""

    def __init__(self, every_s: float = LOG_REPEAT_S) -> None:
        super().__init__()
        self.every_s = every_s
        self._last: dict[tuple[str, object], tuple[float, int]] = {}
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        import time

        key = (record.name, record.msg if isinstance(record.msg, str) else repr(record.msg))
        now = time.monotonic()
        with self._lock:
            last, dropped = self._last.get(key, (float("-inf"), 0))
            if now - last < self.every_s:
                self._last[key] = (last, dropped + 1)
                return False
            if len(self._last) > 1000:
                self._last.clear()
            self._last[key] = (now, 0)
        if dropped:
            record.msg = f"{record.msg} [{dropped} more like this in the last {self.every_s:g} s]"
        return True


def install_log_limits() -> RepeatFilter:
    """Rate-limit the server loggers that a flood of connections makes repeat themselves."""
    limit = RepeatFilter()
    for name in ("uvicorn.error", "asyncio"):
        logging.getLogger(name).addFilter(limit)
    return limit


def guarded_protocol(header_timeout_s: float = HEADER_TIMEOUT_S, max_connections: int = MAX_CONNECTIONS):
    """uvicorn's h11 protocol with a header-read timeout and a cap on open connections."""
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class GuardedH11Protocol(H11Protocol):
        _refused = False
        _header_timer = None
        _timed_cycle = None

        def connection_made(self, transport) -> None:
            if len(self.connections) >= max_connections:
                self._refused = True  # closed before a byte is read: the fd is freed at once
                transport.abort()
                return
            super().connection_made(transport)
            self._arm_header_timer()

        def connection_lost(self, exc) -> None:
            if self._refused:
                return
            self._cancel_header_timer()
            super().connection_lost(exc)

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            if self._header_timer is not None and self.cycle is not self._timed_cycle:
                self._cancel_header_timer()  # a new request's headers are in

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing() and (self.cycle is None or self.cycle.response_complete):
                self._arm_header_timer()

        def _arm_header_timer(self) -> None:
            self._cancel_header_timer()
            self._timed_cycle = self.cycle
            self._header_timer = self.loop.call_later(header_timeout_s, self._header_timeout)

        def _cancel_header_timer(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None

        def _header_timeout(self) -> None:
            self._header_timer = None
            if self.cycle is not self._timed_cycle and self.cycle is not None and not self.cycle.response_complete:
                return  # a request is being served
            if not self.transport.is_closing():
                self.transport.close()

    return GuardedH11Protocol


def connection_cap(wanted: int = MAX_CONNECTIONS) -> int:
    """MAX_CONNECTIONS, or fewer where the fd limit is low: three quarters of the soft
    RLIMIT_NOFILE (the rest is the database, the store, the RPC connection and logs), so that
    the process never runs out of descriptors however many sockets clients open."""
    try:
        import resource

        soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    except (ImportError, OSError, ValueError):
        return wanted
    if soft == resource.RLIM_INFINITY:
        return wanted
    return max(16, min(wanted, soft * 3 // 4))


def server_config(app, host: str, port: int, **overrides):
    """The uvicorn settings the job API runs with (hardened as above); tests start the same."""
    import uvicorn

    header_timeout_s = overrides.pop("header_timeout_s", HEADER_TIMEOUT_S)
    max_connections = overrides.pop("max_connections", None) or connection_cap()
    settings = dict(
        host=host,
        port=port,
        log_level="warning",
        log_config=None,  # keep the process's logging (tributa.logs: JSON lines), tracebacks included
        # A short graceful shutdown: long-polls end with 503 (the app sees should_exit), agents retry.
        timeout_graceful_shutdown=2,
        timeout_keep_alive=KEEP_ALIVE_S,
        limit_concurrency=min(LIMIT_CONCURRENCY, max_connections),
        backlog=BACKLOG,
        h11_max_incomplete_event_size=MAX_HEADER_BYTES,
        http=guarded_protocol(header_timeout_s, max_connections),
    )
    settings.update(overrides)
    return uvicorn.Config(app, **settings)


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
    accept_window_s: float = ACCEPT_WINDOW_S
    upload_limits: UploadLimits = field(default_factory=UploadLimits)
    ui_token: str | None = None  # the dashboard's (/ui); required when bound beyond loopback


class SharedClock:
    """The chain tip's timestamp, written by the worker and read by the API across the fork."""

    def __init__(self, initial: int) -> None:
        self._value = multiprocessing.get_context("fork").RawValue("q", initial)

    def set(self, timestamp: int) -> None:
        self._value.value = timestamp

    def __call__(self) -> int:
        return self._value.value


def start_api_process(spec: ApiSpec, clock: SharedClock, metrics_queue) -> BaseProcess:
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


def _open_parts(spec: ApiSpec, load_contracts, open_database, open_store, retry_s: float = 1.0):
    """The node's contracts, the database and the store, waiting out an outage of any of them:
    an API process restarted after a storage fault or during a node outage meets the same
    outage, and exiting would stop the oracle. One line when it starts waiting, one when done."""
    import time

    from oracle.outages import Outages, classify_outage

    outages = Outages("job API start", "waiting", log)
    while True:
        try:
            parts = load_contracts(spec.settings), open_database(spec.db_url), open_store(spec.settings.store_dir)
        except Exception as exc:
            outage = classify_outage(exc)
            if outage is None:
                raise
            outages.down(outage.kind, outage.message)
            time.sleep(retry_s)
            continue
        outages.up()
        return parts


def _serve(spec: ApiSpec, clock: SharedClock, metrics_queue, parent_pid: int) -> None:
    _die_with(parent_pid)
    # Ctrl-C reaches the whole group; the worker stops this process itself (SIGTERM), and uvicorn
    # installs its own handlers once it runs. Before that a KeyboardInterrupt would be a traceback.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM, signal.SIGINT})  # the worker's start-up mask
    import uvicorn

    from oracle.api import create_app
    from oracle.auth import RequestAuthenticator
    from oracle.content import ContentBook
    from oracle.db import Database
    from oracle.jobs import JobBook
    from oracle.metrics import OracleMetrics, apply_relayed
    from oracle.service import AgentDirectory
    from oracle.status import task_counts
    from tributa.chain.contracts import load_contracts
    from tributa.store import open_store

    contracts, db, store = _open_parts(spec, load_contracts, Database, open_store)
    metrics = OracleMetrics(task_counts=lambda: task_counts(db))
    threading.Thread(target=apply_relayed, args=(metrics, metrics_queue), name="metrics-relay", daemon=True).start()
    directory = AgentDirectory(contracts)
    escrow = contracts.escrow.address
    book = JobBook(
        db,
        store,
        contracts.chain_id,
        escrow,
        spec.lease_s,
        oracle_key=spec.oracle_key,
        agent_pubkey=directory.pubkey,
        accept_window_s=spec.accept_window_s,
    )
    auth = RequestAuthenticator(db, contracts.chain_id, escrow, directory.is_registered)
    from oracle.auth import BoundedCache

    # The directory caches every address it looks up; bound it (a never-seen address costs an
    # eth_call and one entry, evicted least recently used first).
    directory._cache = BoundedCache()
    server: list[uvicorn.Server] = []
    content = ContentBook(db, store, contracts, spec.upload_limits)
    from oracle.dashboard import OracleUi

    app = create_app(
        db,
        book,
        auth,
        store,
        directory,
        clock,
        spec.info,
        metrics,
        stopping=lambda: bool(server) and server[0].should_exit,
        content=content,
        ui=OracleUi(contracts, spec.host, spec.ui_token),
    )
    log.info("oracle serving jobs on http://%s:%s", spec.host, spec.port)
    install_log_limits()
    server.append(uvicorn.Server(server_config(app, spec.host, spec.port)))
    server[0].run()
