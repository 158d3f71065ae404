"""The oracle's durable state: SQLite by default, PostgreSQL when given a URL.

Every fact the oracle acts on is written here first, so a restart (even after kill -9)
resumes where it stopped without losing or repeating anything.
"""

from __future__ import annotations

import errno
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import (
    BigInteger,
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    create_engine,
    event,
)
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

from tributa.errors import TributaError
from tributa.sqlite_wal import enter_wal
from tributa.writable import describe, sqlite_files, unwritable


class Wei(TypeDecorator):
    """uint256 amounts stored as decimal text: exact in SQLite and PostgreSQL alike."""

    impl = String(80)
    cache_ok = True

    def process_bind_param(self, value, dialect):
        return None if value is None else str(int(value))

    def process_result_value(self, value, dialect):
        return None if value is None else int(value)


class Base(DeclarativeBase):
    pass


class TaskState:
    OPEN = "open"  # posted on-chain, waiting for an agent
    RUNNING = "running"  # leased to an agent
    VERIFIED = "verified"  # result accepted, waiting for settlement
    SETTLING = "settling"  # settle transaction sent
    SETTLED = "settled"
    FAILING = "failing"  # failure decided, fail_task not yet mined
    FAILED = "failed"  # failed on-chain; the fee is refundable
    REFUNDED = "refunded"
    # A contract's request (oracle/callbacks.py): result posted to AIOracle, final after its window.
    PROVISIONAL = "provisional"
    # A provisional result under challenge: leased only to its committee (CommitteeDuty).
    CHALLENGED = "challenged"
    # Its TaskPosted was reorged out after agents had worked on it: kept for the record, never
    # leased or settled; restored if the same posting is re-included (see oracle/ingest.py).
    ORPHANED = "orphaned"

    ACTIVE = (OPEN, RUNNING, VERIFIED, SETTLING, FAILING, PROVISIONAL, CHALLENGED)


class JobState:
    LEASED = "leased"
    SUBMITTED = "submitted"
    ERRORED = "errored"
    EXPIRED = "expired"


class Cursor(Base):
    __tablename__ = "cursors"
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    block_number: Mapped[int] = mapped_column(BigInteger)


