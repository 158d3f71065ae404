"""Datasets: checking, storing and registering them with their contributors' shares."""

from __future__ import annotations

import codecs
import io
import json
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from eth_abi import encode
from eth_utils import keccak
from web3.exceptions import ContractCustomError, ContractLogicError

from tributa import merkle
from tributa.chain.accounts import checksum
from tributa.chain.contracts import Contracts
from tributa.chain.events import first_event
from tributa.chain.tx import Signer, TxResult, revert_reason
from tributa.errors import ChainError, ContractRevert, TributaError
from tributa.store import cid as cidlib
from tributa.store import dag

MAX_TERMS = 256
READ_CHUNK = 1 << 20


@dataclass(frozen=True)
class DatasetInfo:
    dataset_id: int
    content_digest: bytes
    metadata_digest: bytes
    owner: str
    contributors_root: bytes
    version: int
    contributor_count: int
    terms: str
    active: bool

    @property
    def content_cid(self) -> str:
        return str(cidlib.digest_to_cid(self.content_digest))


@dataclass(frozen=True)
class RegisteredDataset:
    dataset_id: int
    content_cid: str
    metadata_cid: str
    tokens_indexed: int
    tx: TxResult  # the reveal (register_dataset)
    commit_tx: TxResult  # the commitment (commit_dataset) the reveal opened


def text_files(path: Path) -> list[Path]:
    """The files of a dataset (a file, or a folder's files), each checked to be non-empty UTF-8 text."""
    path = Path(path)
    if not path.exists():
        raise TributaError(f"dataset path {path} does not exist")
    files = [path] if path.is_file() else _folder_files(path)
    if not files:
        raise TributaError(f"dataset folder {path} holds no files")
    for file in files:
        _check_text(file)
    return files


def _folder_files(folder: Path) -> list[Path]:
    files: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=False):
        for name in dirnames + filenames:
            # The store keeps a link, not its target's text, and dataset_text never follows one:
            # indexing the target here would index text no one else can see.
            if (Path(dirpath) / name).is_symlink():
                raise TributaError(
                    f"{Path(dirpath) / name} is a symlink; a dataset folder holds regular files only (copy the file in)"
                )
        files.extend(Path(dirpath) / name for name in filenames)
    return sorted(files)


def _check_text(file: Path) -> None:
    decoder = codecs.getincrementaldecoder("utf-8")()
    size = 0
    try:
        with open(file, "rb") as fh:
            while chunk := fh.read(READ_CHUNK):
                if b"\x00" in chunk:
                    raise TributaError(f"{file} is not text (it contains NUL bytes); datasets must be UTF-8 text")
                decoder.decode(chunk)
                size += len(chunk)
            decoder.decode(b"", final=True)
    except UnicodeDecodeError as exc:
        raise TributaError(f"{file} is not UTF-8 text (bad byte at offset {exc.start}); convert it first") from None
    except PermissionError:
        raise TributaError(f"{file} is not readable (permission denied)") from None
    except OSError as exc:
        raise TributaError(f"{file} cannot be read: {exc.strerror}") from None
    if size == 0:
        raise TributaError(f"{file} is empty; a dataset needs content")


def read_text(files: Iterable[Path]) -> str:
    return "\n".join(Path(f).read_text(encoding="utf-8") for f in files)


def dataset_text(store, cid: str) -> str:
    """A stored dataset's text: the file itself, or a folder's files in path order.

    Read from the store's blocks, not from an export: a stranger's tree is never written to this
    machine's disk, and its symlinks are skipped, never followed. Newlines are read as
    read_text reads the files at registration, so both sides index the same text."""
    files = sorted(dag.tree_files(store, cidlib.coerce_cid(cid)), key=lambda item: item[0])
    return "\n".join(
        io.TextIOWrapper(io.BytesIO(b"".join(dag.file_chunks(store, node))), encoding="utf-8").read()
        for _, node in files
    )


def parse_contributors(specs: Iterable[str]) -> tuple[list[str], list[int]]:
    """["0xabc…=6000", …] -> contributors ascending by address (as the registry requires), shares."""
    pairs = []
    for spec in specs:
        address, sep, bps = spec.partition("=")
        if not sep or not bps.strip().isdigit():
            raise TributaError(f"--contributor takes ADDR=BPS (e.g. 0xabc…=2500), not {spec!r}")
        pairs.append((checksum(address.strip()), int(bps)))
    if not pairs:
        raise TributaError("give at least one --contributor ADDR=BPS")
    try:
        contributors, shares = merkle.sort_contributors(pairs)
        merkle.validate_contributors(contributors, shares)
    except ValueError as exc:
        raise TributaError(f"contributors: {exc}") from None
    return contributors, shares


def read_dataset(contracts: Contracts, dataset_id: int) -> DatasetInfo:
    count = contracts.registry.functions.dataset_count().call()
    if not 1 <= dataset_id <= count:
        raise TributaError(f"dataset {dataset_id} does not exist (there are {count})")
    d = contracts.registry.functions.dataset(dataset_id).call()
    return DatasetInfo(
        dataset_id,
        bytes(d.content_digest),
        bytes(d.metadata_digest),
        d.owner,
        bytes(d.contributors_root),
        d.version,
        d.contributor_count,
        d.terms,
        d.active,
    )


def list_datasets(contracts: Contracts) -> list[DatasetInfo]:
    return [read_dataset(contracts, i) for i in range(1, contracts.registry.functions.dataset_count().call() + 1)]


