"""The agent loop: poll the oracle, fetch the input by CID, run the model, sign, submit."""

from __future__ import annotations

import base64
import functools
import logging
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path

from compute_agent.client import JobClient, OracleRefused, OracleUnavailable, OversizedContent
from compute_agent.duties import Duty, DutyUnreadable, DutyWatcher, duty_for
from compute_agent.metrics import AgentMetrics
from compute_agent.slashes import SlashWatcher
from tributa import private
from tributa.ai_oracle import REQUESTED, posted_result, request_state
from tributa.catalog import MAX_BLOCK_BYTES, FolderRefused, LocalModel, ModelCatalog, fetch_folder
from tributa.chain.contracts import Contracts
from tributa.chain.eip712 import sign_lease, sign_result
from tributa.chain.tx import Signer
from tributa.crypto import CryptoError, decrypt_with
from tributa.errors import TributaError
from tributa.registry import ModelInfo, list_models, read_model
from tributa.runtime import sandbox
from tributa.runtime.executor import JobInputError, JobRunner
from tributa.runtime.jobs import parse_input
from tributa.runtime.worker import WorkerCrashed
from tributa.store import cid as cidlib
from tributa.store.cid import Cid
from tributa.store.errors import NotFound, StoreError
from tributa.verification.judge import Judge
from tributa.verification.local import claim_checker, committee_answer
from tributa.verification.params import model_params

log = logging.getLogger("tributa.agent")

# A job still running this long after its lease POSTs the signed acceptance (well inside the
# oracle's 15 s accept window); a quicker one sends it with its result, saving a request.
ACCEPT_AFTER_S = 1.0
# A job's accept, result or error report is retried while the oracle is unreachable or answers
# 5xx/429 (a restart, a node outage, a full disk), backing off from RETRY_INITIAL_S to
# RETRY_MAX_S (or as its Retry-After says, up to RETRY_MAX_S) for at most RETRY_FOR_S; a 4xx is
# the oracle's decision (e.g. 409: the lease expired), and the job is dropped.
RETRY_INITIAL_S = 0.5
RETRY_MAX_S = 10.0
RETRY_FOR_S = 180.0
# Polls back off the same way while the oracle is away, up to POLL_BACKOFF_MAX_S between tries.
POLL_BACKOFF_MAX_S = 5.0
# Committee duties found on-chain answered at once, beside the jobs (each re-executes and rescores).
MAX_DUTIES_IN_FLIGHT = 2
# The most a posted output named by its CID is read of (a generation's canonical JSON is far smaller).
MAX_POSTED_OUTPUT_BYTES = 16 * 2**20
# A posted CID output still unavailable this close to the committee deadline is judged wrong.
WITHHELD_OUTPUT_S = 300
# Own runs kept for duties being retried (a re-execution is not repeated per try).
MAX_DUTIES_KEPT = 16


def backoff_delay(failures: int, maximum_s: float, hint_s: float | None = None) -> float:
    """The wait before try `failures + 1`: the server's Retry-After if it gave one, else
    exponential from RETRY_INITIAL_S; never more than maximum_s."""
    if hint_s is not None:
        return min(maximum_s, max(0.05, hint_s))
    return min(maximum_s, RETRY_INITIAL_S * 2 ** max(0, failures - 1))


# A fetched adapter folder may hold at most this many bytes of files (LoRA adapters are MBs to
# a few hundred MB; a full fine-tune is a model of its own, registered as a base).
MAX_ADAPTER_BYTES = 4 * 2**30
# A fetch that failed for this copy (not for the registered content) is tried again by a job
# this long after; the jobs in between fail at once with the same reason.
REFETCH_AFTER_S = 30.0


class AdapterRefused(TributaError):
    """A registered adapter this agent will not serve: its fetched folder failed a check, or it
    could not be fetched. `everywhere`: the registered content itself is at fault, so every agent
    refuses it (the job is reported as bad input: the task fails and is refunded); otherwise the
    job goes back to the pool for another agent."""

    def __init__(self, message: str, everywhere: bool) -> None:
        super().__init__(" ".join(message.split())[:400])  # one line, whatever a server said
        self.everywhere = everywhere


