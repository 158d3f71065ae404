"""Posting outcomes on-chain: settlements (batched), failures and refunds.

The contract refuses to settle, fail or refund a task twice, so a transaction that is
re-sent after a crash can never pay twice; the oracle's own state only decides what to
try next.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from sqlalchemy import select, update
from web3 import Web3

from oracle.auth import contract_signature_problem
from oracle.db import Database, Job, JobState, Task, TaskState, get_or_raise, now
from oracle.ingest import EventDecoder
from oracle.metrics import OracleMetrics, WorkerMetrics
from oracle.outages import is_outage
from oracle.txmanager import NotSent, TxManager
from oracle.verify import Reexecute, Verdict, decide, spot_check_selected
from tributa import private
from tributa.chain.contracts import Contracts
from tributa.chain.tx import Signer
from tributa.errors import ChainError, ContractRevert
from tributa.store import cid as cidlib
from tributa.verification import Judge, VerificationParams
from tributa.verification.params import model_params

log = logging.getLogger("tributa.oracle.settler")

BPS = 10_000
# A SlashProof's result_digest for a lease proof (silence); any other digest is a conflict proof.
LEASE_PROOF = b"\x00" * 32
# On-chain task states that end the oracle's work on a task.
ONCHAIN_STATES = {2: TaskState.SETTLED, 3: TaskState.FAILED, 4: TaskState.REFUNDED}


@dataclass(frozen=True)
class Attribution:
    """What the attribution step contributes to a settlement."""

    record_cid: str | None
    record_digest: bytes
    dataset_ids: list[int]
    weights_bps: list[int]


NO_ATTRIBUTION = Attribution(None, b"\x00" * 32, [], [])


class Attributor(Protocol):
    def __call__(self, task: Task) -> Attribution: ...


@dataclass(frozen=True)
class Plan:
    settlement: tuple
    result_cid: str | None
    attribution: Attribution
    source: str  # the verdict's: majority, spot_check, reexecution
    ciphertext_cid: str | None = None  # private tasks: the result sealed to the requester
    # Answers that agreed with the verdict (paid, or accepted with other bytes): recorded on each
    # job at settlement for routing (jobs.reputation) and `agent status`. Comparing digests alone
    # would count an honest answer from other hardware against its agent.
    agreeing: frozenset[int] = frozenset()


@dataclass(frozen=True)
class FeePolicy:
    """How much of a task's fee goes to the agents; the rest of the split is on-chain."""

    agent_fee_bps: int = 5000

    def agent_fee(self, task: Task, protocol_fee_bps: int, data_share_bps: int) -> int:
        available = task.fee - task.fee * protocol_fee_bps // BPS - task.fee * data_share_bps // BPS - task.model_fee
        return max(0, min(available, task.fee * self.agent_fee_bps // BPS))


if TYPE_CHECKING:
    from oracle.callbacks import CallbackRelay


class Settler:
    def __init__(
        self,
        db: Database,
        contracts: Contracts,
        signer: Signer | TxManager,
        attributor: Attributor | None = None,
        fee_policy: FeePolicy = FeePolicy(),
        max_batch: int = 50,
        store=None,
        reexecute: Reexecute | None = None,
        spot_check_fraction: float = 0.0,
        spot_check_seed: bytes = b"",
        metrics: WorkerMetrics | None = None,
        verification: VerificationParams = VerificationParams(),
        oracle_key: bytes | None = None,
        callbacks: CallbackRelay | None = None,
    ) -> None:
        self.db = db
        # Answers contracts' requests through AIOracle instead of settling them here (oracle/callbacks.py).
        self.callbacks = callbacks
        self.oracle_key = oracle_key  # opens private tasks' answers (their oracle copies) to judge them
        self.contracts = contracts
        self.escrow = contracts.escrow
        self.signer = signer
        # Every send goes through the transaction manager: recorded before broadcast, bumped when stuck.
        self.txm = signer if isinstance(signer, TxManager) else TxManager.for_signer(db, signer)
        self.attributor = attributor or (lambda task: NO_ATTRIBUTION)
        self.fee_policy = fee_policy
        self.max_batch = max_batch
        self.store = store
        self.reexecute = reexecute
        self.spot_check_fraction = spot_check_fraction
        self.spot_check_seed = spot_check_seed
        self.verification = verification
        self.metrics: WorkerMetrics = metrics or OracleMetrics()
        self.protocol_fee_bps = self.escrow.functions.protocol_fee_bps().call()
        self.data_share_bps = self.escrow.functions.data_share_bps().call()
        self._decoder = EventDecoder(self.escrow, ("TaskSettled", "SettlementRejected"))

    # -- settlement -------------------------------------------------------------------------
    def settle_ready(self) -> int:
        """Decide and settle every verified task (in batches); returns how many settled."""
        with self.db.session() as s:
            ready = [
                t.task_id
                for t in s.execute(
                    select(Task).where(Task.state == TaskState.VERIFIED).order_by(Task.task_id).limit(self.max_batch)
                ).scalars()
            ]
        # Verdicts and attribution run models: outside any write transaction, so the API never waits on them.
        plans = [(task_id, plan) for task_id in ready if (plan := self._plan(task_id)) is not None]
        if not plans:
            return 0
        with self.db.session() as s:
            for task_id, plan in plans:
                task = get_or_raise(s, Task, task_id)
                task.state = TaskState.SETTLING
                task.result_cid, task.result_digest = plan.result_cid, "0x" + plan.settlement[1].hex()
                task.result_ciphertext_cid = plan.ciphertext_cid
                task.attribution_cid = plan.attribution.record_cid
                task.attribution_digest = "0x" + plan.attribution.record_digest.hex()
        plans = self._answer_requests(plans)
        if not plans:
            return 0
        settlements = [plan.settlement for _, plan in plans]
        task_ids = [task_id for task_id, _ in plans]
        try:
            # Always the batch entrypoint: one bad task is skipped on-chain, never reverts the rest.
            result = self.txm.transact(self.escrow.functions.settle_batch(settlements), "settle_batch", task_ids)
        except ContractRevert as exc:
            log.error("settle_batch of tasks %s reverted: %s", task_ids, exc.reason)
            self._reconcile({t: exc.reason for t in task_ids})
            return 0
        except NotSent as exc:
            # Nothing was signed, so nothing can land: they are simply settled on a later pass.
            log.error("settlement of %d tasks not sent: %s", len(plans), exc)
            with self.db.session() as s:
                for task_id in task_ids:
                    row = s.get(Task, task_id)
                    if row is not None and row.state == TaskState.SETTLING:
                        row.state = TaskState.VERIFIED
            return 0
        except ChainError as exc:
            # Not sent or not mined: leave them SETTLING; recover() decides from on-chain state.
            log.error("settlement of %d tasks not confirmed: %s", len(plans), exc)
            return 0
        self.metrics.gas_spent.labels("settle").inc(result.gas_used)
        return self._record(result, dict(plans))

    def _answer_requests(self, plans: list[tuple[int, Plan]]) -> list[tuple[int, Plan]]:
        """Post contracts' requests to AIOracle (never settled in the escrow directly: AIOracle
        could not deliver them); returns the other plans."""
        if self.callbacks is None:
            return plans
        rest = []
        with self.db.session() as s:
            owned = {task_id for task_id, _ in plans if self.callbacks.owns(get_or_raise(s, Task, task_id))}
        for task_id, plan in plans:
            if task_id not in owned:
                rest.append((task_id, plan))
            elif self.callbacks.post(task_id, plan.settlement, plan.result_cid):
                with self.db.session() as s:
                    s.execute(
                        update(Job)
                        .where(Job.task_id == task_id, Job.state == JobState.SUBMITTED)
                        .values(agreed=Job.id.in_(sorted(plan.agreeing)))
                        .execution_options(synchronize_session=False)
                    )
        return rest

    def _plan(self, task_id: int) -> Plan | None:
        """The settlement for one task, or None after marking it FAILING (no trustworthy result)."""
        with self.db.session() as s:
            task = get_or_raise(s, Task, task_id)
            jobs = s.execute(select(Job).where(Job.task_id == task_id).order_by(Job.id)).scalars().all()
            s.expunge_all()
        jobs = _without_unsettleable_signatures(task_id, jobs)
        spot = task.wanted == 1 and spot_check_selected(task_id, self.spot_check_fraction, self.spot_check_seed)
        oracle_seal: list[str] = []  # a private task's own re-run result, sealed to the requester
        try:
            verdict = decide(
                task,
                jobs,
                self.reexecute,
                lambda output: self._store_output(task, output, oracle_seal),
                spot,
                self._judge(task),
                self._output_of(task),
            )
        except Exception as exc:  # a re-execution that crashes must not stall the queue
            if is_outage(exc):  # a full disk or an away store: the pass stops and retries, the task waits
                raise
            log.exception("verdict for task %s failed", task_id)
            verdict = Verdict(None, None, source="reexecution", note=f"re-execution failed: {type(exc).__name__}")
        if verdict.result_digest is None:
            with self.db.session() as s:
                failing = get_or_raise(s, Task, task_id)
                failing.state = TaskState.FAILING
                failing.reason = f"no verified result: {verdict.note}"[:128]
            return None
        if verdict.source != "majority" or verdict.slashed:
            log.info(
                "task %s verdict %s: paid %s, agreed %s, slashed %s %s",
                task_id,
                verdict.source,
                [j.agent for j in verdict.paid],
                [j.agent for j in verdict.agreed],
                verdict.slashed,
                verdict.note,
            )
        task.result_cid, task.result_digest = verdict.result_cid, verdict.result_digest
        attribution = self.attributor(task)
        paid = [Web3.to_checksum_address(j.agent) for j in verdict.paid]
        # The contract takes at most k agents in all: the paid ones first, then as many slashed as fit.
        slashed = self._slash_proofs(task, jobs, verdict)[: max(0, task.k - len(paid))]
        settlement = (
            task_id,
            bytes.fromhex(verdict.result_digest[2:]),
            attribution.record_digest,
            paid,
            [_result_signature(j) for j in verdict.paid],
            self.fee_policy.agent_fee(task, self.protocol_fee_bps, self.data_share_bps) if paid else 0,
            slashed,
            attribution.dataset_ids,
            attribution.weights_bps,
        )
        sealed = next((j.requester_cid for j in verdict.paid if j.requester_cid), None) or next(iter(oracle_seal), None)
        agreeing = frozenset(j.id for j in (*verdict.paid, *verdict.agreed))
        return Plan(settlement, verdict.result_cid, attribution, verdict.source, sealed, agreeing)

    def _judge(self, task: Task) -> Judge:
        """The acceptance rule for `task`, with its model's registered terms where the publisher set
        them (else `self.verification`); differing generations are rescored on the re-executor's model."""
        params = self._params(task.model_id)
        checker = getattr(self.reexecute, "claim_checker", None)
        return Judge(params, checker(task, params.logit_margin) if checker else None)

    def _params(self, model_id: int) -> VerificationParams:
        return model_params(self.contracts.registry, model_id, self.verification)

    def _output_of(self, task: Task):
        """A job's output bytes from the store: a public task's in the clear, a private one's from
        the copy sealed to the oracle's key (without that key, or that copy, digests decide)."""
        oracle_key = self.oracle_key if task.private else None
        if self.store is None or (task.private and oracle_key is None):
            return None
        where = private.Deployment(self.contracts.chain_id, self.escrow.address)

        def output_of(job: Job) -> bytes | None:
            cid = job.oracle_cid if task.private else job.result_cid
            try:
                if not cid:
                    return None
                data = self.store.get_bytes(cid)
                if oracle_key is not None:  # a private task: the copy sealed to the oracle
                    data = private.open_oracle_copy(oracle_key, data, where, task.requester, task.task_id, job.id)
                return data
            except Exception as exc:  # a missing block or a bad seal: that answer agrees by digest only
                if is_outage(exc):
                    raise
                log.warning(
                    "task %s: output %s of agent %s unreadable (%s)", task.task_id, cid, job.agent, type(exc).__name__
                )
                return None

        return output_of

    def _slash_proofs(self, task: Task, jobs: list[Job], verdict: Verdict) -> list[tuple]:
        """SlashProofs (agent, result_digest, expires_at, signature) for the verdict's slashed agents.

        A minority agent is proven by its own Result signature over the digest it submitted (a
        conflict proof); a silent one by the Lease it signed, once chain time is past its expiry
        (a lease proof). An agent the oracle holds no such signature of is not slashed at all, and
        a task the escrow marks not slashable gets no proofs (they would reject the settlement).
        """
        if not verdict.slashed:
            return []
        settled = verdict.result_digest
        by_agent = {j.agent.lower(): j for j in jobs}
        proofs: list[tuple] = []
        chain_time: int | None = None
        for agent in verdict.slashed:
            job = by_agent.get(agent.lower())
            if job is None:
                continue
            if job.state == JobState.SUBMITTED and job.result_digest and job.result_digest != settled and job.signature:
                proofs.append(
                    (
                        Web3.to_checksum_address(job.agent),
                        bytes.fromhex(job.result_digest[2:]),
                        0,
                        bytes.fromhex(job.signature[2:]),
                    )
                )
                continue
            chain_time = self._chain_time() if chain_time is None else chain_time
            proof = _lease_proof(job, chain_time)
            if proof is not None:
                proofs.append(proof)
            else:
                log.info("task %s: agent %s not slashed: no signed lease past its expiry", task.task_id, job.agent)
        if proofs and not self._slashable(task.task_id):
            log.info(
                "task %s is not slashable on-chain (fee or deadline window too small): no slash proofs", task.task_id
            )
            return []
        return proofs

    def _slashable(self, task_id: int) -> bool:
        return bool(self.escrow.functions.task_slashable(task_id).call())

    def _chain_time(self) -> int:
        return int(self.contracts.w3.eth.get_block("latest")["timestamp"])

    def _store_output(self, task: Task, output: bytes, seals: list[str]) -> tuple[str, str]:
        """The oracle's own result: stored as is, or for a private task only sealed to the
        requester (appended to `seals`); returns (CID of the plain output, its 0x-digest)."""
        if task.output_pubkey is None:  # a public task
            cid = str(self.store.put_bytes(output))
        else:
            cid = str(self.store.cid_of(output))
            where = private.Deployment(self.contracts.chain_id, self.escrow.address)
            sealed = private.seal_output(bytes.fromhex(task.output_pubkey), output, where, task.requester, task.task_id)
            seals.append(str(self.store.put_bytes(sealed)))
        return cid, "0x" + cidlib.cid_to_digest(cid).hex()

    def _record(self, result, plans: dict[int, Plan]) -> int:
        task_ids = list(plans)
        settled: dict[int, dict] = {}
        rejected: dict[int, str] = {}
        for raw in result.receipt.logs:
            if raw["address"].lower() != self.escrow.address.lower():
                continue
            ev = self._decoder.decode(raw)
            if ev is None:
                continue
            if ev.event == "TaskSettled":
                settled[ev.args["task_id"]] = ev.args
            else:
                rejected[ev.args["task_id"]] = ev.args["reason"]
        share = result.gas_used // max(1, len(task_ids))
        with self.db.session() as s:
            for task_id, args in settled.items():
                task = get_or_raise(s, Task, task_id)
                task.state = TaskState.SETTLED
                task.settle_tx = result.tx_hash
                task.settled_at = now()
                task.agent_paid = args["agent_fee"]
                task.refund = args["refund"]
                task.gas_used = share
                self.metrics.settled.labels(plans[task_id].source).inc()
                self.metrics.slashes.inc(len(plans[task_id].settlement[6]))
                self.metrics.latency.observe(max(0.0, task.settled_at - task.posted_at))
                s.execute(
                    update(Job)
                    .where(Job.task_id == task_id, Job.state == JobState.SUBMITTED)
                    .values(agreed=Job.id.in_(sorted(plans[task_id].agreeing)))
                    .execution_options(synchronize_session=False)
                )
        missing = {t: rejected.get(t, "no settlement event") for t in task_ids if t not in settled}
        if missing:
            self._reconcile(missing)
        for task_id in settled:
            log.info("task %s settled in %s", task_id, result.tx_hash)
        return len(settled)

    def _reconcile(self, reasons: dict[int, str]) -> None:
        """Tasks the chain refused to settle: adopt the chain's state, or fail them with the reason."""
        with self.db.session() as s:
            for task_id, reason in reasons.items():
                task = get_or_raise(s, Task, task_id)
                onchain = self.escrow.functions.task(task_id).call().state
                if onchain in ONCHAIN_STATES:
                    task.state = ONCHAIN_STATES[onchain]
                    log.warning("task %s was already %s on-chain; not settled again", task_id, task.state)
                else:
                    task.state = TaskState.FAILING
                    task.reason = f"settlement rejected: {reason}"[:128]
                    log.error("task %s settlement rejected: %s", task_id, reason)

    def recover(self, in_flight: AbstractSet[int] = frozenset()) -> None:
        """After a restart: tasks caught mid-settlement are settled or ready again, per the chain.

        Tasks whose settlement is still in flight (`in_flight`) stay SETTLING: resending them would
        only cost gas, since the contract refuses to settle a task twice.
        """
        requests: list[int] = []  # contracts' requests: AIOracle, not the escrow, says where they stand
        with self.db.session() as s:
            for task in s.execute(select(Task).where(Task.state == TaskState.SETTLING)).scalars():
                if task.task_id in in_flight:
                    continue
                if self.callbacks is not None and self.callbacks.owns(task):
                    requests.append(task.task_id)
                    continue
                onchain = self.escrow.functions.task(task.task_id).call().state
                task.state = ONCHAIN_STATES.get(onchain, TaskState.VERIFIED)
        if self.callbacks is None:  # then no requests were listed
            return
        for task_id in requests:
            state = self.callbacks.adopt_posted(task_id)
            with self.db.session() as s:
                row = s.get(Task, task_id)
                if row is not None and row.state == TaskState.SETTLING:
                    row.state = state

    # -- failures and refunds ----------------------------------------------------------------
    def fail_pending(self, chain_time: int | None = None) -> int:
        """Fail decided failures on-chain, slashing agents that accepted a lease and never answered.

        Each slash is a lease proof: the agent's own signature over Lease(task_id, expires_at),
        offered only once chain time (`chain_time`, else the latest block's) is past expires_at.
        """
        with self.db.session() as s:
            tasks = s.execute(select(Task).where(Task.state == TaskState.FAILING)).scalars().all()
            if not tasks:
                return 0
            if chain_time is None:
                chain_time = self._chain_time()
            # A contract's request is ended by AIOracle alone (its `expire`, once nobody answered by
            # its fulfil-by time, fails and refunds it): the escrow refuses this key's fail_task.
            owned = {t.task_id for t in tasks if self.callbacks is not None and self.callbacks.owns(t)}
            for t in tasks:
                if t.task_id in owned:
                    t.state = TaskState.FAILED
                    log.warning("request %s cannot be answered (%s): AIOracle's expire refunds it", t.task_id, t.reason)
            failing = [
                (t.task_id, t.reason or "failed", self._silent_agents(s, t, chain_time))
                for t in tasks
                if t.task_id not in owned
            ]
        done = 0
        for task_id, reason, silent in failing:
            if silent and not self._slashable(task_id):
                log.info(
                    "task %s is not slashable on-chain: failed without slashing %s", task_id, [p[0] for p in silent]
                )
                silent = []
            try:
                call = self.escrow.functions.fail_task(task_id, reason[:128], silent)
                sent = self.txm.transact(call, "fail_task", [task_id])
                self.metrics.gas_spent.labels("fail_task").inc(sent.gas_used)
                self.metrics.slashes.inc(len(silent))  # silence slashes count like a settlement's
            except ContractRevert as exc:
                log.warning("fail_task(%s) reverted: %s (the chain state wins)", task_id, exc.reason)
            except ChainError as exc:
                log.error("fail_task(%s) not confirmed: %s", task_id, exc)
                continue
            with self.db.session() as s:
                task = s.get(Task, task_id)
                if task is not None and task.state == TaskState.FAILING:  # None: reorged out meanwhile
                    task.state = TaskState.FAILED
            done += 1
        return done

    @staticmethod
    def _silent_agents(session, task: Task, chain_time: int) -> list[tuple]:
        """Lease proofs of agents that accepted a lease on the task and never answered, whose
        signed expiry chain time has passed; at most k. A lease never accepted proves nothing."""
        jobs = session.execute(select(Job).where(Job.task_id == task.task_id).order_by(Job.id)).scalars().all()
        answered = {j.agent for j in jobs if j.state in (JobState.SUBMITTED, JobState.ERRORED)}
        proofs: dict[str, tuple] = {}
        for job in jobs:
            if job.agent in answered or job.agent in proofs or job.state not in (JobState.LEASED, JobState.EXPIRED):
                continue
            proof = _lease_proof(job, chain_time)
            if proof is not None:
                proofs[job.agent] = proof
        return sorted(proofs.values())[: task.k]

    def refund_due(self, chain_time: int) -> int:
        """Refund failed tasks, and open ones whose deadline passed (anyone may; the oracle does).

        A task past its deadline that an agent took and never answered is failed first, so that
        agent is slashed while the requester still gets the whole fee back.
        """
        due = []
        with self.db.session() as s:
            for t in s.execute(
                select(Task).where(
                    (Task.state == TaskState.FAILED)
                    | (Task.state.in_((TaskState.OPEN, TaskState.RUNNING)) & (Task.deadline < chain_time))
                )
            ).scalars():
                if t.state != TaskState.FAILED and self._silent_agents(s, t, chain_time):
                    t.state = TaskState.FAILING
                    t.reason = "no agent answered by the deadline"
                else:
                    due.append(t.task_id)
        refunded = 0
        for task_id in due:
            try:
                result = self.txm.transact(self.escrow.functions.refund(task_id), "refund", [task_id])
                self.metrics.gas_spent.labels("refund").inc(result.gas_used)
            except ContractRevert as exc:
                log.warning("refund(%s) reverted: %s", task_id, exc.reason)
                continue
            except ChainError as exc:
                log.error("refund(%s) not confirmed: %s", task_id, exc)
                continue
            with self.db.session() as s:
                task = s.get(Task, task_id)
                if task is not None:  # None: reorged out meanwhile
                    task.state = TaskState.REFUNDED
                    task.refund_tx = result.tx_hash
            refunded += 1
        return refunded


def _lease_proof(job: Job, chain_time: int) -> tuple | None:
    """The SlashProof of a job's signed lease, if it has one and it expired before `chain_time`
    (TaskEscrow wants expires_at < block.timestamp; the next block is no earlier than the tip)."""
    if not job.lease_signature or job.lease_chain_expires_at is None or job.lease_chain_expires_at >= chain_time:
        return None
    return (
        Web3.to_checksum_address(job.agent),
        LEASE_PROOF,
        int(job.lease_chain_expires_at),
        bytes.fromhex(job.lease_signature[2:]),
    )


def _result_signature(job: Job) -> bytes:
    """A paid job's Result signature (the API stores no answer without one)."""
    if job.signature is None:
        raise ValueError(f"task {job.task_id}: job {job.id} of {job.agent} has no Result signature")
    return bytes.fromhex(job.signature[2:])


def _without_unsettleable_signatures(task_id: int, jobs: Sequence[Job]) -> list[Job]:
    """Drop answers whose signature the escrow would refuse (high-s, v not 27/28): one such
    signature would revert the whole settlement and leave the honest agents unpaid. The API
    refuses them on arrival; this guards rows stored before it did."""
    kept = []
    for job in jobs:
        problem = job.signature and contract_signature_problem(bytes.fromhex(job.signature.removeprefix("0x")))
        if job.state == JobState.SUBMITTED and problem:
            log.warning("task %s: ignoring job %s of %s: %s", task_id, job.id, job.agent, problem)
            continue
        kept.append(job)
    return kept
