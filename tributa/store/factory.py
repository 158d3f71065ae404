"""open_store: the embedded store by default, the Kubo backend when an IPFS API is configured."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from tributa.store.base import Store
from tributa.store.embedded import EmbeddedStore

IPFS_API_ENV = "TRIBUTA_IPFS_API"


def store_root(config_or_path: Any = None) -> Path:
    """Where the embedded store keeps its blocks.

    A path is used as is; a settings object with `store_dir` (tributa.config.Settings) or
    `data_dir` gives <data_dir>/store; nothing gives $TRIBUTA_DATA_DIR/store (default .tributa).
    """
    if config_or_path is None:
        from tributa.config import Settings

        return Settings().store_dir
    if isinstance(config_or_path, (str, os.PathLike)):
        return Path(config_or_path)
    store_dir = getattr(config_or_path, "store_dir", None)
    if store_dir is not None:
        return Path(store_dir)
    data_dir = getattr(config_or_path, "data_dir", None)
    if data_dir is not None:
        return Path(data_dir) / "store"
    raise TypeError(f"open_store takes a path or a settings object, not {type(config_or_path).__name__}")


def open_store(config_or_path: Any = None, *, ipfs_api: str | None = None) -> Store:
    """The store to use: Kubo at `ipfs_api` (or the settings' `ipfs_api`, or $TRIBUTA_IPFS_API)
    when one is given, else the embedded store rooted at `store_root(config_or_path)`."""
    api = ipfs_api or getattr(config_or_path, "ipfs_api", None) or os.environ.get(IPFS_API_ENV, "").strip() or None
    if api:
        from tributa.store.kubo import KuboStore  # imported lazily: pulls in ipfshttpclient

        return KuboStore(api)
    return EmbeddedStore(store_root(config_or_path))
