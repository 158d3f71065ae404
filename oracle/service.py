"""The oracle process: ingestion and settlement in a worker thread, the job API in front."""

from __future__ import annotations

import logging
import multiprocessing
import signal
import threading
import time
from dataclasses import dataclass, field
from multiprocessing.process import BaseProcess

from eth_account.messages import encode_defunct
from web3 import Web3

from oracle.api_process import ApiSpec, SharedClock, start_api_process
from oracle.callbacks import REPLICAS as CALLBACK_REPLICAS
from oracle.callbacks import CallbackRelay
from oracle.content import UploadLimits
from oracle.db import Database, database_url
from oracle.ingest import Ingestor
from oracle.jobs import ACCEPT_WINDOW_S, JobBook
from oracle.metrics import RelayedMetrics
from oracle.outages import Outages, classify_outage
from oracle.rpc import Backoff, RpcUnavailable, describe, endpoint, is_transient
from oracle.settler import Attributor, FeePolicy, Settler
from oracle.stakes import StakeWatcher
from oracle.supervisor import RESTART_WINDOW_S, RESTARTS_PER_WINDOW, accept_stop_signals, exit_status
from oracle.txmanager import TxManager, TxPolicy
from oracle.verify import Reexecute
from tributa.chain.contracts import Contracts
from tributa.chain.tx import Signer
from tributa.config import Settings
from tributa.crypto import check_public_key_owner, public_key_of
from tributa.errors import ChainError
from tributa.store import open_store

log = logging.getLogger("tributa.oracle")

_SEED_MESSAGE = encode_defunct(text="tributa spot-check seed v1")


def chain_trouble(exc: BaseException) -> bool:
    """A pass stopped by the chain: the node refused (ChainError) or could not be reached at all
    (a raw transport error from a part that does not wrap it)."""
    return isinstance(exc, ChainError) or is_transient(exc)


class ChainClock:
    """The latest block's timestamp, refreshed by the worker loop (not per request) and shared
    with the API process."""

    def __init__(self, w3: Web3) -> None:
        self.w3 = w3
        self.shared = SharedClock(int(w3.eth.get_block("latest")["timestamp"]))
        self.backoff = Backoff("chain clock", log, maximum_s=5.0)

    def refresh(self, timestamp: int | None = None) -> int:
        """Take `timestamp` (the tip the ingestor just read), or ask the node.

        While the node is unreachable the clock keeps its last reading (chain time stands still,
        as it does when no block comes) and asks again with backoff: one log line when the
        outage starts, one with its length when the node answers again; never a raw web3 error."""
        if timestamp is None:
            if not self.backoff.ready():
                return self.shared()
            try:
                timestamp = int(self.w3.eth.get_block("latest")["timestamp"])
            except Exception as exc:
                if not is_transient(exc):
                    raise
                self.backoff.failed(exc, endpoint(self.w3))
                return self.shared()
        self.backoff.succeeded()
        self.shared.set(timestamp)
        return self.shared()

    def __call__(self) -> int:
        return self.shared()


