"""The transaction manager's rows: transactions, their signed attempts, and each key's nonce counter.

Every transaction is signed and written to the database (`sent_txs` + `tx_attempts`) before it is
broadcast, so a crash at any point leaves a record to finish from, never a lost nonce.

Nonces come from a row-locked counter per (chain, key): the next nonce is the highest of the
chain's pending count and one past the highest nonce still in flight here (so a node that lost its
mempool, or a restart, never re-uses an in-flight nonce, and a chain reset never leaves a gap).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from eth_typing import ChecksumAddress, HexStr
from hexbytes import HexBytes
from sqlalchemy import func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from oracle.db import Database, RowMissing, SentTx, TxAttempt, TxKey, TxState, get_or_raise, now
from oracle.tx import log
from tributa.errors import ChainError

# Signs a transaction's current nonce and fields into a new attempt (run inside the row lock, so
# the nonce it signs is the one recorded).
Sign = Callable[[SentTx], TxAttempt]


@dataclass(frozen=True)
class TxRecord:
    """A snapshot of one logical transaction (one nonce) and its latest attempt."""

    id: int
    nonce: int
    purpose: str
    task_ids: tuple[int, ...]
    state: str
    tx_hash: str  # the mined attempt's hash, else the newest attempt's
    attempts: int
    max_fee_per_gas: int | None
    max_priority_fee_per_gas: int | None
    gas_price: int | None
    mined_block: int | None
    receipt_status: int | None
    gas_used: int | None
    error: str | None

    @property
    def final(self) -> bool:
        return self.state != TxState.PENDING


@dataclass(frozen=True)
class NewTx:
    """A transaction to send, before it has a nonce (gas None: estimate it)."""

    to: ChecksumAddress
    data: HexStr  # 0x calldata
    value: int
    gas: int | None
    purpose: str
    task_ids: list[int]  # sorted, distinct: the in-flight check compares them as JSON


class TxStore:
    """The rows of one sending key on one chain."""

    def __init__(self, db: Database, chain_id: int, sender: ChecksumAddress) -> None:
        self.db = db
        self.chain_id = chain_id
        self.sender = sender

    # -- nonces --------------------------------------------------------------------------------
    def record_new(self, new: NewTx, gas: int, chain_pending: int, sign: Sign) -> int:
        """Take a nonce under the key's row lock, sign, and write tx + attempt in one transaction.

        `chain_pending` is read by the caller before the lock (no RPC while holding it):
        transactions recorded by another process in between are covered by the in-flight maximum
        read under the lock."""
        with self.db.session() as s:
            key = self._locked_key(s)
            in_flight = s.execute(
                select(func.max(SentTx.nonce)).where(*self._ours(), SentTx.state == TxState.PENDING)
            ).scalar()
            nonce = max(chain_pending, -1 if in_flight is None else in_flight + 1)
            if key.next_nonce > nonce:
                log.warning(
                    "nonce counter for %s says %d but the chain and in-flight txs say %d (chain reset, or txs "
                    "dropped); continuing from %d",
                    self.sender,
                    key.next_nonce,
                    nonce,
                    nonce,
                )
            tx = SentTx(
                chain_id=self.chain_id,
                sender=self.sender,
                nonce=nonce,
                purpose=new.purpose,
                task_ids=json.dumps(new.task_ids),
                to_address=new.to,
                data=new.data,
                value=new.value,
                gas=gas,
                state=TxState.PENDING,
                created_at=now(),
                updated_at=now(),
            )
            s.add(tx)
            s.flush()  # the attempt refers to the tx's id
            s.add(sign(tx))
            key.next_nonce = nonce + 1
            key.updated_at = now()
            return tx.id

    def renonce(self, tx_id: int, chain_pending: int, sign: Sign) -> int:
        """Another sender used this tx's nonce: fail its attempts, give it the next free nonce and
        sign it again. Returns the new nonce."""
        with self.db.session() as s:
            key = self._locked_key(s)
            tx = get_or_raise(s, SentTx, tx_id)
            for old in s.execute(select(TxAttempt).where(TxAttempt.tx_id == tx_id)).scalars():
                old.state, old.error = TxState.FAILED, f"nonce {tx.nonce} was already used by another transaction"
            tx.nonce = max(chain_pending, key.next_nonce)
            tx.updated_at = now()
            s.add(sign(tx))
            key.next_nonce = tx.nonce + 1
            return tx.nonce

    def fail_unsent(self, tx_id: int, reason: str) -> None:
        """The node refused a tx that never reached a mempool: mark it failed and free its nonce."""
        with self.db.session() as s:
            key = self._locked_key(s)
            tx = get_or_raise(s, SentTx, tx_id)
            tx.state, tx.error, tx.updated_at = TxState.FAILED, f"rejected by the node: {reason}", now()
            for attempt in s.execute(select(TxAttempt).where(TxAttempt.tx_id == tx_id)).scalars():
                attempt.state = TxState.FAILED
            if key.next_nonce == tx.nonce + 1:
                key.next_nonce = tx.nonce

    def _locked_key(self, s: Session) -> TxKey:
        """The key's nonce row, locked until the transaction ends.

        Insert-or-ignore comes first: it creates the row once, and on SQLite it is the write
        that takes the database's write lock before anything is read (so two processes queue
        instead of racing); on PostgreSQL the row is then locked FOR UPDATE.
        """
        dialect = postgresql if s.get_bind().dialect.name == "postgresql" else sqlite
        s.execute(
            dialect.insert(TxKey)
            .values(chain_id=self.chain_id, address=self.sender, next_nonce=0, updated_at=now())
            .on_conflict_do_nothing()
        )
        return get_or_raise(s, TxKey, (self.chain_id, self.sender), with_for_update=True, populate_existing=True)

    def _ours(self) -> tuple[Any, ...]:
        """The WHERE terms for this key's transactions."""
        return SentTx.chain_id == self.chain_id, SentTx.sender == self.sender

    # -- attempts ------------------------------------------------------------------------------
    def add_attempt(self, attempt: TxAttempt) -> TxAttempt:
        """Record a new signed attempt (a fee bump); returns it with its id, detached."""
        with self.db.session() as s:
            s.add(attempt)
            s.flush()
            s.expunge(attempt)
            return attempt

    def mark_accepted(self, attempt_id: int, block: int | None) -> None:
        """A node took the attempt (now, at about `block`): the stuck clocks start here."""
        with self.db.session() as s:
            row = get_or_raise(s, TxAttempt, attempt_id)
            row.broadcast_at, row.broadcast_block, row.error = now(), block, None

    def mark_refused(self, attempt_id: int, error: str) -> None:
        with self.db.session() as s:
            get_or_raise(s, TxAttempt, attempt_id).error = error

    def supersede(self, tx_id: int, attempt_id: int) -> None:
        """`attempt_id` replaced the tx's other pending attempts (a bump the node accepted)."""
        with self.db.session() as s:
            for older in s.execute(
                select(TxAttempt).where(
                    TxAttempt.tx_id == tx_id, TxAttempt.id != attempt_id, TxAttempt.state == TxState.PENDING
                )
            ).scalars():
                older.state = TxState.REPLACED

    def fail_attempt(self, attempt_id: int) -> None:
        with self.db.session() as s:
            get_or_raise(s, TxAttempt, attempt_id).state = TxState.FAILED

    # -- outcomes ------------------------------------------------------------------------------
    def finalise(self, tx_id: int, attempt_id: int, receipt: Any) -> None:
        """`attempt_id` was mined with `receipt`: the tx is MINED (or FAILED if it reverted), its
        other attempts REPLACED."""
        with self.db.session() as s:
            tx = get_or_raise(s, SentTx, tx_id)
            ok = receipt["status"] == 1
            tx.state = TxState.MINED if ok else TxState.FAILED
            tx.mined_tx_hash = HexBytes(receipt["transactionHash"]).to_0x_hex()
            tx.mined_block = receipt["blockNumber"]
            tx.receipt_status = receipt["status"]
            tx.gas_used = receipt["gasUsed"]
            tx.updated_at = now()
            if not ok:
                tx.error = "reverted on-chain"
            for attempt in s.execute(select(TxAttempt).where(TxAttempt.tx_id == tx_id)).scalars():
                attempt.state = TxState.MINED if attempt.id == attempt_id else TxState.REPLACED

    def mark_nonce_taken(self, tx_id: int) -> None:
        """A transaction this manager did not send used the tx's nonce (REPLACED)."""
        with self.db.session() as s:
            row = get_or_raise(s, SentTx, tx_id)
            row.state, row.updated_at = TxState.REPLACED, now()
            row.error = f"nonce {row.nonce} was used by a transaction this manager did not send"

    def mined_above(self, block: int) -> list[tuple[int, str]]:
        """(id, mined hash) of this key's transactions recorded as mined above `block`."""
        with self.db.session() as s:
            rows = s.execute(
                select(SentTx.id, SentTx.mined_tx_hash).where(
                    *self._ours(), SentTx.mined_block > block, SentTx.state.in_((TxState.MINED, TxState.FAILED))
                )
            ).all()
        # A mined hash is written with the block (finalise): none is missing on these rows.
        return [(tx_id, tx_hash) for tx_id, tx_hash in rows if tx_hash is not None]

    def move_to_block(self, tx_id: int, block: int) -> None:
        """The tx was mined again, in `block`, on the chain that replaced the reorged one."""
        with self.db.session() as s:
            get_or_raise(s, SentTx, tx_id).mined_block = block

    def reopen(self, tx_id: int) -> None:
        """The tx's block was reorged out: back to PENDING, its mined attempt too."""
        with self.db.session() as s:
            tx = get_or_raise(s, SentTx, tx_id)
            log.warning(
                "tx #%d (%s, nonce %d) was reorged out of block %s; back to pending",
                tx_id,
                tx.purpose,
                tx.nonce,
                tx.mined_block,
            )
            tx.state, tx.updated_at, tx.error = TxState.PENDING, now(), None
            tx.mined_tx_hash = tx.mined_block = tx.receipt_status = tx.gas_used = None
            for attempt in s.execute(
                select(TxAttempt).where(TxAttempt.tx_id == tx_id, TxAttempt.state == TxState.MINED)
            ).scalars():
                attempt.state = TxState.PENDING

    # -- reading -------------------------------------------------------------------------------
    def record(self, tx_id: int) -> TxRecord:
        with self.db.session() as s:
            tx = s.get(SentTx, tx_id)
            if tx is None:
                raise ChainError(f"no transaction #{tx_id} in the oracle's database")
            return _snapshot(tx, self._attempts(s, tx_id))

    def pending(self) -> list[TxRecord]:
        """This key's in-flight transactions, by nonce."""
        with self.db.session() as s:
            ids = (
                s.execute(
                    select(SentTx.id)
                    .where(*self._ours(), SentTx.state == TxState.PENDING)
                    .order_by(SentTx.nonce, SentTx.id)
                )
                .scalars()
                .all()
            )
        return [self.record(i) for i in ids]

    def pending_for(self, purpose: str, task_ids: list[int]) -> TxRecord | None:
        """The in-flight tx with this purpose for exactly these (sorted) tasks, if any."""
        with self.db.session() as s:
            tx_id = s.execute(
                select(SentTx.id).where(
                    *self._ours(),
                    SentTx.state == TxState.PENDING,
                    SentTx.purpose == purpose,
                    SentTx.task_ids == json.dumps(task_ids),
                )
            ).scalar()
        return None if tx_id is None else self.record(tx_id)

    def sent(self, tx_id: int) -> SentTx:
        """The tx's row, detached."""
        with self.db.session() as s:
            tx = get_or_raise(s, SentTx, tx_id)
            s.expunge(tx)
            return tx

    def unsettled(self, tx_id: int) -> tuple[SentTx, list[TxAttempt]] | None:
        """The tx and its attempts, newest first, while it is pending; None once it is final."""
        with self.db.session() as s:
            tx = get_or_raise(s, SentTx, tx_id)
            if tx.state != TxState.PENDING:
                return None
            attempts = self._attempts(s, tx_id)[::-1]
            s.expunge_all()
            return tx, attempts

    def attempts(self, tx_id: int) -> list[TxAttempt]:
        """The tx's attempts, oldest first, detached."""
        with self.db.session() as s:
            rows = self._attempts(s, tx_id)
            s.expunge_all()
        return rows

    def newest_attempt(self, tx_id: int) -> TxAttempt:
        with self.db.session() as s:
            row = s.execute(self._newest(tx_id)).scalars().first()
            if row is None:
                raise RowMissing(f"no TxAttempt row for transaction #{tx_id}")
            s.expunge(row)
            return row

    def newest_live_attempt(self, tx_id: int) -> TxAttempt | None:
        """The newest attempt not refused by a node, if any."""
        with self.db.session() as s:
            row = s.execute(self._newest(tx_id).where(TxAttempt.state != TxState.FAILED)).scalars().first()
            if row is not None:
                s.expunge(row)
            return row

    @staticmethod
    def _attempts(s: Session, tx_id: int) -> list[TxAttempt]:
        return list(s.execute(select(TxAttempt).where(TxAttempt.tx_id == tx_id).order_by(TxAttempt.id)).scalars())

    @staticmethod
    def _newest(tx_id: int) -> Any:
        return select(TxAttempt).where(TxAttempt.tx_id == tx_id).order_by(TxAttempt.id.desc())


def _snapshot(tx: SentTx, attempts: list[TxAttempt]) -> TxRecord:
    live = [a for a in attempts if a.state != TxState.FAILED] or attempts
    shown = next((a for a in attempts if a.tx_hash == tx.mined_tx_hash), None) or live[-1]
    return TxRecord(
        id=tx.id,
        nonce=tx.nonce,
        purpose=tx.purpose,
        task_ids=tuple(json.loads(tx.task_ids)),
        state=tx.state,
        tx_hash=tx.mined_tx_hash or shown.tx_hash,
        attempts=len(attempts),
        max_fee_per_gas=shown.max_fee_per_gas,
        max_priority_fee_per_gas=shown.max_priority_fee_per_gas,
        gas_price=shown.gas_price,
        mined_block=tx.mined_block,
        receipt_status=tx.receipt_status,
        gas_used=tx.gas_used,
        error=tx.error,
    )
