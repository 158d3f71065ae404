"""Datasets: checking, storing and registering them with their contributors' shares."""

from __future__ import annotations

import codecs
import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

from tributa import merkle
from tributa.chain.contracts import Contracts
from tributa.chain.events import first_event
from tributa.chain.tx import Signer, TxResult
from tributa.errors import TributaError
from tributa.store import cid as cidlib

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
    tx: TxResult


def text_files(path: Path) -> list[Path]:
    """The files of a dataset (a file, or a folder's files), each checked to be non-empty UTF-8 text."""
    path = Path(path)
    if not path.exists():
        raise TributaError(f"dataset path {path} does not exist")
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    if not files:
        raise TributaError(f"dataset folder {path} holds no files")
    for file in files:
        _check_text(file)
    return files


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
    """A stored dataset's text: the file itself, or a folder's files in name order."""
    with tempfile.TemporaryDirectory() as tmp:
        dest = Path(tmp) / "dataset"
        store.export(cid, dest)
        return read_text([dest] if dest.is_file() else sorted(p for p in dest.rglob("*") if p.is_file()))


def parse_contributors(specs: Iterable[str]) -> tuple[list[str], list[int]]:
    """["0xabc…=6000", …] -> contributors ascending by address (as the registry requires), shares."""
    pairs = []
    for spec in specs:
        address, sep, bps = spec.partition("=")
        if not sep or not bps.strip().isdigit():
            raise TributaError(f"--contributor takes ADDR=BPS (e.g. 0xabc…=2500), not {spec!r}")
        pairs.append((address.strip(), int(bps)))
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
    fields = contracts.registry.functions.dataset(dataset_id).call()
    return DatasetInfo(dataset_id, bytes(fields[0]), bytes(fields[1]), fields[2], bytes(fields[3]), *fields[4:])


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
) -> RegisteredDataset:
    """Check, store, index and register. Every check happens before any transaction."""
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
    call = contracts.registry.functions.register_dataset(
        digest, cidlib.cid_to_digest(metadata_cid), contributors, shares, terms
    )
    result = signer.transact(call, action="register_dataset")
    dataset_id = first_event(contracts.registry, "DatasetRegistered", result.receipt)["dataset_id"]
    return RegisteredDataset(dataset_id, content_cid, metadata_cid, tokens, result)