class AgentDirectory:
    """On-chain agent registrations and bonded stake, cached briefly so polls cost no RPC.

    An agent whose bonded stake is below min_stake serves no model (as `serves_model` says
    on-chain), so it is leased nothing; the job book also sees stake events at once through
    oracle/stakes.py, without waiting for this cache.
    """

    MAX_ENTRIES = 10_000  # the oldest entry goes first: unknown addresses cannot grow it without bound

    def __init__(self, contracts: Contracts, ttl_s: float = 10.0) -> None:
        self.escrow = contracts.escrow
        self.ttl_s = ttl_s
        self._cache: dict[str, tuple[float, tuple[bool, set[int], int, int, int]]] = {}
        self._lock = threading.Lock()
        self._node_down_since: float | None = None

    def _lookup(self, agent: str) -> tuple[bool, set[int], int, int, int]:
        with self._lock:
            hit = self._cache.get(agent)
            if hit and hit[0] > time.monotonic():
                return hit[1]
        try:
            onchain = self.escrow.functions.agent(agent).call()
            stake, capacity, registered = onchain.stake, onchain.capacity, onchain.registered
            min_stake = self.escrow.functions.min_stake().call()
            models = set(self.escrow.functions.agent_models(agent).call()) if registered else set()
        except Exception as exc:
            if not is_transient(exc):
                raise
            return self._stale(agent, hit, exc)
        entry = (bool(registered), models, max(1, capacity), int(stake), int(min_stake))
        with self._lock:
            if self._node_down_since is not None:
                log.info(
                    "agent directory: RPC node reachable again after %.1fs", time.monotonic() - self._node_down_since
                )
                self._node_down_since = None
            self._cache.pop(agent, None)
            self._cache[agent] = (time.monotonic() + self.ttl_s, entry)
            while len(self._cache) > self.MAX_ENTRIES:
                self._cache.pop(next(iter(self._cache)))
        return entry

    def _stale(self, agent: str, hit, exc: BaseException) -> tuple[bool, set[int], int, int, int]:
        """While the node is away: the agent's last reading if there is one (so known agents keep
        polling through an outage), else RpcUnavailable. One log line per outage."""
        with self._lock:
            if self._node_down_since is None:
                self._node_down_since = time.monotonic()
                log.warning(
                    "agent directory: RPC node at %s unreachable (%s); serving cached registrations",
                    endpoint(self.escrow.w3),
                    describe(exc),
                )
        if hit is not None:
            return hit[1]
        raise RpcUnavailable(
            f"the oracle's RPC node is unreachable, so agent {agent}'s registration cannot be read; retry later"
        )

    def stake_shortfall(self, agent: str) -> str | None:
        """Why a registered agent may not lease (bonded stake below min_stake), or None."""
        registered, _, _, stake, min_stake = self._lookup(agent)
        if registered and stake < min_stake:
            return (
                f"agent {agent} has {stake} wei bonded, below min_stake {min_stake} wei: "
                f"it is leased nothing until it adds stake"
            )
        return None

    def is_registered(self, agent: str) -> bool:
        return self._lookup(agent)[0]

    def models(self, agent: str) -> set[int]:
        _registered, models, _, stake, min_stake = self._lookup(agent)
        return models if stake >= min_stake else set()

    def capacity(self, agent: str) -> int:
        return self._lookup(agent)[2]

    def pubkey(self, agent: str) -> bytes:
        """The agent's registered key, checked to be its own before anything is sealed to it."""
        key = bytes(self.escrow.functions.agent_pubkey(agent).call())
        check_public_key_owner(key, agent)
        return key


@dataclass
class OracleOptions:
    host: str = "127.0.0.1"
    port: int = 8700
    db_url: str | None = None
    lease_s: float = 120.0
    accept_window_s: float = ACCEPT_WINDOW_S
    agent_fee_bps: int = 5000
    max_batch: int = 50
    spot_check_fraction: float = 0.0
    # Seconds before a deadline when a task with fewer than k answers is decided with what it has.
    close_margin_s: int = 30
    upload_limits: UploadLimits = field(default_factory=UploadLimits)
    ui_token: str | None = None  # the dashboard's at /ui (oracle/dashboard.py)
    tx_policy: TxPolicy = field(default_factory=TxPolicy)  # fee bumps and cap of the oracle's transactions