class AdapterCache:
    """Registered adapters this agent lacks, fetched by CID into `root` (under its data dir) and
    added to the catalog, from which the serving worker loads them into its LRU by path.

    Fetched lazily, by the first job that names an adapter, rather than at start-up: that is
    what "just in time" asks; start-up stays as fast as the base folders allow, and disk and
    bandwidth go only to adapters some task uses (a base may carry hundreds). The price, one
    fetch's latency on that first job, is paid once per adapter; concurrent jobs wait on one fetch.

    Blocks come from the agent's own content store when it holds them, else from the oracle's
    /v1/blocks; each is re-hashed against its CID, the rebuilt folder must re-hash to the
    registered CID (digest) and pass tributa/ml/folder_check.py. A refused folder is removed and
    never replaced by anything: the jobs needing it are reported as errors."""

    def __init__(self, catalog: ModelCatalog, store, root: Path, max_bytes: int = MAX_ADAPTER_BYTES) -> None:
        self.catalog = catalog
        self.store = store
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._fetching: dict[bytes, Future[LocalModel]] = {}
        self._refused: dict[bytes, tuple[AdapterRefused, float]] = {}  # digest -> (why, when)

    def ensure(self, digest: bytes, remote: Callable[[Cid], bytes]) -> LocalModel:
        """The adapter's local folder, fetched now (with `remote(cid)` for blocks this agent's
        store lacks) unless held; AdapterRefused if it may not be served."""
        digest = bytes(digest)
        held = self.catalog.get(digest)
        if held is not None:
            return held
        with self._lock:
            refused = self._refused.get(digest)
            if refused is not None and (refused[0].everywhere or time.monotonic() - refused[1] < REFETCH_AFTER_S):
                raise refused[0]
            future = self._fetching.get(digest)
            mine = future is None
            if future is None:
                future = self._fetching[digest] = Future()
        if not mine:
            return future.result()
        cid = str(cidlib.digest_to_cid(digest))
        try:
            model = self._obtain(digest, cid, remote)
        except AdapterRefused as exc:
            log.warning("adapter %s refused: %s", cid, exc)
            with self._lock:
                self._refused[digest] = (exc, time.monotonic())
            future.set_exception(exc)
            raise
        except BaseException as exc:
            future.set_exception(exc)
            raise
        finally:
            with self._lock:
                self._fetching.pop(digest, None)
        with self._lock:
            self._refused.pop(digest, None)
        future.set_result(model)
        return model

    def _obtain(self, digest: bytes, cid: str, remote: Callable[[Cid], bytes]) -> LocalModel:
        final = self.root / cid
        if final.exists():  # fetched by an earlier run: checked again, like a --model-dir folder
            try:
                model = self.catalog.add_fetched(final, digest)
                log.info("adapter %s: using the copy fetched earlier (%s)", cid, final)
                return model
            except FolderRefused as exc:
                log.warning("adapter %s: the copy fetched earlier fails its check (%s); fetching it again", cid, exc)
                shutil.rmtree(final, ignore_errors=True)
        started = time.monotonic()
        counts = {"local": 0, "oracle": 0}
        staging: Path | None = None
        try:
            staging = Path(tempfile.mkdtemp(prefix=".fetch-", dir=self.root))
            fetch_folder(
                lambda block: self._read_block(block, remote, counts), cid, staging / "folder", max_bytes=self.max_bytes
            )
            (staging / "folder").rename(final)
            try:
                model = self.catalog.add_fetched(final, digest)
            except FolderRefused:
                shutil.rmtree(final, ignore_errors=True)
                raise
        except FolderRefused as exc:
            raise AdapterRefused(str(exc), exc.everywhere) from None
        except OSError as exc:  # this agent's disk: full, read-only, or the cache dir gone
            raise AdapterRefused(
                f"cannot write it to the adapter cache {self.root}: {exc.strerror or exc}", everywhere=False
            ) from None
        finally:
            if staging is not None:
                shutil.rmtree(staging, ignore_errors=True)
        log.info(
            "adapter %s fetched in %.2fs (%d blocks from this agent's store, %d from the oracle) into %s",
            cid,
            time.monotonic() - started,
            counts["local"],
            counts["oracle"],
            final,
        )
        return model

    def _read_block(self, block: Cid, remote: Callable[[Cid], bytes], counts: dict[str, int]) -> bytes:
        read_local = getattr(self.store, "read", None)
        if read_local is not None:
            try:
                data = read_local(block)  # re-hashed by the store; fetch_folder checks it again
                counts["local"] += 1
                return data
            except StoreError:  # absent, or a damaged copy the store just set aside
                pass
        try:
            data = remote(block)  # retried while the oracle is away or answers 503 (Agent._retrying)
        except (OracleRefused, OracleUnavailable, OversizedContent) as exc:  # 404, or away for too long
            raise FolderRefused(f"block {block}: {exc}") from None
        counts["oracle"] += 1
        return data