class ChainLog(Base):
    """Each log is saved before it is acted on; (block hash, log index) is unique."""

    __tablename__ = "chain_logs"
    __table_args__ = (UniqueConstraint("block_hash", "log_index", name="uq_log"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    block_number: Mapped[int] = mapped_column(BigInteger, index=True)
    block_hash: Mapped[str] = mapped_column(String(66))
    log_index: Mapped[int] = mapped_column(Integer)
    tx_hash: Mapped[str] = mapped_column(String(66))
    event: Mapped[str] = mapped_column(String(64))
    task_id: Mapped[int | None] = mapped_column(BigInteger, nullable=True, index=True)
    # The decoded arguments (JSON), so task state can be rebuilt from surviving logs after a reorg.
    args: Mapped[str | None] = mapped_column(Text, nullable=True)


class IngestedBlock(Base):
    """Hashes of recently processed blocks, per cursor: how the ingestor notices a reorg."""

    __tablename__ = "ingested_blocks"
    cursor: Mapped[str] = mapped_column(String(64), primary_key=True)
    block_number: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    block_hash: Mapped[str] = mapped_column(String(66))


class Task(Base):
    __tablename__ = "tasks"
    task_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    requester: Mapped[str] = mapped_column(String(42))
    model_id: Mapped[int] = mapped_column(BigInteger)
    input_digest: Mapped[str] = mapped_column(String(66))
    fee: Mapped[int] = mapped_column(Wei)
    model_fee: Mapped[int] = mapped_column(Wei)
    deadline: Mapped[int] = mapped_column(BigInteger)
    k: Mapped[int] = mapped_column(Integer)
    state: Mapped[str] = mapped_column(String(16), index=True)
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    posted_block: Mapped[int] = mapped_column(BigInteger)
    posted_at: Mapped[float] = mapped_column(Float)  # when the oracle ingested it
    result_cid: Mapped[str | None] = mapped_column(String(100), nullable=True)
    result_digest: Mapped[str | None] = mapped_column(String(66), nullable=True)
    attribution_cid: Mapped[str | None] = mapped_column(String(100), nullable=True)
    attribution_digest: Mapped[str | None] = mapped_column(String(66), nullable=True)
    settle_tx: Mapped[str | None] = mapped_column(String(66), nullable=True)
    settled_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    agent_paid: Mapped[int | None] = mapped_column(Wei, nullable=True)
    refund: Mapped[int | None] = mapped_column(Wei, nullable=True)
    gas_used: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    refund_tx: Mapped[str | None] = mapped_column(String(66), nullable=True)
    # Private tasks: the requester's key outputs are sealed to, and the sealed result's CID.
    output_pubkey: Mapped[str | None] = mapped_column(String(132), nullable=True)
    result_ciphertext_cid: Mapped[str | None] = mapped_column(String(100), nullable=True)
    # How many agents run it, when fewer than k (a contract's request: k leaves room for a committee).
    replicas: Mapped[int | None] = mapped_column(Integer, nullable=True)

    @property
    def private(self) -> bool:
        return self.output_pubkey is not None

    @property
    def wanted(self) -> int:
        """The number of agents' answers the task waits for."""
        return self.replicas if self.replicas is not None else self.k


class Job(Base):
    """One agent's lease on one task."""

    __tablename__ = "jobs"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    task_id: Mapped[int] = mapped_column(ForeignKey("tasks.task_id"), index=True)
    agent: Mapped[str] = mapped_column(String(42), index=True)
    state: Mapped[str] = mapped_column(String(16), index=True)
    leased_at: Mapped[float] = mapped_column(Float)
    lease_expires_at: Mapped[float] = mapped_column(Float)
    result_cid: Mapped[str | None] = mapped_column(String(100), nullable=True)
    result_digest: Mapped[str | None] = mapped_column(String(66), nullable=True)
    signature: Mapped[str | None] = mapped_column(String(140), nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    submitted_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    requester_cid: Mapped[str | None] = mapped_column(String(100), nullable=True)  # private: sealed output
    # Private: the same output sealed to the oracle's own key, opened only to judge the answers.
    oracle_cid: Mapped[str | None] = mapped_column(String(100), nullable=True)
    # The lease as the agent signed it: Lease(task_id, lease_chain_expires_at), chain time in seconds.
    # Only a job with a verified lease signature can be slashed for silence (TaskEscrow checks it).
    lease_chain_expires_at: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    lease_signature: Mapped[str | None] = mapped_column(String(140), nullable=True)
    # Set at settlement: whether this answer agreed with the verdict (None: not judged yet).
    agreed: Mapped[bool | None] = mapped_column(Boolean, nullable=True)
    accepted_at: Mapped[float | None] = mapped_column(Float, nullable=True)


class CallbackRequest(Base):
    """A contract's request through AIOracle (oracle/callbacks.py); request_id is its task id."""

    __tablename__ = "callback_requests"
    request_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    model_id: Mapped[int] = mapped_column(BigInteger)
    callback: Mapped[str] = mapped_column(String(42))
    gas_limit: Mapped[int] = mapped_column(BigInteger)
    callback_data: Mapped[str] = mapped_column(Text)  # 0x-hex
    input_cid: Mapped[str] = mapped_column(String(100))
    state: Mapped[str] = mapped_column(String(16), index=True)  # see CallbackState
    fulfil_by: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    challenge_window: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    escrow_deadline: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    # What fulfill posted (0x-hex), kept for finalize / resolve, which must repeat it.
    output: Mapped[str | None] = mapped_column(Text, nullable=True)
    output_is_cid: Mapped[bool | None] = mapped_column(Boolean, nullable=True)
    settlement: Mapped[str | None] = mapped_column(Text, nullable=True)
    final_at: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    candidates: Mapped[str | None] = mapped_column(Text, nullable=True)  # JSON list, as in Challenged
    resolve_by: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    outcome: Mapped[str | None] = mapped_column(String(16), nullable=True)
    delivered: Mapped[bool | None] = mapped_column(Boolean, nullable=True)  # the callback's success
    note: Mapped[str | None] = mapped_column(Text, nullable=True)


class CommitteeDuty(Base):
    """A committee member of a challenged request: the only agents its task is leased to."""

    __tablename__ = "committee_duties"
    task_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    agent: Mapped[str] = mapped_column(String(42), primary_key=True)


class ApiNonce(Base):
    """Nonces of signed API requests already seen: a replay is refused."""

    __tablename__ = "api_nonces"
    agent: Mapped[str] = mapped_column(String(42), primary_key=True)
    nonce: Mapped[str] = mapped_column(String(80), primary_key=True)
    expiry: Mapped[int] = mapped_column(BigInteger, index=True)


class Upload(Base):
    """Content an account uploaded through the content API (oracle/content.py): its quota."""

    __tablename__ = "uploads"
    account: Mapped[str] = mapped_column(String(42), primary_key=True)
    root_cid: Mapped[str] = mapped_column(String(100), primary_key=True)
    purpose: Mapped[str] = mapped_column(String(40))  # task:N, dataset:N or model:N
    bytes: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[float] = mapped_column(Float)


class AgentSeen(Base):
    """Agents' last contact, for routing and `tributa oracle status`."""

    __tablename__ = "agents_seen"
    agent: Mapped[str] = mapped_column(String(42), primary_key=True)
    last_poll_at: Mapped[float] = mapped_column(Float)
    registered: Mapped[bool] = mapped_column(Boolean, default=True)
    # Bonded stake as last read from the chain (on a stake event), and whether it is >= min_stake:
    # the job book leases nothing to an agent with stake_ok False (None: not read yet).
    bonded_stake: Mapped[int | None] = mapped_column(Wei, nullable=True)
    stake_ok: Mapped[bool | None] = mapped_column(Boolean, nullable=True)


class TxState:
    """A logical transaction (one nonce) and each signed attempt at it."""

    PENDING = "pending"  # signed and recorded; broadcast or about to be
    MINED = "mined"  # included; receipt_status says whether it succeeded
    FAILED = "failed"  # reverted on-chain, or refused by the node before it used the nonce
    REPLACED = "replaced"  # attempt: superseded by a fee bump; tx: nonce used by a foreign tx


class TxKey(Base):
    """One row per sending key and chain: the nonce manager's persisted counter (row-locked)."""

    __tablename__ = "tx_keys"
    chain_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    address: Mapped[str] = mapped_column(String(42), primary_key=True)
    next_nonce: Mapped[int] = mapped_column(BigInteger)
    updated_at: Mapped[float] = mapped_column(Float)


class SentTx(Base):
    """A transaction the oracle decided to send: written (signed) before it is broadcast."""

    __tablename__ = "sent_txs"
    __table_args__ = (Index("ix_sent_txs_sender_nonce", "chain_id", "sender", "nonce"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    chain_id: Mapped[int] = mapped_column(BigInteger)
    sender: Mapped[str] = mapped_column(String(42))
    nonce: Mapped[int] = mapped_column(BigInteger)
    purpose: Mapped[str] = mapped_column(String(64))
    task_ids: Mapped[str] = mapped_column(Text, default="[]")  # JSON list
    to_address: Mapped[str] = mapped_column(String(42))
    data: Mapped[str] = mapped_column(Text)  # 0x calldata
    value: Mapped[int] = mapped_column(Wei)
    gas: Mapped[int] = mapped_column(BigInteger)
    state: Mapped[str] = mapped_column(String(16), index=True)
    created_at: Mapped[float] = mapped_column(Float)
    updated_at: Mapped[float] = mapped_column(Float)
    mined_tx_hash: Mapped[str | None] = mapped_column(String(66), nullable=True)
    mined_block: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    receipt_status: Mapped[int | None] = mapped_column(Integer, nullable=True)
    gas_used: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)


class TxAttempt(Base):
    """One signed version of a SentTx (a fee bump is a new attempt with the same nonce)."""

    __tablename__ = "tx_attempts"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    tx_id: Mapped[int] = mapped_column(ForeignKey("sent_txs.id"), index=True)
    tx_hash: Mapped[str] = mapped_column(String(66), unique=True)
    raw_tx: Mapped[str] = mapped_column(Text)  # 0x signed bytes, rebroadcast as-is
    max_fee_per_gas: Mapped[int | None] = mapped_column(Wei, nullable=True)
    max_priority_fee_per_gas: Mapped[int | None] = mapped_column(Wei, nullable=True)
    gas_price: Mapped[int | None] = mapped_column(Wei, nullable=True)
    state: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[float] = mapped_column(Float)
    broadcast_at: Mapped[float | None] = mapped_column(Float, nullable=True)  # None: no node has it yet
    broadcast_block: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)


def database_url(data_dir: Path, url: str | None = None) -> str:
    """`url` if given (e.g. postgresql+psycopg2://…), else SQLite in the data directory."""
    if url:
        return url
    data_dir.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{(data_dir / 'oracle.sqlite').resolve()}"


class StorageUnavailable(TributaError, OSError):
    """The database's files cannot be written now: an immutable (`chattr +i`) or read-only data dir."""


def _sqlite_files(url: str) -> tuple[str, ...]:
    """The folder and files SQLite writes for the database at `url` (none for an in-memory one)."""
    path = url.split(":///", 1)[1] if ":///" in url else ""
    return sqlite_files(path) if path and not path.startswith(":memory:") else ()


def check_writable(files: tuple[str, ...]) -> None:
    """Refuse a transaction, with the reason, while any of SQLite's files cannot be written: see
    tributa.writable (otherwise SQLite's next write to its -shm mapping kills the process)."""
    path = unwritable(files)
    if path is not None:
        raise StorageUnavailable(
            errno.EROFS, f"the data dir is not writable ({describe(path)}); the oracle waits until it is"
        )


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})
        files = _sqlite_files(url)

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record):  # WAL: readers never block the writer
            check_writable(files)
            cur = dbapi_conn.cursor()
            enter_wal(cur)
            # WAL + NORMAL survives a killed process (kill -9) with every commit intact; only an OS
            # crash or power cut can lose the last commits, and the chain is the source of truth
            # they are rebuilt from. FULL fsyncs every commit and caps the job API at ~100 commits/s.
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()

        @event.listens_for(engine, "before_cursor_execute")
        def _storage_writable(*_args):  # every statement, reads too: each may write a read mark in -shm
            check_writable(files)

    else:
        engine = create_engine(url, pool_pre_ping=True)
    return engine


class Database:
    """The oracle's database, migrated to the newest schema (Alembic `upgrade head`) on open."""

    def __init__(self, url: str) -> None:
        from oracle.migrations import upgrade_head  # here: the migrations import this module's models

        self.url = url
        self.engine = make_engine(url)
        upgrade_head(self.engine)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    @contextmanager
    def session(self) -> Iterator[Session]:
        """One transaction: committed on success, rolled back on any error."""
        with self._sessions() as session:
            with session.begin():
                yield session

    def cursor(self, name: str) -> int | None:
        with self.session() as s:
            row = s.get(Cursor, name)
            return row.block_number if row else None


_Row = TypeVar("_Row", bound=Base)


class RowMissing(TributaError, LookupError):
    """A row the caller's logic says exists is not in the database (a bug or a concurrent delete)."""


def get_or_raise(session: Session, model: type[_Row], key: Any, **options: Any) -> _Row:
    """`session.get` for rows that must exist: a clear error instead of an AttributeError on None later."""
    row = session.get(model, key, **options)
    if row is None:
        raise RowMissing(f"no {model.__name__} row {key!r}")
    return row


def now() -> float:
    return time.time()
