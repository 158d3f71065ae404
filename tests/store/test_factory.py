"""open_store: which backend, and where the embedded store keeps its blocks."""

from __future__ import annotations

from pathlib import Path

import pytest

from tributa.config import Settings
from tributa.store import EmbeddedStore, Store, open_store, store_root


def test_open_store__path__is_an_embedded_store_rooted_there(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TRIBUTA_IPFS_API", raising=False)
    opened = open_store(tmp_path / "blocks-here")
    assert isinstance(opened, EmbeddedStore) and isinstance(opened, Store)
    cid = opened.put_bytes(b"x")
    assert (tmp_path / "blocks-here" / "pins" / str(cid)).exists()


def test_open_store__settings__uses_data_dir_slash_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TRIBUTA_IPFS_API", raising=False)
    settings = Settings(data_dir=tmp_path / "data")
    assert store_root(settings) == tmp_path / "data" / "store"
    opened = open_store(settings)
    assert isinstance(opened, EmbeddedStore) and opened.root == tmp_path / "data" / "store"


def test_open_store__nothing_given__follows_tributa_data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TRIBUTA_IPFS_API", raising=False)
    monkeypatch.setenv("TRIBUTA_DATA_DIR", str(tmp_path / "env-data"))
    opened = open_store()
    assert isinstance(opened, EmbeddedStore) and opened.root == tmp_path / "env-data" / "store"


def test_store_root__unsupported_argument__is_a_type_error() -> None:
    with pytest.raises(TypeError, match="path or a settings object"):
        store_root(42)
