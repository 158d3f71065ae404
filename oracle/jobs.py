"""The job book: leases tasks to agents, takes their results, requeues what expires.

Every transition is one database transaction, so a crash between any two leaves a
state the next start can continue from.
"""

from __future__ import annotations

import base64
import logging
from dataclasses import asdict, dataclass

from sqlalchemy import select

from oracle.db import AgentSeen, Database, Job, JobState, Task, TaskState, now
from tributa.chain.eip712 import recover_result_signer
from tributa.store import cid as cidlib

log = logging.getLogger("tributa.oracle.jobs")

MAX_OUTPUT_BYTES = 4 * 1024 * 1024


class JobError(Exception):
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
    lease_expires_at: float

    def to_json(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Submission:
    output: bytes
    result_digest: bytes
    signature: bytes

    @classmethod
    def from_json(cls, body: dict) -> "Submission":
        try:
            output = base64.b64decode(body["output_b64"], validate=True)
            digest = bytes.fromhex(str(body["result_digest"]).removeprefix("0x"))
            signature = bytes.fromhex(str(body["signature"]).removeprefix("0x"))
        except (KeyError, TypeError, ValueError) as exc:
            raise JobError(422, f"result body needs output_b64 (base64), result_digest and signature (hex): {exc}") from None
        if len(digest) != 32 or len(signature) != 65:
            raise JobError(422, "result_digest must be 32 bytes and signature 65 bytes")
        if len(output) > MAX_OUTPUT_BYTES:
            raise JobError(413, f"output is {len(output)} bytes; the limit is {MAX_OUTPUT_BYTES}")
        return cls(output, digest, signature)


class JobBook:
    def __init__(self, db: Database, store, chain_id: int, escrow_address: str, lease_s: float = 120.0) -> None:
        self.db = db
        self.store = store
        self.chain_id = chain_id
        self.escrow_address = escrow_address
        self.lease_s = lease_s

    def lease(self, agent: str, models: set[int], chain_time: int) -> JobOffer | None:
        """Lease the oldest open task whose model the agent serves, or None."""
        if not models:
            return None
        with self.db.session() as s:
            seen = s.get(AgentSeen, agent)
            if seen is None:
                s.add(AgentSeen(agent=agent, last_poll_at=now()))
            else:
                seen.last_poll_at = now()
            candidates = s.execute(
                select(Task)
                .where(Task.state == TaskState.OPEN, Task.model_id.in_(models), Task.deadline > chain_time)
                .order_by(Task.task_id)
                .limit(16)
                .with_for_update(skip_locked=True)
            ).scalars()
            for task in candidates:
                if self._already_tried(s, task.task_id, agent):
                    continue
                input_cid = str(cidlib.digest_to_cid(bytes.fromhex(task.input_digest[2:])))
                if not self.store.has(input_cid):
                    # Nothing any agent could run: fail it now, with the reason, so it is refunded.
                    task.state = TaskState.FAILING
                    task.reason = f"input {input_cid} is not in the content store"
                    log.warning("task %s failed: %s", task.task_id, task.reason)
                    continue
                job = Job(
                    task_id=task.task_id,
                    agent=agent,
                    state=JobState.LEASED,
                    leased_at=now(),
                    lease_expires_at=now() + self.lease_s,
                )
                s.add(job)
                task.state = TaskState.RUNNING
                s.flush()
                return JobOffer(
                    job.id, task.task_id, task.model_id, input_cid, task.input_digest, task.deadline, job.lease_expires_at
                )
        return None

    @staticmethod
    def _already_tried(session, task_id: int, agent: str) -> bool:
        # An agent whose lease on this task expired does not get it back (another agent should).
        return (
            session.execute(
                select(Job.id).where(Job.task_id == task_id, Job.agent == agent, Job.state == JobState.EXPIRED)
            ).first()
            is not None
        )

    def _held_job(self, session, agent: str, job_id: int) -> tuple[Job, Task]:
        job = session.get(Job, job_id, with_for_update=True)
        if job is None:
            raise JobError(404, f"job {job_id} does not exist")
        if job.agent != agent:
            raise JobError(403, f"job {job_id} is not leased to {agent}")
        if job.state != JobState.LEASED:
            raise JobError(409, f"job {job_id} is {job.state}, not leased")
        task = session.get(Task, job.task_id)
        return job, task

    def submit(self, agent: str, job_id: int, sub: Submission) -> str:
        """Verify and record an agent's result; returns the result CID."""
        signer = recover_result_signer(self.chain_id, self.escrow_address, self._task_of(job_id), sub.result_digest, sub.signature)
        if signer.lower() != agent.lower():
            raise JobError(401, "the result signature does not recover to the submitting agent")
        result_cid = self.store.put_bytes(sub.output)
        if cidlib.cid_to_digest(result_cid) != sub.result_digest:
            raise JobError(422, f"result_digest does not match the output (its CID is {result_cid})")
        with self.db.session() as s:
            job, task = self._held_job(s, agent, job_id)
            job.state = JobState.SUBMITTED
            job.result_cid = str(result_cid)
            job.result_digest = "0x" + sub.result_digest.hex()
            job.signature = "0x" + sub.signature.hex()
            job.submitted_at = now()
            if task.state == TaskState.RUNNING:
                task.state = TaskState.VERIFIED
                task.result_cid = str(result_cid)
                task.result_digest = job.result_digest
        return str(result_cid)

    def report_error(self, agent: str, job_id: int, kind: str, message: str) -> None:
        """An agent could not run a job. Bad input fails the task; anything else requeues it."""
        message = message[:500]
        with self.db.session() as s:
            job, task = self._held_job(s, agent, job_id)
            job.state = JobState.ERRORED
            job.error = f"{kind}: {message}"
            if kind == "input":
                task.state = TaskState.FAILING
                task.reason = f"bad input: {message}"[:128]
            elif task.state == TaskState.RUNNING:
                task.state = TaskState.OPEN

    def expire_leases(self) -> int:
        """Return tasks whose lease ran out to the open pool."""
        expired = 0
        with self.db.session() as s:
            for job in s.execute(
                select(Job).where(Job.state == JobState.LEASED, Job.lease_expires_at < now()).with_for_update(skip_locked=True)
            ).scalars():
                job.state = JobState.EXPIRED
                task = s.get(Task, job.task_id)
                if task.state == TaskState.RUNNING:
                    task.state = TaskState.OPEN
                expired += 1
        return expired

    def _task_of(self, job_id: int) -> int:
        with self.db.session() as s:
            job = s.get(Job, job_id)
            if job is None:
                raise JobError(404, f"job {job_id} does not exist")
            return job.task_id