def register_dataset(
    contracts: Contracts,
    signer: Signer,
    store,
    path: Path,
    contributors: list[str],
    shares: list[int],
    terms: str,
    name: str | None = None,
    index: Callable[[str, str], int] | None = None,
    progress=None,
    on_step: Callable[[str], None] | None = None,
) -> RegisteredDataset:
    """Check, store, index, then register: commit, wait a block, reveal.
    Every check happens before any transaction; `on_step` hears each step."""
    files = text_files(path)
    if len(terms.encode()) > MAX_TERMS:
        raise TributaError(f"terms are {len(terms.encode())} bytes; the registry takes at most {MAX_TERMS}")
    path = Path(path)
    content_cid = str(store.put_file(path, progress) if path.is_file() else store.put_dir(path, progress))
    digest = cidlib.cid_to_digest(content_cid)
    existing = contracts.registry.functions.dataset_id_of(digest).call()
    if existing:
        raise TributaError(f"this content ({content_cid}) is already registered as dataset {existing}")
    metadata = {
        "name": name or path.name,
        "files": [str(f.relative_to(path)) if path.is_dir() else f.name for f in files],
        "bytes": sum(f.stat().st_size for f in files),
        "content_cid": content_cid,
    }
    metadata_cid = str(store.put_bytes(json.dumps(metadata, sort_keys=True, separators=(",", ":")).encode()))
    tokens = index(content_cid, read_text(files)) if index else 0
    commit, result, dataset_id = commit_and_register(
        contracts, signer, digest, cidlib.cid_to_digest(metadata_cid), contributors, shares, terms, on_step=on_step
    )
    return RegisteredDataset(dataset_id, content_cid, metadata_cid, tokens, result, commit)


def dataset_commitment(content_digest: bytes, metadata_digest: bytes, registrant: str, salt: bytes) -> bytes:
    """keccak256(abi_encode(content, metadata, registrant, salt)), as DataRegistry.dataset_commitment."""
    return keccak(
        encode(["bytes32", "bytes32", "address", "bytes32"], [content_digest, metadata_digest, registrant, salt])
    )


def commit_and_register(
    contracts: Contracts,
    signer: Signer,
    content_digest: bytes,
    metadata_digest: bytes,
    contributors: list[str],
    shares: list[int],
    terms: str,
    on_step: Callable[[str], None] | None = None,
    gas: int | None = None,
    timeout_s: float = 120.0,
) -> tuple[TxResult, TxResult, int]:
    """The registry's two-step registration: commit (hiding the digests behind a
    random salt), wait for a later block, reveal. Returns (commit tx, reveal tx, dataset id).

    The commitment binds the signer's address, so a copied reveal fails for anyone else."""
    step = on_step or (lambda message: None)
    registry = contracts.registry
    try:  # the reveal's checks of the list, before spending a commit on it
        registry.functions.compute_contributors_root(contributors, shares).call()
    except (ContractLogicError, ContractCustomError) as exc:
        raise TributaError(f"contributors rejected by the registry: {revert_reason(exc)}") from None
    salt = os.urandom(32)
    commitment = dataset_commitment(content_digest, metadata_digest, signer.address, salt)
    step("committing to the dataset (step 1 of 2)…")
    commit = signer.transact(registry.functions.commit_dataset(commitment), action="commit_dataset")
    step(f"committed in block {commit.block_number}; waiting for the next block…")
    wait_for_block_after(contracts.w3, commit.block_number, timeout_s)
    step("revealing and registering (step 2 of 2)…")
    call = registry.functions.register_dataset(content_digest, metadata_digest, contributors, shares, terms, salt)
    try:
        result = signer.transact(call, gas=gas, action="register_dataset")
    except ContractRevert as exc:
        raise TributaError(_explain_reveal(exc.reason, contracts, content_digest, signer.address)) from None
    dataset_id = first_event(registry, "DatasetRegistered", result.receipt)["dataset_id"]
    return commit, result, dataset_id


def wait_for_block_after(w3, block_number: int, timeout_s: float = 120.0) -> int:
    """Returns once the chain is past `block_number`. A development node that
    mines only on transactions (Anvil, Hardhat) is asked to mine one block."""
    if w3.eth.block_number > block_number:
        return w3.eth.block_number
    try:
        client = str(w3.client_version).lower()
    except Exception:  # noqa: BLE001 - not every node answers web3_clientVersion
        client = ""
    if any(name in client for name in ("anvil", "hardhat", "ganache")):
        w3.provider.make_request("evm_mine", [])
    deadline = time.monotonic() + timeout_s
    while (head := w3.eth.block_number) <= block_number:
        if time.monotonic() > deadline:
            raise ChainError(
                f"no block after {block_number} within {timeout_s:.0f}s; the reveal must come in a later block than the commit"
            )
        time.sleep(0.25)
    return head


def _explain_reveal(reason: str, contracts: Contracts, content_digest: bytes, address: str) -> str:
    """One line for each way a reveal can fail."""
    if reason == "registry: dataset already registered":
        other = contracts.registry.functions.dataset_id_of(content_digest).call()
        owner = contracts.registry.functions.dataset_owner(other).call() if other else "?"
        return (
            f"this content was registered as dataset {other} by {owner} before your reveal; "
            "if it is yours, ask the registry owner to resolve the dispute"
        )
    if reason == "registry: commitment expired":
        max_age = contracts.registry.functions.COMMIT_MAX_AGE().call()
        return f"the commitment expired before the reveal (max {max_age // 3600} h); run the command again"
    if reason == "registry: reveal too early (wait a block)":
        return "the reveal landed in the commit's block; run the command again"
    if reason == "registry: no matching commitment":
        return f"no live commitment of {address} matches this dataset; commit and reveal must come from one account"
    return f"register_dataset reverted: {reason}"