class Oracle:
    # The job API's process, and when it was last restarted: set by run().
    _api: BaseProcess
    _api_restarts: list[float]

    def __init__(
        self,
        settings: Settings,
        contracts: Contracts,
        signer: Signer,
        options: OracleOptions,
        attributor: Attributor | None = None,
        reexecute: Reexecute | None = None,
    ) -> None:
        self.settings = settings
        self.contracts = contracts
        self.options = options
        self.db = Database(database_url(settings.data_dir, options.db_url))
        # Metric updates go to the API process, which serves /metrics.
        self.metrics_queue = multiprocessing.get_context("fork").Queue()
        self.metrics = RelayedMetrics(self.metrics_queue)
        self.store = open_store(settings.store_dir)
        self.clock = ChainClock(contracts.w3)
        # Indexes datasets as they are registered, in its own thread (oracle/attribution/indexer.py).
        self.indexer = getattr(attributor, "indexer", None)
        escrow = contracts.escrow.address
        # The worker's book only expires leases and closes due tasks; the API process leases.
        self.book = JobBook(
            self.db, self.store, contracts.chain_id, escrow, options.lease_s, accept_window_s=options.accept_window_s
        )
        self.txm = TxManager.for_signer(self.db, signer, options.tx_policy)
        # Contracts' requests through AIOracle, when the deployment has it (oracle/callbacks.py).
        self.callbacks = (
            CallbackRelay(self.db, contracts, self.txm, self.store, settings.confirmations, settings.max_log_blocks)
            if contracts.ai_oracle is not None
            else None
        )
        self.ingestor = Ingestor(
            self.db,
            contracts.escrow,
            contracts.deployment.block_number,
            settings.confirmations,
            settings.max_log_blocks,
            on_reorg=self.txm.reorged,
            replicas_by_requester={self.callbacks.address: CALLBACK_REPLICAS} if self.callbacks else None,
        )
        self.stakes = StakeWatcher(
            self.db,
            contracts.escrow,
            contracts.deployment.block_number,
            settings.confirmations,
            settings.max_log_blocks,
        )
        self.settler = Settler(
            self.db,
            contracts,
            self.txm,
            attributor,
            FeePolicy(options.agent_fee_bps),
            options.max_batch,
            store=self.store,
            reexecute=reexecute,
            spot_check_fraction=options.spot_check_fraction,
            # Derived from the oracle's key: agents cannot predict which tasks get re-run.
            spot_check_seed=bytes(signer.account.sign_message(_SEED_MESSAGE).signature),
            metrics=self.metrics,
            oracle_key=bytes(signer.account.key),
            callbacks=self.callbacks,
        )
        self.api_spec = ApiSpec(
            settings=settings,
            db_url=self.db.url,
            host=options.host,
            port=options.port,
            lease_s=options.lease_s,
            accept_window_s=options.accept_window_s,
            oracle_key=bytes(signer.account.key),
            upload_limits=options.upload_limits,
            ui_token=options.ui_token,
            info={
                "chain_id": contracts.chain_id,
                "escrow": escrow,
                "oracle": signer.address,
                # Requesters seal private inputs to this key (and check it is the deployment's oracle).
                "oracle_public_key": "0x" + public_key_of(bytes(signer.account.key)).hex(),
            },
        )
        self._stop = threading.Event()
        self._trouble: tuple[float, str] | None = None  # (since, error kind) while passes fail on the chain
        # The database or its disk (full, immutable, read-only): one line when passes start failing on
        # it, one when they complete again; the pass is retried meanwhile, as for the chain.
        self.storage = Outages("oracle pass", "retrying each pass, quiet", log)

    def step(self) -> None:
        """One pass of the worker loop; exceptions are logged and the loop goes on.

        While the node is away the job book's own work (expiring leases, closing due tasks on
        the last chain time read) still runs; the pass then stops with the chain's error."""
        stopped: BaseException | None = None
        try:
            self.txm.check_pending()
            self.ingestor.poll_once()
            if self.callbacks is not None:
                self.callbacks.poll_once()
        except Exception as exc:
            if not chain_trouble(exc):
                raise
            stopped = exc
        self.clock.refresh(self.ingestor.take_tip_timestamp())  # keeps its last reading while the node is away
        self.book.expire_leases()
        self.book.close_due(self.clock(), self.options.close_margin_s)
        if stopped is not None:
            raise stopped
        if self.txm.backoff.failures and self.txm.pending():
            # The node answers again, but the transaction manager has not caught up yet: what it
            # recorded during the outage (never broadcast) goes out on its next pass, before any
            # new transaction, else a later nonce would wait behind the gap.
            return
        self.stakes.poll_once()
        self.settler.settle_ready()
        # Tasks left SETTLING by a transaction that finished without settling them (not in flight).
        self.settler.recover(in_flight=self.txm.pending_task_ids("settle_batch") | self.txm.pending_task_ids("fulfill"))
        if self.callbacks is not None:
            self.callbacks.step(self.clock())
        self.settler.fail_pending(self.clock())
        self.settler.refund_due(self.clock())

    def _work(self) -> None:
        self._recover()
        while not self._stop.is_set():
            self._keep_api_up()
            try:
                self.step()
                self.storage.up()
                if not self._backing_off():  # a pass is complete only once no part skips its RPC work
                    self._chain_answers()
            except Exception as exc:
                if chain_trouble(exc):  # the node is away or refused: one line per outage, then retry
                    self.metrics.rpc_errors.inc()
                    self._chain_trouble(exc)
                elif (outage := classify_outage(exc)) is not None and outage.kind in ("disk", "database", "store"):
                    self.storage.down(outage.kind, outage.message)
                else:  # anything else is a bug worth a traceback, but not worth dying for
                    log.exception("oracle pass failed; retrying")
                self._stop.wait(1.0)
            self._stop.wait(self.settings.poll_interval_s)

    def _chain_trouble(self, exc: BaseException) -> None:
        """A pass stopped by the chain: one line when the trouble starts, then quiet (debug)
        until a pass completes again (`_chain_answers` logs how long it lasted)."""
        what = str(exc) if isinstance(exc, ChainError) else f"RPC node unreachable ({describe(exc)})"
        if self._trouble is None:
            log.warning("oracle pass stopped by the chain: %s; retrying each pass, quiet until it answers", what)
            self._trouble = (time.monotonic(), type(exc).__name__)
        else:
            log.debug("oracle pass stopped by the chain again: %s", what)

    def _backing_off(self) -> bool:
        parts = (self.ingestor, self.txm, self.clock)
        return any(getattr(getattr(part, "backoff", None), "failures", 0) for part in parts)

    def _chain_answers(self) -> None:
        if self._trouble is not None:
            log.info(
                "oracle passes complete again after %.1fs stopped by the chain", time.monotonic() - self._trouble[0]
            )
            self._trouble = None

    def _recover(self) -> None:
        """After a restart: finish the transactions in flight, then the tasks caught mid-settlement."""
        while not self._stop.is_set():
            try:
                self.txm.recover()
                self.settler.recover(
                    in_flight=self.txm.pending_task_ids("settle_batch") | self.txm.pending_task_ids("fulfill")
                )
                return
            except ChainError as exc:
                log.warning("recovery waits for the chain: %s", exc)
                self._stop.wait(2.0)

    def _keep_api_up(self) -> None:
        """Restart a job API process killed by a signal (SIGBUS from a storage fault, the OOM
        killer): it holds no state of its own. One that exited by itself (its port taken, bad
        settings) would only exit again, and so would one that keeps dying: the oracle stops."""
        api = self._api
        if api.is_alive():
            return
        recent = [t for t in self._api_restarts if time.monotonic() - t < RESTART_WINDOW_S]
        if api.exitcode is None or api.exitcode >= 0 or len(recent) >= RESTARTS_PER_WINDOW:
            raise ChainError(f"the oracle's job API process exited ({exit_status(api.exitcode)}); restart the oracle")
        log.warning("the job API process died (%s); starting a new one", exit_status(api.exitcode))
        self._api_restarts = [*recent, time.monotonic()]
        # A fresh metrics queue: the dead process may hold the old one's read lock for good.
        self.metrics_queue.cancel_join_thread()  # never block the worker's exit on its buffer
        self.metrics_queue.close()
        self.metrics_queue = multiprocessing.get_context("fork").Queue()
        self.metrics.retarget(self.metrics_queue)
        self._api = start_api_process(self.api_spec, self.clock.shared, self.metrics_queue)

    def run(self) -> None:
        """Serve the job API from a forked process and run the worker loop here until a signal."""
        self._api = start_api_process(self.api_spec, self.clock.shared, self.metrics_queue)
        self._api_restarts = []
        if self.indexer is not None:  # after the fork: the API process gets no copy of its thread
            self.indexer.start()
        stopped_by: list[int] = []

        def stop(signum, _frame) -> None:
            stopped_by.append(signum)
            self._stop.set()

        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, stop)
        accept_stop_signals()  # one that came during start-up is delivered now, to the handler above
        try:
            self._work()
        finally:
            self._stop.set()
            began = time.monotonic()
            if stopped_by:
                log.info("oracle stopping (%s): closing the job API", signal.Signals(stopped_by[0]).name)
            api = self._api
            if api.is_alive():
                api.terminate()  # SIGTERM: uvicorn closes its polls within its 2 s grace
            if self.indexer is not None:  # a build in progress stops at its next progress report
                self.indexer.stop(timeout_s=2.0)
            api.join(timeout=10)
            if api.is_alive():
                api.kill()
            if stopped_by:
                log.info("oracle stopped in %.1fs", time.monotonic() - began)
