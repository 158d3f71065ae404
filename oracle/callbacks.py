"""Contracts that ask for AI: the oracle's side of AIOracle (contracts/AIOracle.vy, docs/AI_ORACLE.md).

A request is an ordinary escrow task whose requester is AIOracle, so ingestion, leasing, agents
and verdicts are those of every task; this relay adds what differs:
- it reads AIOracle's events: the input travels on-chain, so it is stored here by its CID (the
  digest the task names) and no upload is needed; the request's terms, posted results,
  challenges and deliveries are kept in `callback_requests`;
- a verified request is answered with `AIOracle.fulfill` (output bytes up to 1 KiB, else its CID)
  instead of `TaskEscrow.settle_batch`, run by one agent (Task.replicas): the challenge window
  is the check, as in ORA's opML;
- once a result's window has passed it calls `finalize` (earning the callback reserve), and it
  `expire`s requests nobody answered by their fulfil-by time;
- on `Challenged` it leases the task to the drawn committee only (CommitteeDuty), counts their
  signed answers and calls `resolve` as soon as two agree, or after the committee deadline with
  what it has.

AIOracle's logs are read up to `confirmations` blocks below the head; a reorg of them is not
repaired here (the escrow's tasks are, by oracle/ingest.py), so run with confirmations on a
chain that reorgs.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from eth_abi import decode, encode
from sqlalchemy import select, update
from web3 import Web3
from web3.exceptions import ContractCustomError, ContractLogicError

from oracle.db import (
    CallbackRequest,
    CommitteeDuty,
    Cursor,
    Database,
    Job,
    JobState,
    SentTx,
    Task,
    TaskState,
    get_or_raise,
)
from oracle.ingest import DecodedLog, EventDecoder
from oracle.outages import is_outage
from oracle.rpc import is_transient
from oracle.txmanager import NotSent, TxManager
from tributa.ai_oracle import SETTLEMENT_ABI_TYPE
from tributa.chain.contracts import Contracts
from tributa.chain.tx import revert_reason
from tributa.errors import ChainError, ContractRevert
from tributa.store import cid_of_bytes, cid_to_digest

log = logging.getLogger("tributa.oracle.callbacks")

MAX_OUTPUT_BYTES = 1024  # AIOracle.MAX_OUTPUT_BYTES: longer outputs are posted as their CID
MAX_ORIGINAL_AGENTS = 2  # AIOracle.MAX_ORIGINAL_AGENTS: paid + slashed in a posted settlement
COMMITTEE_QUORUM = 2
REPLICAS = 1  # agents per request; more only delay the answer, the window is the check
CURSOR = "aioracle"
EVENTS = (
    "AICallbackRequest",
    "RequestTerms",
    "ResultPosted",
    "Challenged",
    "ChallengeResolved",
    "CallbackDelivered",
    "RequestExpired",
)
OUTCOMES = {1: "upheld", 2: "overturned", 3: "no_quorum"}
# Reverts that only mean the chain's clock has not reached the wall clock's yet.
_NOT_YET = ("challenge window open", "no quorum yet", "not expired", "committee deadline not passed")


class CallbackState:
    REQUESTED = "requested"
    PROVISIONAL = "provisional"
    CHALLENGED = "challenged"
    FINAL = "final"
    EXPIRED = "expired"


def encode_settlement(settlement: tuple) -> bytes:
    """abi_encode(s) as AIOracle takes it: TaskEscrow.settle's calldata after the selector."""
    return encode([SETTLEMENT_ABI_TYPE], [settlement])


def posted_output(output: bytes) -> tuple[bytes, bool]:
    """What fulfill/resolve carry for `output`: the bytes, or the binary CIDv0 of a longer one."""
    if len(output) <= MAX_OUTPUT_BYTES:
        return output, False
    return b"\x12\x20" + cid_to_digest(cid_of_bytes(output)), True