@dataclass(frozen=True)
class JobOutcome:
    job_id: int
    task_id: int
    ok: bool
    result_cid: str | None = None
    error: str | None = None
    seconds: float = 0.0


class Agent:
    def __init__(
        self,
        contracts: Contracts,
        signer: Signer,
        catalog: ModelCatalog,
        client: JobClient,
        store,
        executor: JobRunner | None,
        metrics: AgentMetrics | None = None,
        capacity: int = 1,
        adapters: AdapterCache | None = None,
    ) -> None:
        """`adapters`: where registered adapters missing from the catalog are fetched to; None:
        this agent serves only models whose every adapter is in its catalog."""
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self.contracts = contracts
        self.signer = signer
        self.catalog = catalog
        self.client = client
        self.store = store
        self.executor = executor
        self._models: dict[int, ModelInfo] = {}
        self.metrics = metrics or AgentMetrics()
        self.capacity = capacity  # jobs in flight at once: what the engine gets to batch
        self.adapters = adapters
        self._stop = threading.Event()  # run()'s: retries give up when it is set
        self._poll_failures = 0
        self._poll_down_since: float | None = None
        self.outcomes: list = []  # the last run()'s finished jobs
        self.slash_watcher: SlashWatcher | None = None  # logs and counts this agent's slashes (bootstrap sets it)
        # Challenges this agent must judge, read on-chain (bootstrap sets it).
        self.duty_watcher: DutyWatcher | None = None
        self._duty_lock = threading.Lock()
        self._post_lock = threading.Lock()
        self._own_outputs: dict[int, bytes] = {}  # request id -> this member's run, kept across a duty's tries
        self._not_requests: set[int] = set()  # task ids AIOracle has no request for
        self._duty_answers: dict[int, Future[bytes]] = {}  # request id -> the output this member signs

    def servable_models(self) -> list[int]:
        """Registered, active models whose base weights this agent holds, and their adapters too
        unless it fetches missing ones (`adapters`)."""
        served = []
        for model in list_models(self.contracts.registry):
            if model.active and self._local_parts(model) is not None:
                self._models[model.model_id] = model
                served.append(model.model_id)
        return served

    def model_parts(self, model_id: int) -> tuple[LocalModel, list[LocalModel]]:
        """The model's base and the adapters held now (what start-up preloads; others are fetched
        when a job names them)."""
        parts = self._local_parts(self._model(model_id))
        if parts is None:
            raise TributaError(f"this agent holds no copy of model {model_id}")
        return parts

    def missing_adapters(self, model_id: int) -> list[str]:
        """CIDs of the model's registered adapters not held now."""
        model = self._model(model_id)
        return [str(cidlib.digest_to_cid(d)) for d in model.adapter_digests if self.catalog.get(d) is None]

    def _local_parts(self, model: ModelInfo) -> tuple[LocalModel, list[LocalModel]] | None:
        base = self.catalog.get(model.weights_digest)
        adapters = [self.catalog.get(d) for d in model.adapter_digests]
        if base is None or (self.adapters is None and any(a is None for a in adapters)):
            return None
        return base, [a for a in adapters if a is not None]

    def _job_adapters(self, model: ModelInfo, base: LocalModel, input_bytes: bytes, job_id: int) -> list[LocalModel]:
        """The adapters to hand the runtime for this job, in registered order: those held, plus
        the one the job asks for (its "adapter" CID; no field: the model's first), fetched now if
        this agent lacks it. A job for the bare base (null), or for an embedding model, fetches
        nothing. AdapterRefused if the adapter it needs may not be served."""
        held = [self.catalog.get(d) for d in model.adapter_digests]
        if all(a is not None for a in held) or self.adapters is None or base.kind != "generate":
            return [a for a in held if a is not None]
        payload = parse_input(input_bytes)  # JobInputError: the task's input is bad
        cids = [str(cidlib.digest_to_cid(d)) for d in model.adapter_digests]
        if "adapter" not in payload:
            wanted = 0 if cids else None
        elif payload["adapter"] is None:
            wanted = None
        elif isinstance(payload["adapter"], str) and payload["adapter"] in cids:
            wanted = cids.index(payload["adapter"])
        else:  # as the runtime would say, naming every registered adapter, not only those held
            raise JobInputError(
                f'"adapter" {payload["adapter"]!r} is not one of this model\'s adapters: '
                f"{', '.join(cids) or 'none (only the base, with null)'}"
            )
        if wanted is not None and held[wanted] is None:
            remote = lambda block: self._retrying(  # noqa: E731
                f"adapter block {block} fetch", job_id, lambda: self.client.fetch_block(str(block), MAX_BLOCK_BYTES)
            )
            held[wanted] = self.adapters.ensure(model.adapter_digests[wanted], remote)
        return [a for a in held if a is not None]

    def _model(self, model_id: int) -> ModelInfo:
        if model_id not in self._models:
            self._models[model_id] = read_model(self.contracts.registry, model_id)
        return self._models[model_id]

    def fetch_input(self, input_cid: str, job_id: int | None = None, max_bytes: int | None = None) -> bytes:
        """From the local store if it holds the CID, else the oracle's gateway (retried while it
        is away or answers 503; at most `max_bytes`), re-hashed here."""
        try:
            if self.store.has(input_cid):
                return self.store.get_bytes(input_cid)
        except StoreError:
            pass
        data = self._retrying("input fetch", job_id, lambda: self.client.fetch_content(input_cid, max_bytes))
        if str(self.store.cid_of(data)) != input_cid:
            raise StoreError(f"content served for {input_cid} does not hash to that CID")
        return data

    def inline_input(self, offer: dict) -> bytes:
        """A small public input sent with the offer, re-hashed here against its CID."""
        data = base64.b64decode(offer["input_b64"])
        if str(self.store.cid_of(data)) != offer["input_cid"]:
            raise StoreError(f"the input sent with the offer does not hash to {offer['input_cid']}")
        return data

    def _job_input(self, offer: dict) -> bytes:
        """A public job's input (sent with the offer, or fetched by CID); a private one as the
        oracle sealed it to this agent, opened here.

        The agent's key never leaves this process: a job process gets the plaintext it has to
        compute on, nothing that could open other tasks' inputs or sign as the agent."""
        if offer.get("input_b64"):
            return self.inline_input(offer)
        if not offer.get("input_envelope_b64"):
            return self.fetch_input(offer["input_cid"], offer.get("job_id"))
        envelope = base64.b64decode(offer["input_envelope_b64"])
        where = private.Deployment(self.contracts.chain_id, self.contracts.escrow.address)
        requester = self.contracts.escrow.functions.task(offer["task_id"]).call().requester
        context = private.job_input_context(where, requester, offer["task_id"])
        try:
            return decrypt_with(bytes(self.signer.account.key), envelope, context)
        except CryptoError as exc:
            raise JobInputError(f"the sealed input does not open with this agent's key: {exc}") from None

    def _retrying(self, what: str, job_id: int | None, call):
        """`call()`, tried again while the oracle is away or answers 5xx/429, with capped
        exponential backoff (or its Retry-After) for at most RETRY_FOR_S; a 4xx raises at once."""
        give_up = time.monotonic() + RETRY_FOR_S
        failures = 0
        while True:
            try:
                result = call()
            except (OracleUnavailable, OracleRefused) as exc:
                if isinstance(exc, OracleRefused) and not exc.transient:
                    raise
                failures += 1
                delay = backoff_delay(failures, RETRY_MAX_S, getattr(exc, "retry_after_s", None))
                if time.monotonic() + delay > give_up or self._stop.is_set():
                    raise
                if failures == 1:
                    log.warning(
                        "job %s: %s failed (%s); retrying with backoff for up to %.0fs", job_id, what, exc, RETRY_FOR_S
                    )
                self.metrics.poll_errors.inc()
                self._stop.wait(delay)
                continue
            if failures:
                log.info("job %s: %s went through after %d retries", job_id, what, failures)
            return result

    def handle(self, offer: dict) -> JobOutcome:
        try:
            outcome = self._handle(offer)
        except OracleRefused as exc:  # the oracle's decision on this job (a 409 past its lease): drop it
            log.warning("job %s (task %s) dropped: %s", offer.get("job_id"), offer.get("task_id"), exc)
            outcome = JobOutcome(offer.get("job_id", -1), offer.get("task_id", -1), False, error=str(exc))
        except Exception as exc:  # the oracle vanished for good mid-job, or a bug: this job is lost, not the agent  # noqa: BLE001
            log.warning("job %s (task %s): %s: %s", offer.get("job_id"), offer.get("task_id"), type(exc).__name__, exc)
            outcome = JobOutcome(
                offer.get("job_id", -1), offer.get("task_id", -1), False, error=f"{type(exc).__name__}: {exc}"
            )
        self.metrics.jobs.labels("done" if outcome.ok else "failed").inc()
        self.metrics.job_seconds.observe(outcome.seconds)
        return outcome

    def _handle(self, offer: dict) -> JobOutcome:
        started = time.perf_counter()
        job_id, task_id = offer["job_id"], offer["task_id"]
        duty, refusal = self._duty_of_offer(task_id)
        if refusal is not None:  # never a signature on a request that is not awaiting one from this agent
            log.warning("job %s (task %s) refused: %s", job_id, task_id, refusal)
            self._report_error(job_id, "runtime", refusal)
            return JobOutcome(job_id, task_id, False, error=refusal, seconds=time.perf_counter() - started)
        model = self._model(duty.model_id if duty is not None else offer["model_id"])
        parts = self._local_parts(model)
        if parts is None:
            self._report_error(job_id, "runtime", f"agent lacks the weights of model {model.model_id}")
            return JobOutcome(job_id, task_id, False, error="model not held")
        base = parts[0]
        # Accept the lease before any work: signed here, in the agent process (never in a job
        # process). The acceptance is POSTed if the job runs past ACCEPT_AFTER_S, else it rides
        # with the result (one request per job less); either way the oracle has it long before
        # the lease could expire, so the agent can be slashed if it goes silent.
        lease_signature = sign_lease(
            self.signer.account,
            self.contracts.chain_id,
            self.contracts.escrow.address,
            task_id,
            int(offer["lease_expires_at"]),
        )
        accepted = self._accept_later(job_id, lease_signature)
        try:
            # A challenged request's model and input are those on-chain, whatever the offer says.
            input_bytes = duty.input_bytes if duty is not None else self._job_input(offer)
            adapters = self._job_adapters(model, base, input_bytes, job_id)
            fetched = time.perf_counter()
            if duty is not None:  # the same answer the agent's own duty watcher gives, run once
                output = self._committee_verdict(task_id, lambda: self._answer_duty(duty, model, base, adapters))
            else:
                output = self._runner.run(base, adapters, input_bytes, model.serving.max_new_tokens)
            ran = time.perf_counter()
        except AdapterRefused as exc:  # never served with a substitute: the job is an error
            kind = "input" if exc.everywhere else "runtime"
            log.warning("job %s (task %s) not run: adapter refused (%s)", job_id, task_id, exc)
            self._accepted(accepted, job_id, task_id)
            self._report_error(job_id, kind, f"adapter refused: {exc}")
            return JobOutcome(job_id, task_id, False, error=str(exc), seconds=time.perf_counter() - started)
        except (NotFound, JobInputError) as exc:
            log.warning("job %s (task %s): bad input: %s", job_id, task_id, exc)
            self._accepted(accepted, job_id, task_id)
            self._report_error(job_id, "input", str(exc))
            return JobOutcome(job_id, task_id, False, error=str(exc), seconds=time.perf_counter() - started)
        except Exception as exc:  # a crashing model fails its job, never the agent
            if isinstance(exc, WorkerCrashed):  # a limit or a dying worker: the reason says it all
                log.warning("job %s (task %s) failed: %s", job_id, task_id, exc)
            else:
                log.exception("job %s (task %s) failed", job_id, task_id)
            self._accepted(accepted, job_id, task_id)
            self._report_error(job_id, "runtime", f"{type(exc).__name__}: {exc}")
            return JobOutcome(job_id, task_id, False, error=str(exc), seconds=time.perf_counter() - started)
        result_cid = str(self.store.cid_of(output))
        digest = cidlib.cid_to_digest(result_cid)
        signature = sign_result(
            self.signer.account, self.contracts.chain_id, self.contracts.escrow.address, task_id, digest
        )
        signed = time.perf_counter()
        refused = self._accepted(accepted, job_id, task_id)
        if refused is not None:
            return JobOutcome(job_id, task_id, False, error=refused, seconds=time.perf_counter() - started)
        if duty is not None:
            self._post_verdict(task_id, digest, signature)
        self._retrying("submit", job_id, lambda: self.client.submit(job_id, output, digest, signature, lease_signature))
        done = time.perf_counter()
        seconds = done - started
        log.info(
            "job %s (task %s) done in %.3fs (fetch %.3f, run %.3f, sign %.3f, submit %.3f): %s",
            job_id,
            task_id,
            seconds,
            fetched - started,
            ran - fetched,
            signed - ran,
            done - signed,
            result_cid,
        )
        return JobOutcome(job_id, task_id, True, result_cid=result_cid, seconds=seconds)

    def _duty_of_offer(self, task_id: int) -> tuple[Duty | None, str | None]:
        """(the committee duty, None) for a challenged request this agent must judge, (None, None)
        for an ordinary task, or (None, why not) for an AIOracle request that awaits no result
        from this agent: the oracle's offer decides none of it, the chain does."""
        if self.contracts.ai_oracle is None or task_id in self._not_requests:
            return None, None
        state = request_state(self.contracts, task_id)
        if state == 0:  # no AIOracle request, now or ever: asked once per task
            self._not_requests.add(task_id)
        if state in (0, REQUESTED):  # not a request, or one awaiting its answer: an ordinary job
            return None, None
        try:
            duty = duty_for(self.contracts, self.signer.address, task_id, answered_too=True)
        except DutyUnreadable as exc:
            return None, f"committee duty unreadable on-chain now: {exc}"
        if duty is None:
            return (
                None,
                f"AIOracle request {task_id} awaits no result from this agent (state {state}, and it is not on its committee)",
            )
        return duty, None

    def answer_duty(self, duty: Duty) -> JobOutcome:
        """Answer a committee duty found on-chain (DutyWatcher): re-execute the request's on-chain
        input and post the verdict on-chain; no oracle involved. One that fails goes back to the
        watcher, which tries it again until the committee deadline."""
        started = time.perf_counter()
        rid = duty.request_id
        try:
            model = self._model(duty.model_id)
            parts = self._local_parts(model)
            if parts is None:
                raise TributaError(f"this agent holds no copy of model {duty.model_id}")
            adapters = self._job_adapters(model, parts[0], duty.input_bytes, -1)
            output = self._committee_verdict(rid, lambda: self._answer_duty(duty, model, parts[0], adapters))
            digest = cidlib.cid_to_digest(str(self.store.cid_of(output)))
            signature = sign_result(
                self.signer.account, self.contracts.chain_id, self.contracts.escrow.address, rid, digest
            )
            if not self._post_verdict(rid, digest, signature):
                raise TributaError("the verdict could not be posted on-chain")
        except Exception as exc:  # noqa: BLE001 -- the duty waits for another try, never the agent
            # A limit, an oversized output or a bad input would only fail the same way again.
            again = not isinstance(exc, (sandbox.JobLimitExceeded, OversizedContent, JobInputError))
            if self.duty_watcher is not None:
                self.duty_watcher.failed(rid, f"{type(exc).__name__}: {exc}", again)
            return JobOutcome(
                -1, rid, False, error=f"{type(exc).__name__}: {exc}", seconds=time.perf_counter() - started
            )
        return JobOutcome(
            -1, rid, True, result_cid=str(self.store.cid_of(output)), seconds=time.perf_counter() - started
        )

    def _committee_verdict(self, task_id: int, answer: Callable[[], bytes]) -> bytes:
        """`answer()` once per challenged request, whether the oracle's lease or the agent's own
        duty watcher asks first; the other waits for it and gets the same output. A failed
        answer is not kept: the next ask tries again."""
        with self._duty_lock:
            pending = self._duty_answers.get(task_id)
            mine = pending is None
            if pending is None:
                pending = self._duty_answers[task_id] = Future()
        if mine:
            try:
                pending.set_result(answer())
            except BaseException as exc:  # noqa: BLE001
                with self._duty_lock:
                    del self._duty_answers[task_id]
                pending.set_exception(exc)
        return pending.result()

    def _answer_duty(self, duty: Duty, model: ModelInfo, base: LocalModel, adapters: list[LocalModel]) -> bytes:
        """What this member signs: the posted output when the acceptance rule accepts it beside its
        own run (an honest answer from other hardware is upheld), else its own. Whatever keeps it
        from judging the posted output raises: no verdict rather than a vote against; but a posted
        CID whose bytes nobody serves by the last WITHHELD_OUTPUT_S of the committee window is
        judged as the wrong answer it cannot be shown not to be (else an absent oracle would
        silence the committee)."""
        rid = duty.request_id
        if rid not in self._own_outputs:
            self._own_outputs[rid] = self._runner.run(base, adapters, duty.input_bytes, model.serving.max_new_tokens)
            while len(self._own_outputs) > MAX_DUTIES_KEPT:
                self._own_outputs.pop(next(iter(self._own_outputs)))
        own = self._own_outputs[rid]
        posted = posted_result(self.contracts, rid)
        if posted is None:
            raise DutyUnreadable(f"request {rid}: no posted result found")
        try:
            claimed = posted.output_bytes(lambda cid: self.fetch_input(cid, None, MAX_POSTED_OUTPUT_BYTES))
        except (TributaError, StoreError) as exc:
            if time.time() < duty.resolve_by - WITHHELD_OUTPUT_S:
                raise
            log.warning(
                "request %s: the posted output's bytes are still unavailable (%s): this run's output signed", rid, exc
            )
            return own
        params = model_params(self.contracts.registry, model.model_id)
        judge = Judge(
            params,
            claim_checker(
                base,
                adapters,
                duty.input_bytes,
                model.serving.max_new_tokens,
                params.logit_margin,
                run_callable=self._rescore_in,  # else in this process, on a float32 CPU copy
            ),
        )
        return committee_answer(claimed, own, judge)

    def _post_verdict(self, task_id: int, digest: bytes, signature: bytes) -> bool:
        """Post this member's verdict on-chain itself (AICommittee.post_verdict), so that it counts
        and proves the member answered whatever the oracle does with it; paid from the agent's own
        balance. Sent before the result goes to the oracle, which may resolve as soon as it holds
        a quorum. Whether the verdict is on-chain now (a failure is logged, never raised)."""
        if self.contracts.committee is None:
            log.warning("task %s: committee verdict not posted on-chain: no AICommittee in this deployment", task_id)
            return False
        committee = self.contracts.committee.functions
        try:
            with self._post_lock:  # the lease and the duty watcher may both answer: one transaction
                if committee.posted_digest(task_id, self.signer.address).call() != bytes(32):
                    return True
                tx = self.signer.transact(
                    committee.post_verdict(task_id, digest, signature), action="committee.post_verdict"
                )
            log.info("task %s: committee verdict posted on-chain in %s", task_id, tx.tx_hash)
            return True
        # A revert (e.g. past the committee deadline) or the node away: never the job's failure.
        except Exception as exc:  # noqa: BLE001
            log.warning("task %s: committee verdict not posted on-chain: %s", task_id, exc)
            return False

    @property
    def _runner(self) -> JobRunner:
        if self.executor is None:
            raise TributaError("this agent has no executor yet (bootstrap sets it once the models load)")
        return self.executor

    @property
    def _rescore_in(self):
        """Where a claim is rescored: a sandbox of its own, under this agent's worker limits, when
        this agent's jobs run in one; else None (in this process, on a float32 CPU copy)."""
        run_callable = getattr(self.executor, "run_callable", None)  # a SandboxedExecutor's
        if run_callable is not None:
            return run_callable
        template = getattr(self.executor, "template", None)  # a ServingEngine's worker template
        if template is None or getattr(template, "isolation", None) != "bwrap":
            return None
        limits = sandbox.SandboxLimits(
            memory_mb=max(template.memory_mb or 0, sandbox.SandboxLimits.memory_mb),
            wall_seconds=template.batch_timeout_s or sandbox.SandboxLimits.wall_seconds,
        )
        return functools.partial(sandbox.run_callable, limits=limits)

    def _report_error(self, job_id: int, kind: str, message: str) -> None:
        self._retrying("error report", job_id, lambda: self.client.report_error(job_id, kind, message))

    def _accept_later(self, job_id: int, lease_signature: bytes) -> Future:
        """POST the acceptance after ACCEPT_AFTER_S unless `_accepted` cancels it first."""
        accepted: Future = Future()

        def send() -> None:
            if not accepted.set_running_or_notify_cancel():
                return  # the job finished first: the signature goes with its result
            try:
                accepted.set_result(
                    self._retrying("accept", job_id, lambda: self.client.accept(job_id, lease_signature))
                )
            except BaseException as exc:  # noqa: BLE001
                accepted.set_exception(exc)

        timer = threading.Timer(ACCEPT_AFTER_S, send)
        timer.daemon = True
        timer.start()
        return accepted

    @staticmethod
    def _accepted(accepted: Future, job_id: int, task_id: int) -> str | None:
        """None once the acceptance was taken (or was never sent), else why the oracle refused it."""
        if accepted.cancel():
            return None
        try:
            accepted.result()
            return None
        except TributaError as exc:
            log.warning("job %s (task %s): lease not accepted: %s", job_id, task_id, exc)
            return str(exc)

    def _check_slashes(self) -> None:
        if self.slash_watcher is None:
            return
        try:
            self.slash_watcher.check()
        except Exception as exc:  # a node hiccup must not stop the agent: checked again later  # noqa: BLE001
            log.debug("slash check failed: %s", exc)

    def _due_duties(self, busy: set[int], room: int) -> list[Duty]:
        if self.duty_watcher is None or room < 1:
            return []
        try:
            return self.duty_watcher.due(busy, room)
        except Exception as exc:  # a node hiccup must not stop the agent: checked again later  # noqa: BLE001
            log.debug("duty check failed: %s", exc)
            return []

    def run(
        self, max_jobs: int | None = None, stop: threading.Event | None = None, wait_s: float = 20.0
    ) -> list[JobOutcome]:
        """Poll and run jobs until `stop` is set or `max_jobs` have been leased.

        Up to `capacity` jobs run at once, each on its own thread; a poll leases as many as
        there is room for, so jobs leased together reach the serving engine together and run
        as one batch."""
        stop = stop or threading.Event()
        self._stop = stop
        # Kept on the agent: after Ctrl-C interrupts this loop, the caller still has the tally.
        outcomes: list[JobOutcome] = []
        self.outcomes = outcomes
        running: set[Future] = set()
        leased = 0

        def collect(done: set[Future]) -> None:
            running.difference_update(done)
            outcomes.extend(f.result() for f in done)  # handle() never raises

        duties: dict[Future, int] = {}  # committee duties found on-chain, in flight -> their request

        with (
            ThreadPoolExecutor(self.capacity, thread_name_prefix="job") as pool,
            ThreadPoolExecutor(MAX_DUTIES_IN_FLIGHT, thread_name_prefix="duty") as duty_pool,
        ):
            while not stop.is_set() and (max_jobs is None or leased < max_jobs):
                collect({f for f in running if f.done()})
                for done in [f for f in duties if f.done()]:
                    del duties[done]
                # Duties have their own threads: a burst of challenges never stops the jobs.
                for duty in self._due_duties(set(duties.values()), MAX_DUTIES_IN_FLIGHT - len(duties)):
                    duties[duty_pool.submit(self.answer_duty, duty)] = duty.request_id
                room = self.capacity - len(running)
                if room == 0:
                    collect(wait(running, timeout=1.0, return_when=FIRST_COMPLETED).done)
                    continue
                if max_jobs is not None:
                    room = min(room, max_jobs - leased)
                offers = self._poll(room, wait_s, stop)
                self._check_slashes()
                for offer in offers:
                    running.add(pool.submit(self.handle, offer))
                leased += len(offers)
            collect(wait(running).done)
            wait(duties)
        return outcomes

    def _poll(self, room: int, wait_s: float, stop: threading.Event) -> list[dict]:
        """One long-poll. While the oracle is away (or answers 5xx/429, or refuses this agent),
        polls back off exponentially up to POLL_BACKOFF_MAX_S (or as Retry-After says): one log
        line when the trouble starts, one with its length when a poll goes through again."""
        try:
            offers = self.client.poll_many(room, wait_s=wait_s)
        except Exception as exc:  # never the loop's end: an unreachable oracle, a refusal, a garbled answer  # noqa: BLE001
            self._poll_failures += 1
            hint = exc.retry_after_s if isinstance(exc, OracleRefused) else None
            delay = backoff_delay(self._poll_failures, POLL_BACKOFF_MAX_S, hint)
            if isinstance(exc, OracleUnavailable):
                self.metrics.poll_errors.inc()
            if self._poll_failures == 1:
                self._poll_down_since = time.monotonic()
                log.warning("poll failed (%s); retrying with backoff up to %.0fs", exc, POLL_BACKOFF_MAX_S)
            elif isinstance(exc, OracleRefused) and not exc.transient and self._poll_failures % 20 == 0:
                log.error("polls still refused after %d tries: %s", self._poll_failures, exc)
            stop.wait(delay)
            return []
        if self._poll_failures:
            down = time.monotonic() - (self._poll_down_since or time.monotonic())
            log.info("polling again after %d failed polls over %.1fs", self._poll_failures, down)
            self._poll_failures, self._poll_down_since = 0, None
        return offers
