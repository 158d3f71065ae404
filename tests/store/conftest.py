"""Fixtures for the content-store tests: stores for both backends, libkubo, deterministic data."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tributa.store.base import Store
from tributa.store.embedded import EmbeddedStore
from tributa.store.libkubo import LibKubo, find_library

KUBO_API = os.environ.get("TRIBUTA_IPFS_API", "/ip4/127.0.0.1/tcp/5001")
KUBO_SKIP_REASON = (
    f"no Kubo daemon reachable at {KUBO_API}; Kubo cannot be installed on this machine — "
    "see README 'Kubo backend' for the manual run"
)


@pytest.fixture(scope="session")
def libkubo() -> Iterator[LibKubo]:
    """One offline Kubo repo for the whole session (starting one costs about a second)."""
    if find_library() is None:
        pytest.fail("kubo-python is not installed: run `make setup` (it is in requirements.txt)")
    kubo = LibKubo()
    yield kubo
    kubo.close()


@pytest.fixture(scope="session")
def kubo_api() -> str:
    from tributa.store.kubo import kubo_reachable

    if not kubo_reachable(KUBO_API):
        pytest.skip(KUBO_SKIP_REASON)
    return KUBO_API


@pytest.fixture
def embedded(tmp_path: Path) -> EmbeddedStore:
    return EmbeddedStore(tmp_path / "store")


@pytest.fixture(params=["embedded", "kubo"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    """The same contract tests run against both backends."""
    if request.param == "embedded":
        opened: Store = EmbeddedStore(tmp_path / "store")
    else:
        from tributa.store.kubo import KuboStore

        # offline: content the daemon lacks is NotFound at once, not searched for on the network
        opened = KuboStore(request.getfixturevalue("kubo_api"), offline=True)
    yield opened
    opened.close()