class CallbackRelay:
    def __init__(
        self, db: Database, contracts: Contracts, txm: TxManager, store, confirmations: int = 0, max_blocks: int = 2000
    ) -> None:
        if contracts.ai_oracle is None or contracts.committee is None:
            raise ValueError("the deployment has no AIOracle")
        self.db = db
        self.contracts = contracts
        self.ai_oracle = contracts.ai_oracle
        self.committee = contracts.committee
        self.address = self.ai_oracle.address
        self.txm = txm
        self.store = store
        self.confirmations = confirmations
        self.max_blocks = max(1, max_blocks)
        self.start_block = contracts.deployment.block_number
        self.decoder = EventDecoder(self.ai_oracle, EVENTS)
        self._posted: set[tuple[int, str]] = set()  # late verdicts posted on-chain by this process
        self._penalized: set[tuple[int, str]] = set()  # silences checked (and penalized) after their deadline

    # -- which tasks are requests --------------------------------------------------------------
    def owns(self, task: Task) -> bool:
        return task.requester.lower() == self.address.lower()

    # -- reading AIOracle ----------------------------------------------------------------------
    def poll_once(self) -> int:
        """Fold AIOracle's new confirmed logs into callback_requests; returns how many."""
        head = self.contracts.w3.eth.block_number - self.confirmations
        saved = self.db.cursor(CURSOR)
        start = self.start_block if saved is None else saved + 1
        count = 0
        while start <= head:
            end = min(head, start + self.max_blocks - 1)
            raw = self.contracts.w3.eth.get_logs({"address": self.address, "fromBlock": start, "toBlock": end})
            events = [ev for ev in (self.decoder.decode(r) for r in raw) if ev is not None]
            with self.db.session() as s:
                for ev in events:
                    self._apply_one(s, ev)
                cursor = s.get(Cursor, CURSOR)
                if cursor is None:
                    s.add(Cursor(name=CURSOR, block_number=end))
                else:
                    cursor.block_number = end
            count += len(events)
            start = end + 1
        return count

    def _apply_one(self, s, ev: DecodedLog) -> None:
        """Fold one event in a savepoint: one that cannot be folded is logged and skipped, so it
        never stalls the oracle's passes (an outage of the store, database or node is retried)."""
        try:
            with s.begin_nested():
                self._apply(s, ev)
        except Exception as exc:
            if is_outage(exc) or is_transient(exc):
                raise
            log.exception(
                "AIOracle event %s of request %s (tx %s) not folded in", ev.event, ev.args.get("request_id"), ev.tx_hash
            )

    def _apply(self, s, ev: DecodedLog) -> None:
        a = ev.args
        rid = int(a["request_id"])
        row = s.get(CallbackRequest, rid)
        if ev.event == "AICallbackRequest":
            if row is None:
                # The task names its input by this CID's digest: stored, its agents can be leased it.
                cid = str(self.store.put_bytes(bytes(a["input"])))
                s.add(
                    CallbackRequest(
                        request_id=rid,
                        model_id=int(a["model_id"]),
                        callback=a["callback_contract"],
                        gas_limit=int(a["gas_limit"]),
                        callback_data="0x" + bytes(a["callback_data"]).hex(),
                        input_cid=cid,
                        state=CallbackState.REQUESTED,
                    )
                )
                log.info(
                    "request %s from %s: model %s, input %s, callback gas %s",
                    rid,
                    a["account"],
                    a["model_id"],
                    cid,
                    a["gas_limit"],
                )
            return
        if row is None:
            log.warning("AIOracle event %s for unknown request %s ignored", ev.event, rid)
            return
        if ev.event == "RequestTerms":
            row.fulfil_by, row.challenge_window, row.escrow_deadline = (
                int(a["fulfil_by"]),
                int(a["challenge_window"]),
                int(a["escrow_deadline"]),
            )
        elif ev.event == "ResultPosted":
            if row.state == CallbackState.REQUESTED:
                row.state = CallbackState.PROVISIONAL
            row.final_at = int(a["final_at"])
        elif ev.event == "Challenged":
            self._challenged(s, row, list(a["candidates"]), int(a["resolve_by"]), a["challenger"])
        elif ev.event == "ChallengeResolved":
            row.outcome = OUTCOMES.get(int(a["outcome"]), str(a["outcome"]))
            if row.outcome == "overturned":  # the answers it posted disagreed with the final result, for reputation
                duty = select(CommitteeDuty.agent).where(CommitteeDuty.task_id == rid)
                s.execute(
                    update(Job)
                    .where(Job.task_id == rid, Job.agreed.is_(True), Job.agent.not_in(duty))
                    .values(agreed=False)
                    .execution_options(synchronize_session=False)
                )
        elif ev.event == "CallbackDelivered":
            row.state, row.delivered = CallbackState.FINAL, bool(a["success"])
            log.info(
                "request %s delivered to %s (callback %s, %s)",
                rid,
                row.callback,
                "succeeded" if a["success"] else "reverted",
                "settled" if a["settled"] else "refunded",
            )
        elif ev.event == "RequestExpired":
            row.state = CallbackState.EXPIRED
            log.info("request %s expired: %s wei refunded", rid, a["refunded"])

    def _challenged(self, s, row: CallbackRequest, candidates: list[str], resolve_by: int, challenger: str) -> None:
        row.state, row.candidates, row.resolve_by = CallbackState.CHALLENGED, json.dumps(candidates), resolve_by
        if not row.settlement:
            log.error(
                "request %s challenged, but its result was not posted by this oracle: no committee routed",
                row.request_id,
            )
            return
        settlement = self._decoded_settlement(row)
        originals = [Web3.to_checksum_address(a) for a in settlement[3]]
        members = self.committee.functions.committee_of(candidates, originals).call()
        for member in members:
            if s.get(CommitteeDuty, (row.request_id, member)) is None:
                s.add(CommitteeDuty(task_id=row.request_id, agent=member))
        task = s.get(Task, row.request_id)
        if task is not None:
            task.state = TaskState.CHALLENGED
        log.warning(
            "request %s challenged by %s: committee %s re-executes it by %s",
            row.request_id,
            challenger,
            members,
            resolve_by,
        )

    # -- answering -----------------------------------------------------------------------------
    def post(self, task_id: int, settlement: tuple, result_cid: str | None) -> str | None:
        """Answer a verified request with fulfill; returns the tx hash, or None if it must wait
        (AIOracle's request not read yet, or nothing sent)."""
        with self.db.session() as s:
            row = s.get(CallbackRequest, task_id)
            data = None if row is None else bytes.fromhex(row.callback_data[2:])
        if data is None:  # AIOracle's log not read yet: planned again on a later pass
            self._set_task(task_id, TaskState.VERIFIED, None)
            return None
        output, is_cid = posted_output(self.store.get_bytes(result_cid))
        paid = list(settlement[3])
        capped = (*settlement[:6], list(settlement[6])[: max(0, MAX_ORIGINAL_AGENTS - len(paid))], *settlement[7:])
        encoded = encode_settlement(capped)
        try:
            result = self.txm.transact(
                self.ai_oracle.functions.fulfill(task_id, output, is_cid, encoded, data), "fulfill", [task_id]
            )
        except ContractRevert as exc:
            if "not awaiting a result" in (exc.reason or ""):  # an earlier fulfill landed unrecorded
                self._set_task(task_id, self.adopt_posted(task_id), None)
                return None
            log.error("fulfill of request %s reverted: %s", task_id, exc.reason)
            self._set_task(task_id, TaskState.FAILING, f"AIOracle refused the result: {exc.reason}"[:128])
            return None
        except NotSent as exc:
            log.error("fulfill of request %s not sent: %s", task_id, exc)
            self._set_task(task_id, TaskState.VERIFIED, None)
            return None
        except ChainError as exc:
            log.error("fulfill of request %s not confirmed: %s", task_id, exc)
            return None
        with self.db.session() as s:
            row = get_or_raise(s, CallbackRequest, task_id)
            row.output, row.output_is_cid, row.settlement = "0x" + output.hex(), is_cid, "0x" + encoded.hex()
            task = get_or_raise(s, Task, task_id)
            if row.state == CallbackState.REQUESTED:
                row.state = CallbackState.PROVISIONAL
            if task.state == TaskState.SETTLING:
                task.state = TaskState.PROVISIONAL  # TaskSettled (W = 0: in this very tx) makes it SETTLED
            task.settle_tx = result.tx_hash
        log.info(
            "request %s answered in %s (%d output bytes%s)",
            task_id,
            result.tx_hash,
            len(output),
            ", a CID" if is_cid else "",
        )
        return result.tx_hash

    def adopt_posted(self, task_id: int) -> str:
        """The task state for a request caught mid-fulfil (a restart, a receipt never seen): per
        AIOracle, answered again (VERIFIED) or, posted, its fulfill recovered from the oracle's own
        sent transaction, so finalize / resolve can repeat it. Never FAILING: failing a posted
        request in the escrow would leave its agents unpaid and its challenge undecidable."""
        state = int(self.ai_oracle.functions.request(task_id).call().state)
        if state == 1:  # REQUESTED: the fulfill never landed
            return TaskState.VERIFIED
        with self.db.session() as s:
            sent = (
                s.execute(
                    select(SentTx)
                    .where(SentTx.purpose == "fulfill", SentTx.to_address == self.address)
                    .order_by(SentTx.id.desc())
                )
                .scalars()
                .all()
            )
            data = next((t.data for t in sent if task_id in json.loads(t.task_ids or "[]")), None)
        if data is None:
            log.error("request %s was posted by another oracle install: finalize / resolve left to others", task_id)
        else:
            _, args = self.ai_oracle.decode_function_input(data)
            with self.db.session() as s:
                row = s.get(CallbackRequest, task_id)
                if row is not None and not row.settlement:
                    row.output, row.output_is_cid = "0x" + bytes(args["output"]).hex(), bool(args["output_is_cid"])
                    row.settlement = "0x" + bytes(args["settlement"]).hex()
                    if row.state == CallbackState.CHALLENGED and row.candidates:
                        self._challenged(s, row, json.loads(row.candidates), row.resolve_by or 0, "(recovered)")
            log.info("request %s: its fulfill, already mined, recovered from the sent transaction", task_id)
        return {2: TaskState.PROVISIONAL, 3: TaskState.CHALLENGED, 5: TaskState.FAILED}.get(state, TaskState.SETTLED)

    def _set_task(self, task_id: int, state: str, reason: str | None) -> None:
        with self.db.session() as s:
            task = s.get(Task, task_id)
            if task is not None and task.state == TaskState.SETTLING:
                task.state = state
                if reason:
                    task.reason = reason

    # -- the clock's work ----------------------------------------------------------------------
    def step(self, chain_time: int) -> None:
        """Finalize what is due, resolve what the committee decided, expire what nobody ended.

        Due by the tip's time or by the wall clock, whichever is later: a node that mines only
        on demand (Anvil) stamps the next block with the wall clock, so waiting for a new tip
        would wait for somebody else's transaction. A call sent early is refused at estimation
        ("window open"), costs nothing and is retried."""
        chain_time = max(chain_time, int(time.time()))
        with self.db.session() as s:
            rows = (
                s.execute(
                    select(CallbackRequest).where(
                        CallbackRequest.state.in_(
                            (CallbackState.REQUESTED, CallbackState.PROVISIONAL, CallbackState.CHALLENGED)
                        )
                    )
                )
                .scalars()
                .all()
            )
            s.expunge_all()
        pending = self.txm.pending_task_ids()
        for row in rows:
            if row.request_id in pending:
                continue
            if row.escrow_deadline is not None and chain_time > row.escrow_deadline:
                self._send("expire", row.request_id, self.ai_oracle.functions.expire(row.request_id))
            elif row.state == CallbackState.REQUESTED:
                if row.fulfil_by is not None and chain_time > row.fulfil_by and not self._answered(row.request_id):
                    self._send("expire", row.request_id, self.ai_oracle.functions.expire(row.request_id))
            elif row.state == CallbackState.PROVISIONAL:
                if row.settlement and row.final_at is not None and chain_time >= row.final_at:
                    self._send(
                        "finalize",
                        row.request_id,
                        self.ai_oracle.functions.finalize(
                            row.request_id, _hex(row.output), _hex(row.settlement), _hex(row.callback_data)
                        ),
                    )
            elif row.state == CallbackState.CHALLENGED:
                self._maybe_resolve(row, chain_time)
        self._post_late_verdicts(chain_time)
        self._penalize_silence(chain_time)

    def _post_late_verdicts(self, chain_time: int) -> None:
        """Verdicts that arrived after their challenge was resolved, posted on-chain before the
        committee deadline (AICommittee.post_verdict): their members answered, so they must not
        lose their deposit as silent."""
        with self.db.session() as s:
            resolved = (
                s.execute(
                    select(CallbackRequest.request_id).where(
                        CallbackRequest.state == CallbackState.FINAL,
                        CallbackRequest.resolve_by >= chain_time,
                        CallbackRequest.candidates.is_not(None),
                    )
                )
                .scalars()
                .all()
            )
        for rid in resolved:
            self._post_verdicts(rid, self.verdicts(rid), only_silent=True)

    def _post_verdicts(self, rid: int, verdicts: list[tuple[str, bytes, bytes]], only_silent: bool = False) -> None:
        for member, digest, signature in verdicts:
            if (rid, member) in self._posted:
                continue
            committee = self.committee.functions
            if committee.posted_digest(rid, member).call() != b"\x00" * 32 or (
                only_silent and not committee.silent(rid, member).call()
            ):
                self._posted.add((rid, member))
                continue
            if self._send("post_verdict", rid, committee.post_verdict(rid, digest, signature)):
                self._posted.add((rid, member))

    def _answered(self, task_id: int) -> bool:
        """Whether fulfill went out (the state follows from AIOracle's log on a later pass)."""
        with self.db.session() as s:
            row = s.get(CallbackRequest, task_id)
            return bool(row and row.settlement)

    def _maybe_resolve(self, row: CallbackRequest, chain_time: int) -> None:
        if not row.settlement:
            return  # posted by an earlier oracle install: nothing to resolve with
        verdicts = self.verdicts(row.request_id)
        posted = bytes.fromhex(row.settlement[2:])[64:96]
        counts: dict[bytes, int] = {}
        for digest in self._verdict_digests(row.request_id, verdicts):
            counts[digest] = counts.get(digest, 0) + 1
        quorum = [d for d, n in counts.items() if n >= COMMITTEE_QUORUM]
        if quorum and quorum[0] != posted and not self._has_output(row.request_id, quorum[0]):
            quorum = []  # a replacement known only on-chain: its bytes come with a member's submission
        if not quorum and chain_time <= (row.resolve_by or 0):
            # No quorum yet: each verdict goes on-chain now, so it counts (and proves its member
            # answered) whoever resolves and whenever, even with no verdicts in hand.
            self._post_verdicts(row.request_id, verdicts)
            return
        output, is_cid = _hex(row.output), bool(row.output_is_cid)
        if quorum and quorum[0] != posted:
            output, is_cid = posted_output(self._committee_output(row.request_id, quorum[0]))
        if row.candidates is None:  # _challenged sets them with the state
            raise ValueError(f"challenged request {row.request_id} has no candidates")
        # Every verdict that came in: a member whose verdict is left out is recorded silent.
        call = self.ai_oracle.functions.resolve(
            row.request_id,
            json.loads(row.candidates),
            _hex(row.settlement),
            verdicts[:3],
            output,
            is_cid,
            _hex(row.callback_data),
        )
        self._send("resolve", row.request_id, call)

    def _verdict_digests(self, task_id: int, verdicts: list[tuple[str, bytes, bytes]]) -> list[bytes]:
        """One digest per member that answered: the verdict it posted on-chain (which the tally
        counts in place of any other), else the one it submitted here. Members answer on-chain
        themselves (compute_agent/duties.py), also while this oracle is away."""
        held = {member: digest for member, digest, _ in verdicts}
        with self.db.session() as s:
            members = [
                Web3.to_checksum_address(a)
                for a in s.execute(select(CommitteeDuty.agent).where(CommitteeDuty.task_id == task_id)).scalars()
            ]
        digests = []
        for member in members:
            on_chain = bytes(self.committee.functions.posted_digest(task_id, member).call())
            digest = on_chain if on_chain != bytes(32) else held.get(member)
            if digest is not None:
                digests.append(digest)
        return digests

    def _has_output(self, task_id: int, digest: bytes) -> bool:
        with self.db.session() as s:
            return (
                s.execute(
                    select(Job.result_cid).where(Job.task_id == task_id, Job.result_digest == "0x" + digest.hex())
                )
                .scalars()
                .first()
                is not None
            )

    def _penalize_silence(self, chain_time: int) -> None:
        """After a resolved challenge's committee deadline, penalize its members recorded silent
        (AICommittee.penalize: anyone may; the oracle does, as it finalizes)."""
        with self.db.session() as s:
            due = s.execute(
                select(CommitteeDuty.task_id, CommitteeDuty.agent)
                .join(CallbackRequest, CallbackRequest.request_id == CommitteeDuty.task_id)
                .where(CallbackRequest.state == CallbackState.FINAL, CallbackRequest.resolve_by < chain_time)
            ).all()
        for rid, member in due:
            if (rid, member) in self._penalized:
                continue
            if not self.committee.functions.silent(rid, member).call() or self._send(
                "penalize", rid, self.committee.functions.penalize(rid, member)
            ):
                self._penalized.add((rid, member))

    def verdicts(self, task_id: int) -> list[tuple[str, bytes, bytes]]:
        """The committee's signed answers so far: (member, result digest, Result signature)."""
        with self.db.session() as s:
            members = {
                Web3.to_checksum_address(a)
                for a in s.execute(select(CommitteeDuty.agent).where(CommitteeDuty.task_id == task_id)).scalars()
            }
            jobs = s.execute(
                select(Job).where(Job.task_id == task_id, Job.state == JobState.SUBMITTED).order_by(Job.id)
            ).scalars()
            return [
                (Web3.to_checksum_address(j.agent), _hex(j.result_digest), _hex(j.signature))
                for j in jobs
                if Web3.to_checksum_address(j.agent) in members
            ]

    def _committee_output(self, task_id: int, digest: bytes) -> bytes:
        with self.db.session() as s:
            cid = (
                s.execute(
                    select(Job.result_cid).where(Job.task_id == task_id, Job.result_digest == "0x" + digest.hex())
                )
                .scalars()
                .first()
            )
        return self.store.get_bytes(cid)

    def _send(self, purpose: str, request_id: int, call: Any) -> bool:
        """Send one of the relay's calls; whether it was mined (else it is tried on a later pass).

        Estimated on the pending block, where it lands: a call due by time passes once that
        block's timestamp is due, even while no block is mined (the latest block's would not)."""
        try:
            try:
                estimate = call.estimate_gas({"from": self.txm.address}, block_identifier="pending")
            except (ContractLogicError, ContractCustomError) as exc:
                raise ContractRevert(revert_reason(exc), purpose) from None
            result = self.txm.transact(call, purpose, [request_id], gas=estimate * 6 // 5 + 10_000)
        except ContractRevert as exc:
            if any(reason in (exc.reason or "") for reason in _NOT_YET):
                log.debug("%s of request %s not due on-chain yet: %s", purpose, request_id, exc.reason)
                return False
            log.error("%s of request %s reverted: %s", purpose, request_id, exc.reason)
            with self.db.session() as s:
                get_or_raise(s, CallbackRequest, request_id).note = f"{purpose}: {exc.reason}"[:500]
            return False
        except ChainError as exc:
            log.error("%s of request %s not confirmed: %s", purpose, request_id, exc)
            return False
        log.info("request %s: %s in %s", request_id, purpose, result.tx_hash)
        return True

    @staticmethod
    def _decoded_settlement(row: CallbackRequest) -> tuple:
        return decode([SETTLEMENT_ABI_TYPE], _hex(row.settlement))[0]


def _hex(value: str | None) -> bytes:
    return bytes.fromhex(value[2:]) if value else b""
