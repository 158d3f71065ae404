"""The job book: leases tasks to agents, takes their results, requeues what expires.

Every transition is one database transaction, so a crash between any two leaves a
state the next start can continue from.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, cast

from sqlalchemy import CursorResult, func, select, text, update
from web3 import Web3

from oracle.db import (
    AgentSeen,
    CallbackRequest,
    CommitteeDuty,
    Database,
    Job,
    JobState,
    Task,
    TaskState,
    get_or_raise,
    now,
)
from oracle.outages import is_outage
from tributa import private
from tributa.chain.eip712 import recover_lease_signer, recover_result_signer
from tributa.crypto import public_key_of
from tributa.errors import TributaError
from tributa.store import cid as cidlib

log = logging.getLogger("tributa.oracle.jobs")

MAX_OUTPUT_BYTES = 4 * 1024 * 1024
INLINE_INPUT_BYTES = 64 * 1024
# Below this agreement rate an agent waits before it may take a task (better agents go first).
LOW_REPUTATION = 0.5
LOW_REPUTATION_DELAY_S = 2.0
REPUTATION_WINDOW = 50
REPUTATION_MIN_SAMPLES = 3
# A lease the agent has not accepted (signed) within this many seconds returns to the pool.
ACCEPT_WINDOW_S = 15.0
# Agents that failed to run a task (not its input: their runtime, a limit, a model that would not
# load) before it is failed and refunded rather than offered to yet another agent.
RUNTIME_ERRORS_TO_FAIL = 3
# How long after ingesting a task the oracle waits for its input to be uploaded before failing
# (and refunding) it.
INPUT_UPLOAD_GRACE_S = 120.0


def reputation(session, agent: str) -> float:
    """Recent agreement with the settled result: agreed / (agreed + disagreed + missed)."""
    agreed, samples = agreement(session, agent)
    return agreed / samples if samples >= REPUTATION_MIN_SAMPLES else 1.0


def judged_answers(session, agent: str, window: int = REPUTATION_WINDOW) -> list[tuple[int, float | None, bool]]:
    """(task id, settled at, agreed) for the agent's last `window` jobs on settled tasks, newest
    first. An answer agrees as the settler recorded it (Job.agreed, the acceptance rule), or, for
    jobs settled before that was recorded, by equal digests; a missed (expired) job never agrees."""
    rows = session.execute(
        select(Job.task_id, Task.settled_at, Job.state, Job.agreed, Job.result_digest, Task.result_digest)
        .join(Task, Task.task_id == Job.task_id)
        .where(
            Job.agent == agent, Task.state == TaskState.SETTLED, Job.state.in_((JobState.SUBMITTED, JobState.EXPIRED))
        )
        .order_by(Job.id.desc())
        .limit(window)
    ).all()
    return [
        (task_id, settled_at, state == JobState.SUBMITTED and (judged if judged is not None else mine == settled))
        for task_id, settled_at, state, judged, mine, settled in rows
    ]


def agreement(session, agent: str, window: int = REPUTATION_WINDOW) -> tuple[int, int]:
    """(answers that agreed with the settled verdict, answers judged or missed), over the agent's
    last `window` jobs on settled tasks (judged_answers)."""
    answers = judged_answers(session, agent, window)
    return sum(1 for *_, agreed in answers if agreed), len(answers)


class RequestRefused(TributaError):
    """A request the job book refuses; `status` is the HTTP status it maps to."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class JobOffer:
    job_id: int
    task_id: int
    model_id: int
    input_cid: str
    input_digest: str
    deadline: int
    # Chain time (unix seconds) the lease runs to: the agent signs Lease(task_id, lease_expires_at)
    # and POSTs it to /v1/jobs/{job_id}/accept before it runs the job.
    lease_expires_at: int
    # Private tasks: the input, sealed to this agent's registered key (the store holds another seal).
    input_envelope_b64: str | None = None
    # Public inputs up to INLINE_INPUT_BYTES ride along, saving the agent a fetch (it re-hashes them).
    input_b64: str | None = None

    def to_json(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Submission:
    output: bytes
    result_digest: bytes
    signature: bytes
    # The agent's Lease signature, when it did not POST /accept (a job done within its accept delay).
    lease_signature: bytes | None = None

    @classmethod
    def from_json(cls, body: dict) -> Submission:
        try:
            output = base64.b64decode(body["output_b64"], validate=True)
            digest = bytes.fromhex(str(body["result_digest"]).removeprefix("0x"))
            signature = bytes.fromhex(str(body["signature"]).removeprefix("0x"))
        except (KeyError, TypeError, ValueError) as exc:
            raise RequestRefused(
                422, f"result body needs output_b64 (base64), result_digest and signature (hex): {exc}"
            ) from None
        if len(digest) != 32 or len(signature) != 65:
            raise RequestRefused(422, "result_digest must be 32 bytes and signature 65 bytes")
        if len(output) > MAX_OUTPUT_BYTES:
            raise RequestRefused(413, f"output is {len(output)} bytes; the limit is {MAX_OUTPUT_BYTES}")
        lease_signature = parse_lease_signature(body) if body.get("lease_signature") is not None else None
        return cls(output, digest, signature, lease_signature)


def parse_lease_signature(body: dict) -> bytes:
    try:
        signature = bytes.fromhex(str(body["lease_signature"]).removeprefix("0x"))
    except (KeyError, TypeError, ValueError):
        raise RequestRefused(
            422,
            "accept body needs lease_signature: hex of the agent's 65-byte EIP-712 signature "
            "over Lease(task_id, lease_expires_at)",
        ) from None
    if len(signature) != 65:
        raise RequestRefused(422, f"lease_signature must be 65 bytes, not {len(signature)}")
    return signature


class JobBook:
    def __init__(
        self,
        db: Database,
        store,
        chain_id: int,
        escrow_address: str,
        lease_s: float = 120.0,
        oracle_key: bytes | None = None,
        agent_pubkey: Callable[[str], bytes] | None = None,
        accept_window_s: float = ACCEPT_WINDOW_S,
    ) -> None:
        self.db = db
        self.store = store
        self.chain_id = chain_id
        self.escrow_address = escrow_address
        self.lease_s = lease_s
        self._accept_window_s = accept_window_s
        # Without the oracle's key, private inputs cannot be opened (they fail their task).
        self.oracle_key = oracle_key
        self.agent_pubkey = agent_pubkey
        self.where = private.Deployment(chain_id, escrow_address)

    @property
    def accept_window_s(self) -> float:
        """How long a lease lasts before the agent accepts it (never longer than the lease)."""
        return min(self._accept_window_s, self.lease_s)

    def lease(self, agent: str, models: set[int], chain_time: int, capacity: int = 1) -> JobOffer | None:
        """Lease the oldest task this agent can take, or None (`lease_many` with max_jobs=1)."""
        offers = self.lease_many(agent, models, chain_time, capacity, max_jobs=1)
        return offers[0] if offers else None

    def lease_many(
        self, agent: str, models: set[int], chain_time: int, capacity: int = 1, max_jobs: int = 1
    ) -> list[JobOffer]:
        """Lease up to min(max_jobs, capacity - held) of the oldest tasks this agent can take,
        oldest first, in one transaction; [] when there is none.

        A task with redundancy k goes to k distinct agents (so never twice to one agent, in one
        batch or across polls); an agent holds at most `capacity` leases at once; an agent that
        often disagrees with the majority gets only tasks that nobody better took within
        LOW_REPUTATION_DELAY_S; an agent whose bonded stake was last read below min_stake
        (AgentSeen.stake_ok, kept by oracle/stakes.py) gets nothing. A candidate whose input is
        missing, or is private and cannot be opened, fails its task and is skipped.

        Each lease runs to chain time `chain_time + lease_s` (the offer's lease_expires_at); until
        the agent accepts it (signs it, `accept`) it lasts only accept_window_s.
        """
        if not models or max_jobs < 1:
            return []
        offers: list[JobOffer] = []
        with self.db.session() as s:
            self._write_lock(s)
            seen = self._touch(s, agent)
            if seen.stake_ok is False:
                return []
            held = s.execute(
                select(func.count()).select_from(Job).where(Job.agent == agent, Job.state == JobState.LEASED)
            ).scalar_one()
            wanted = min(max_jobs, capacity - held)
            if wanted < 1:
                return []
            trusted = reputation(s, agent) >= LOW_REPUTATION
            # Rows, not a live cursor: the loop writes (jobs, failed tasks) between them.
            candidates = (
                s.execute(
                    select(Task)
                    .where(
                        # A challenged request goes to its committee only, until the committee deadline
                        # (also once resolved: a late verdict still proves its member answered).
                        Task.state.in_((TaskState.OPEN, TaskState.RUNNING))
                        | Task.task_id.in_(
                            select(CommitteeDuty.task_id)
                            .join(CallbackRequest, CallbackRequest.request_id == CommitteeDuty.task_id)
                            .where(
                                CommitteeDuty.agent == Web3.to_checksum_address(agent),
                                CallbackRequest.resolve_by >= chain_time,
                            )
                        ),
                        Task.model_id.in_(models),
                        Task.deadline > chain_time,
                        # Never a task this agent holds or answered (k distinct agents, one job each);
                        # one whose lease it let expire it may take again (else, alone on a model, the
                        # task would wait for its deadline). An errored one stays its own: it would fail again.
                        ~Task.task_id.in_(select(Job.task_id).where(Job.agent == agent, Job.state != JobState.EXPIRED)),
                    )
                    .order_by(Task.task_id)
                    .limit(max(32, 2 * wanted))
                    .with_for_update(skip_locked=True)
                )
                .scalars()
                .all()
            )
            for task in candidates:
                if len(offers) >= wanted:
                    break
                offer = self._lease_task(s, agent, task, chain_time, trusted)
                if offer is not None:
                    offers.append(offer)
        return offers

    def _lease_task(self, s, agent: str, task: Task, chain_time: int, trusted: bool) -> JobOffer | None:
        """Lease one candidate task (row-locked by the caller) to `agent`, or None if it may not
        have it now; a task nobody could run is failed here, with the reason."""
        # A committee member's re-execution (the query admits no other task in these states), whatever its reputation.
        duty = task.state not in (TaskState.OPEN, TaskState.RUNNING)
        if not duty and not trusted and now() - task.posted_at < LOW_REPUTATION_DELAY_S:
            return None
        if not duty and self._active_jobs(s, task.task_id) >= task.wanted:
            return None
        input_cid = str(cidlib.digest_to_cid(bytes.fromhex(task.input_digest[2:])))
        if not self.store.has(input_cid):
            if now() - task.posted_at < INPUT_UPLOAD_GRACE_S:
                return None  # a requester on its own machine uploads the input once the task is ingested
            # Nothing any agent could run: fail it now, with the reason, so it is refunded.
            task.state = TaskState.FAILING
            task.reason = f"input {input_cid} was not uploaded to the oracle within {INPUT_UPLOAD_GRACE_S:g} s"
            log.warning("task %s failed: %s", task.task_id, task.reason)
            return None
        try:
            envelope, inline = self._input_for(agent, task, input_cid)
        except TributaError as exc:
            if is_outage(exc):  # the store's disk, not the input: the task waits for it
                raise
            task.state = TaskState.FAILING
            task.reason = f"private input cannot be opened: {exc}"[:128]
            log.warning("task %s failed: %s", task.task_id, task.reason)
            return None
        leased_at = now()
        lease_chain_expires_at = int(chain_time) + int(self.lease_s)
        job = Job(
            task_id=task.task_id,
            agent=agent,
            state=JobState.LEASED,
            leased_at=leased_at,
            lease_expires_at=leased_at + self.accept_window_s,
            lease_chain_expires_at=lease_chain_expires_at,
        )
        s.add(job)
        if not duty:
            task.state = TaskState.RUNNING
        s.flush()
        return JobOffer(
            job.id,
            task.task_id,
            task.model_id,
            input_cid,
            task.input_digest,
            task.deadline,
            lease_chain_expires_at,
            envelope,
            inline,
        )

    def _input_for(self, agent: str, task: Task, input_cid: str) -> tuple[str | None, str | None]:
        """(sealed envelope, inline input) for an offer, both base64: a private task's input is
        opened with the oracle's key and sealed to the agent's; a small public one is inlined."""
        data = self.store.get_bytes(input_cid)
        if private.is_encrypted(data):
            return self._reseal_for(agent, task, data), None
        return None, base64.b64encode(data).decode() if len(data) <= INLINE_INPUT_BYTES else None

    def _reseal_for(self, agent: str, task: Task, data: bytes) -> str:
        if self.oracle_key is None or self.agent_pubkey is None:
            raise TributaError("this oracle runs without its key, so it cannot serve private tasks")
        opened = private.open_input(self.oracle_key, data, self.where, task.requester)
        task.output_pubkey = opened.output_pubkey.hex()
        sealed = private.seal_job_input(
            self.agent_pubkey(agent), opened.input_bytes, self.where, task.requester, task.task_id
        )
        return base64.b64encode(sealed).decode()

    @staticmethod
    def _touch(session, agent: str) -> AgentSeen:
        seen = session.get(AgentSeen, agent)
        if seen is None:
            seen = AgentSeen(agent=agent, last_poll_at=now())
            session.add(seen)
        else:
            seen.last_poll_at = now()
        return seen

    @staticmethod
    def _write_lock(session) -> None:
        """On SQLite, take the database's write lock before the lease reads anything: its FOR
        UPDATE SKIP LOCKED locks nothing, and reads outside the write transaction could lease one
        task past its k (or twice to one agent). A write matching no row takes the lock until
        commit. PostgreSQL's row locks already do this; nothing is sent there."""
        if session.get_bind().dialect.name == "sqlite":
            session.execute(text("UPDATE jobs SET state = state WHERE 0"))

    @staticmethod
    def _runtime_errors(session, task_id: int) -> int:
        """Jobs of the task whose agent reported it could not run them (an input error fails the
        task at once, so these are runtime errors)."""
        return session.execute(
            select(func.count()).select_from(Job).where(Job.task_id == task_id, Job.state == JobState.ERRORED)
        ).scalar_one()

    @staticmethod
    def _active_jobs(session, task_id: int) -> int:
        return session.execute(
            select(func.count())
            .select_from(Job)
            .where(Job.task_id == task_id, Job.state.in_((JobState.LEASED, JobState.SUBMITTED)))
        ).scalar_one()

    @staticmethod
    def _submitted(session, task_id: int) -> int:
        return session.execute(
            select(func.count()).select_from(Job).where(Job.task_id == task_id, Job.state == JobState.SUBMITTED)
        ).scalar_one()

    def _held_job(self, session, agent: str, job_id: int) -> tuple[Job, Task]:
        job = self._held_job_only(session, agent, job_id)
        # Row-locked on PostgreSQL: the k jobs of one task count each other's answers in turn.
        return job, session.get(Task, job.task_id, with_for_update=True)

    @staticmethod
    def _held_job_only(session, agent: str, job_id: int) -> Job:
        """The agent's LEASED job, claimed for this transaction: no other transition of it (a
        second submit, an error report, an expiry) can commit until this one ends, and after it
        the job is no longer LEASED.

        The claim is a conditional UPDATE, the first statement of the transaction. On PostgreSQL
        it row-locks the job (a concurrent claim waits, then re-checks the state and matches
        nothing); on SQLite, where FOR UPDATE locks nothing and reads run outside the write
        transaction, it takes the database's write lock, so every read after it is current."""
        claimed = session.execute(
            update(Job)
            .where(Job.id == job_id, Job.agent == agent, Job.state == JobState.LEASED)
            .values(state=JobState.LEASED)
            .execution_options(synchronize_session=False)
        ).rowcount
        job = session.get(Job, job_id, populate_existing=True)
        if job is None:
            raise RequestRefused(404, f"job {job_id} does not exist")
        if job.agent != agent:
            raise RequestRefused(403, f"job {job_id} is not leased to {agent}")
        if claimed != 1 or job.state != JobState.LEASED:
            raise RequestRefused(409, f"job {job_id} is {job.state}, not leased")
        return job

    def accept(self, agent: str, job_id: int, signature: bytes) -> int:
        """Record the agent's signed acceptance of its lease; returns the lease's chain expiry.

        The signature must recover to the agent over Lease(task_id, lease_expires_at) in the
        escrow's EIP-712 domain: it is what lets TaskEscrow slash the agent if it stays silent.
        The job then holds its lease for the full lease_s.
        """
        with self.db.session() as s:
            job = self._held_job_only(s, agent, job_id)  # the task row is not needed: one query less
            return self._record_lease(job, agent, signature)

    def _record_lease(self, job: Job, agent: str, signature: bytes) -> int:
        """Verify a Lease signature for `job` (it must recover to `agent`) and store it."""
        job_id, expires_at = job.id, job.lease_chain_expires_at
        if expires_at is None:
            raise RequestRefused(409, f"job {job_id} predates signed leases; it cannot be accepted")
        try:
            signer = recover_lease_signer(self.chain_id, self.escrow_address, job.task_id, expires_at, signature)
        except Exception:  # eth_account raises several types for undecodable signatures  # noqa: BLE001
            raise RequestRefused(422, "lease_signature does not decode as an ECDSA signature") from None
        if signer.lower() != agent.lower():
            raise RequestRefused(
                401,
                f"the lease signature recovers to {signer}, not to agent {agent}: sign "
                f"Lease(task_id={job.task_id}, expires_at={expires_at}) with the agent's own key",
            )
        encoded = "0x" + signature.hex()
        if job.lease_signature not in (None, encoded):
            raise RequestRefused(409, f"job {job_id}'s lease is already accepted")
        job.lease_signature = encoded
        job.accepted_at = job.accepted_at or now()
        job.lease_expires_at = job.leased_at + self.lease_s
        return expires_at

    def submit(self, agent: str, job_id: int, sub: Submission) -> str:
        """Verify and record an agent's result; returns the result CID.

        A private task's output is never stored in the clear: only its seal to the requester's
        key is; the chain gets the plaintext's digest, which the requester checks after opening.
        """
        task_id, requester, output_pubkey = self._task_of(job_id)
        signer = recover_result_signer(self.chain_id, self.escrow_address, task_id, sub.result_digest, sub.signature)
        if signer.lower() != agent.lower():
            raise RequestRefused(401, "the result signature does not recover to the submitting agent")
        result_cid = self.store.cid_of(sub.output) if output_pubkey else self.store.put_bytes(sub.output)
        if cidlib.cid_to_digest(result_cid) != sub.result_digest:
            raise RequestRefused(422, f"result_digest does not match the output (its CID is {result_cid})")
        sealed_cid = oracle_cid = None
        if output_pubkey:
            sealed = private.seal_output(bytes.fromhex(output_pubkey), sub.output, self.where, requester, task_id)
            sealed_cid = str(self.store.put_bytes(sealed))
            if self.oracle_key is not None:
                copy = private.seal_oracle_copy(
                    public_key_of(self.oracle_key), sub.output, self.where, requester, task_id, job_id
                )
                oracle_cid = str(self.store.put_bytes(copy))
        with self.db.session() as s:
            job, task = self._held_job(s, agent, job_id)
            if sub.lease_signature is not None and job.lease_signature is None:
                self._record_lease(job, agent, sub.lease_signature)
            job.state = JobState.SUBMITTED
            job.requester_cid = sealed_cid
            job.oracle_cid = oracle_cid
            job.result_cid = str(result_cid)
            job.result_digest = "0x" + sub.result_digest.hex()
            job.signature = "0x" + sub.signature.hex()
            job.submitted_at = now()
            s.flush()
            # All k answers are in: the verdict (majority, spot check) is the settler's to make.
            if task.state == TaskState.RUNNING and self._submitted(s, task.task_id) >= task.wanted:
                task.state = TaskState.VERIFIED
        return str(result_cid)

    def report_error(self, agent: str, job_id: int, kind: str, message: str) -> None:
        """An agent could not run a job. Bad input fails the task; anything else requeues it."""
        message = message[:500]
        with self.db.session() as s:
            job, task = self._held_job(s, agent, job_id)
            job.state = JobState.ERRORED
            job.error = f"{kind}: {message}"
            if task.state not in (TaskState.OPEN, TaskState.RUNNING):
                pass  # a committee member's error is its missing verdict: the challenge decides without it
            elif kind == "input":
                task.state = TaskState.FAILING
                task.reason = f"bad input: {message}"[:128]
            elif (
                task.state in (TaskState.OPEN, TaskState.RUNNING)
                and self._active_jobs(s, task.task_id) == 0
                and self._runtime_errors(s, task.task_id) >= RUNTIME_ERRORS_TO_FAIL
            ):
                task.state = TaskState.FAILING
                task.reason = f"{RUNTIME_ERRORS_TO_FAIL} agents could not run it: {message}"[:128]
            elif task.state == TaskState.RUNNING and self._active_jobs(s, task.task_id) == 0:
                task.state = TaskState.OPEN

    def expire_leases(self) -> int:
        """Return tasks whose lease ran out to the open pool."""
        expired = 0
        with self.db.session() as s:
            for job in (
                s.execute(
                    select(Job)
                    .where(Job.state == JobState.LEASED, Job.lease_expires_at < now())
                    .with_for_update(skip_locked=True)
                )
                .scalars()
                .all()
            ):
                # Conditional: on SQLite the select above locks nothing, so a submit (in the API
                # process) may have taken the job since; it is expired only if still leased and due.
                # An UPDATE's result is a CursorResult; Session.execute's overloads type it as Result.
                changed = cast(
                    CursorResult[Any],
                    s.execute(
                        update(Job)
                        .where(Job.id == job.id, Job.state == JobState.LEASED, Job.lease_expires_at < now())
                        .values(state=JobState.EXPIRED)
                        .execution_options(synchronize_session=False)
                    ),
                ).rowcount
                if changed != 1:
                    continue
                s.refresh(job)
                task = get_or_raise(s, Task, job.task_id, with_for_update=True)
                if task.state == TaskState.RUNNING and self._active_jobs(s, task.task_id) == 0:
                    task.state = TaskState.OPEN
                expired += 1
        return expired

    def close_due(self, chain_time: int, margin_s: int) -> int:
        """Tasks near their deadline with some answers but fewer than k: decide with what came in."""
        closed = 0
        with self.db.session() as s:
            for task in s.execute(
                select(Task).where(Task.state == TaskState.RUNNING, Task.deadline - margin_s < chain_time)
            ).scalars():
                if self._submitted(s, task.task_id) > 0:
                    task.state = TaskState.VERIFIED
                    closed += 1
        return closed

    def _task_of(self, job_id: int) -> tuple[int, str, str | None]:
        """(task id, requester, the requester's output key for private tasks) of a job."""
        with self.db.session() as s:
            job = s.get(Job, job_id)
            if job is None:
                raise RequestRefused(404, f"job {job_id} does not exist")
            task = get_or_raise(s, Task, job.task_id)
            return task.task_id, task.requester, task.output_pubkey
