"""Tributa's content store: every dataset, model, input, result and attribution record,
addressed by the CID Kubo's `ipfs add` would give it. See tributa/store/README.md."""

from tributa.store.base import GcStats, Progress, Store, VerifyReport
from tributa.store.cid import Cid, cid_to_digest, digest_to_cid
from tributa.store.embedded import EmbeddedStore
from tributa.store.errors import (
    BackendUnavailable,
    CidError,
    ContentIntegrityError,
    NotFound,
    StoreError,
    StoreFull,
    StoreUnwritable,
)
from tributa.store.factory import IPFS_API_ENV, open_store, store_root
from tributa.store.importer import cid_of_bytes

__all__ = [
    "IPFS_API_ENV",
    "BackendUnavailable",
    "Cid",
    "CidError",
    "ContentIntegrityError",
    "EmbeddedStore",
    "GcStats",
    "NotFound",
    "Progress",
    "Store",
    "StoreError",
    "StoreFull",
    "StoreUnwritable",
    "VerifyReport",
    "cid_of_bytes",
    "cid_to_digest",
    "digest_to_cid",
    "open_store",
    "store_root",
]
