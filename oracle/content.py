"""The oracle's content API rules: who may upload what, how much, and who may read a sealed copy.

Roles on their own machines upload what they registered (a task's input, a dataset's content, a
model's weights or adapters) as one CARv1 per root. An upload is accepted only when

- it is signed by the account (the job API's EIP-712 request signature: chain, escrow, nonce)
  over a path naming its root and purpose; the body is not hashed into the signature, since
  every block is checked against its CID and only the named root's DAG is accepted. So the
  signature and the registration are checked before a byte of the body is read;
- it names what it is for (`task:N`, `dataset:N`, `model:N`) and the chain registers that root
  for that entry, by that account (the task's requester, the dataset's owner, the model's
  publisher): storage is then bounded by what someone paid gas to register, not by how many
  keys a stranger can make;
- every block hashes to its CID and the DAG under the root is complete;
- it fits the per-upload limit and the account's quota (bytes of accepted uploads).

Reads are open (content addressed, re-checked by whoever reads), except the sealed copies of
private tasks: their input envelope, the requester's sealed output and the oracle's own sealed
copies are served only on a request the task's requester signed.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import func, or_, select

from oracle.db import Database, Job, Task, TaskState, Upload, get_or_raise, now
from oracle.jobs import RequestRefused
from tributa.chain.contracts import Contracts
from tributa.errors import TributaError
from tributa.store import cid as cidlib
from tributa.store import dagpb
from tributa.store.car import CarError, read_car
from tributa.store.cid import Cid
from tributa.store.errors import ContentIntegrityError, StoreError

log = logging.getLogger("tributa.oracle.content")

MAX_UPLOAD_BYTES = 256 * 2**20  # one CAR; a larger dataset goes through a shared Kubo node
ACCOUNT_QUOTA_BYTES = 2 * 2**30
MIN_BYTES_PER_BLOCK = 1024  # honest DAGs carry 256 KiB chunks; a CAR of tiny blocks is refused
BLOCK_OVERHEAD_BYTES = 512  # charged per block: the store's index row and pack framing
UPLOADS_AT_ONCE = 2  # each holds its CAR in memory while it is read and checked (oracle/api.py)
_PURPOSE = re.compile(r"^(task|dataset|model):([0-9]{1,18})$")


@dataclass(frozen=True)
class UploadLimits:
    max_upload_bytes: int = MAX_UPLOAD_BYTES
    account_quota_bytes: int = ACCOUNT_QUOTA_BYTES


@dataclass(frozen=True)
class Accepted:
    root: str
    bytes: int
    blocks: int
    already_held: bool
    quota_used: int
    quota: int

    def to_json(self) -> dict:
        return {
            "root": self.root,
            "bytes": self.bytes,
            "blocks": self.blocks,
            "already_held": self.already_held,
            "quota_used_bytes": self.quota_used,
            "quota_bytes": self.quota,
        }


class ContentBook:
    """Checks and records uploads into `store`; `contracts` answers what the chain registers."""

    def __init__(
        self,
        db: Database,
        store,
        contracts: Contracts | None,
        limits: UploadLimits = UploadLimits(),
        on_stored: Callable[[str, str], None] | None = None,
    ) -> None:
        self.db = db
        self.store = store
        self.contracts = contracts
        self.limits = limits
        self.on_stored = on_stored  # (purpose, root): e.g. index a dataset the moment its content arrives
        self._quota_lock = threading.Lock()

    # -- uploads -----------------------------------------------------------------------------

    def authorize(self, account: str, purpose: str, root: str | None) -> Cid:
        """The root `account` may upload for `purpose`, checked before any body is read; RequestRefused
        (4xx) when the chain does not register it so."""
        kind, entry_id = parse_purpose(purpose)
        try:
            parsed = Cid.parse(root or "")
        except StoreError as exc:
            raise RequestRefused(400, f"name the upload's root: ?root=CID ({exc})") from None
        self._check_registered(account, kind, entry_id, parsed)
        return parsed

    def upload(self, account: str, purpose: str, root: Cid, body: bytes) -> Accepted:
        """Store the CAR `body` of the authorized `root`, or RequestRefused (4xx) saying why not;
        nothing is kept on refusal. Every block is re-hashed, so the body itself needs no
        signature: the signed request names the root, and only that root's DAG is accepted."""
        if len(body) > self.limits.max_upload_bytes:
            raise RequestRefused(
                413, f"the upload is {len(body)} bytes, over the {self.limits.max_upload_bytes}-byte limit"
            )
        try:
            car_root, blocks = read_car(body)
        except CarError as exc:
            raise RequestRefused(422, f"not an acceptable CAR: {exc}") from None
        if car_root.digest != root.digest:
            raise RequestRefused(422, f"the CAR's root is {car_root}, not the signed root {root}")
        if len(blocks) > len(body) // MIN_BYTES_PER_BLOCK + 16:
            raise RequestRefused(
                422,
                f"{len(blocks)} blocks in {len(body)} bytes: blocks under {MIN_BYTES_PER_BLOCK} bytes "
                "on average cost the store far more than their bytes",
            )
        self._check_exactly_the_dag(root, blocks)  # before anything is written: nothing kept on refusal
        size = len(body) + BLOCK_OVERHEAD_BYTES * len(blocks)  # what storing it costs, not only its payload
        key = canonical(root)
        with self._quota_lock:  # one account's concurrent uploads must not both fit in the last room
            held = self._held_by(account, key)
            used = self._quota_used(account)
            if not held and used + size > self.limits.account_quota_bytes:
                raise RequestRefused(
                    403,
                    f"account {account} has used {used} of its {self.limits.account_quota_bytes}-byte "
                    f"upload quota; this upload of {size} bytes does not fit",
                )
            try:
                self.store.put_blocks(root, blocks)
            except ContentIntegrityError as exc:  # incomplete DAG, or a block that is not its CID's
                raise RequestRefused(422, f"the CAR does not hold all of {root}: {exc}") from None
            if not held:
                with self.db.session() as s:
                    s.add(Upload(account=account, root_cid=key, purpose=purpose, bytes=size, created_at=now()))
                used += size
        log.info("upload of %s for %s by %s: %d bytes in %d blocks", root, purpose, account, size, len(blocks))
        if self.on_stored is not None:
            self.on_stored(purpose, str(root))
        return Accepted(str(root), size, len(blocks), held, used, self.limits.account_quota_bytes)

    def held(self, account: str, root: Cid) -> bool:
        """`account` uploaded `root` before and the store still holds it: a repeat needs no body."""
        return self._held_by(account, canonical(root)) and self.store.has(root)

    def _check_exactly_the_dag(self, root: Cid, blocks: list[tuple[Cid, bytes]]) -> None:
        """422 unless the CAR's blocks are exactly those of root's DAG this store lacks: no
        missing block, and no stray block that would be stored unpinned and uncounted."""
        by_digest = {cid.digest: (cid, data) for cid, data in blocks}
        reached: set[bytes] = set()
        stack = [root]
        while stack:
            cid = stack.pop()
            if cid.digest in reached:
                continue
            entry = by_digest.get(cid.digest)
            if entry is None:
                if self.store.has(cid):  # already here (an earlier upload): its subtree is too, or gc would say
                    continue
                raise RequestRefused(422, f"the CAR does not hold all of {root}: block {cid} is missing")
            reached.add(cid.digest)
            if cid.codec == "dag-pb":
                try:
                    stack.extend(link.cid for link in dagpb.decode_node(entry[1]).links)
                except ValueError as exc:
                    raise RequestRefused(422, f"block {cid} of {root} is not dag-pb: {exc}") from None
        stray = len(by_digest) - len(reached)
        if stray:
            raise RequestRefused(422, f"the CAR holds {stray} block(s) that are not part of {root}'s DAG")

    def _held_by(self, account: str, root: str) -> bool:
        with self.db.session() as s:
            return s.get(Upload, (account, root)) is not None

    def _quota_used(self, account: str) -> int:
        with self.db.session() as s:
            return int(
                s.execute(
                    select(func.coalesce(func.sum(Upload.bytes), 0)).where(Upload.account == account)
                ).scalar_one()
            )

    def _check_registered(self, account: str, kind: str, entry_id: int, root: Cid) -> None:
        digest = root.digest
        if kind == "task":
            with self.db.session() as s:
                task = s.get(Task, entry_id)
                if task is None:  # posted, perhaps, but not ingested yet: the client retries
                    raise RequestRefused(
                        409, f"task {entry_id} is not known to this oracle yet; retry in a few seconds"
                    )
                requester, wanted, state = task.requester, bytes.fromhex(task.input_digest[2:]), task.state
            self._same(account, requester, "task", entry_id, "requester")
            if state not in (TaskState.OPEN, TaskState.RUNNING):
                raise RequestRefused(409, f"task {entry_id} is {state}: its input is no longer needed")
            if root.codec != "dag-pb":
                raise RequestRefused(422, f"a task input is a UnixFS file (dag-pb), not a {root.codec} block")
            if digest != wanted:
                raise RequestRefused(
                    403, f"{root} is not the input task {entry_id} registers ({cidlib.digest_to_cid(wanted)})"
                )
            return
        if self.contracts is None:
            raise RequestRefused(403, "this oracle has no chain connection to check registrations against")
        try:
            if kind == "dataset":
                from tributa.datasets import read_dataset

                info = read_dataset(self.contracts, entry_id)
                owner, digests = info.owner, {info.content_digest, info.metadata_digest}
                role = "owner"
            else:
                from tributa.registry import read_model

                model = read_model(self.contracts.registry, entry_id)
                owner, digests = model.publisher, {model.weights_digest, *model.adapter_digests}
                role = "publisher"
        except TributaError as exc:
            raise RequestRefused(404, str(exc)) from None
        self._same(account, owner, kind, entry_id, role)
        if digest not in digests:
            raise RequestRefused(403, f"{root} is not registered for {kind} {entry_id}")

    @staticmethod
    def _same(account: str, owner: str, kind: str, entry_id: int, role: str) -> None:
        if account.lower() != owner.lower():
            raise RequestRefused(
                403, f"only {kind} {entry_id}'s {role} ({owner}) may upload its content, not {account}"
            )

    # -- reads -------------------------------------------------------------------------------

    def sealed_owner(self, cid: str) -> str | None:
        """The requester who alone may read `cid`, when it is a sealed copy of a private task."""
        try:
            parsed = Cid.parse(cid)
        except StoreError:
            return None
        # Every text naming this digest: the store finds blocks by digest, whatever codec a CID says.
        d = parsed.digest
        text_forms = {str(Cid(0, "dag-pb", d)), str(Cid(1, "dag-pb", d)), str(Cid(1, "raw", d))}
        digest_hex = "0x" + d.hex()
        with self.db.session() as s:
            task = (
                s.execute(
                    select(Task).where(
                        Task.output_pubkey.is_not(None),
                        or_(Task.result_ciphertext_cid.in_(text_forms), Task.input_digest == digest_hex),
                    )
                )
                .scalars()
                .first()
            )
            if task is not None:
                return task.requester
            job = (
                s.execute(select(Job).where(or_(Job.oracle_cid.in_(text_forms), Job.requester_cid.in_(text_forms))))
                .scalars()
                .first()
            )
            if job is not None:
                return get_or_raise(s, Task, job.task_id).requester
        return None


def canonical(cid: Cid) -> str:
    """One text per digest (the dag-pb CIDv0), for quota rows and sealed-copy lookups."""
    return str(cidlib.digest_to_cid(cid.digest))


def parse_purpose(purpose: str | None) -> tuple[str, int]:
    match = _PURPOSE.match(purpose or "")
    if match is None:
        raise RequestRefused(400, "say what the upload is for: ?for=task:ID, ?for=dataset:ID or ?for=model:ID")
    return match.group(1), int(match.group(2))
