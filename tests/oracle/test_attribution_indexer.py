"""Datasets indexed for attribution when they are registered, on a real chain, store and models.

The creator registers from its own store (its own machine): the oracle's store has a dataset's
content only once it is put there, as the content API or `store add` would.
"""

from __future__ import annotations

import json
import logging
import time

import pytest

from oracle.attribution.indexer import CONTENT_NOT_IN_STORE, INDEXING, DatasetIndexer
from oracle.attribution.service import DatasetIndexes, OracleAttributor
from oracle.db import Task
from tests.helpers import OracleParts
from tests.oracle.support import ASTRO, BAKING
from tributa.datasets import register_dataset
from tributa.publish import register_model
from tributa.store import open_store

ASTRO_QUOTE = "the same face of the Moon always points toward us because its spin is locked to its orbit"
BAKING_QUOTE = "leave it covered in a warm place until it has doubled in size"


@pytest.fixture(scope="module")
def models():
    from tributa.ml.embeddings import load_embedder
    from tributa.ml.tokenizer import load_tokenizer

    return load_tokenizer(), load_embedder()


class World:
    def __init__(self, contracts, signers, tmp_path, models) -> None:
        self.contracts, self.signers, self.tmp_path = contracts, signers, tmp_path
        self.oracle = OracleParts(contracts, signers, tmp_path)  # the oracle's store: tmp_path/store
        self.creator_store = open_store(tmp_path / "creator-store")
        self.indexes = DatasetIndexes(tmp_path / "attribution", *models)
        # No upload grace: these tests look at a dataset whose content stays missing.
        self.indexer = DatasetIndexer(
            contracts, self.oracle.store, self.indexes, interval_s=0.05, retry_s=0, upload_grace_s=0
        )
        self.attributor = OracleAttributor(contracts, self.oracle.store, self.indexes, self.indexer)
        self.tasks = 0

    def register(self, name: str, text: str, in_oracle_store: bool):
        path = self.tmp_path / f"{name}.txt"
        path.write_text(text)
        store = self.oracle.store if in_oracle_store else self.creator_store
        creator = self.signers["creator"]
        return register_dataset(self.contracts, creator, store, path, [creator.address], [10_000], "CC0", name)

    def arrive(self, name: str) -> None:
        """The content reaches the oracle's store, written by another store instance (as an upload is)."""
        open_store(self.tmp_path / "store").put_file(self.tmp_path / f"{name}.txt")

    def model(self, datasets: dict[int, int]) -> int:
        folder = self.tmp_path / f"model-{len(datasets)}-{min(datasets)}"
        folder.mkdir()
        (folder / "config.json").write_text(json.dumps({"architectures": ["GPT2LMHeadModel"], "d": sorted(datasets)}))
        return register_model(
            self.contracts, self.signers["publisher"], self.oracle.store, "indexer-test", folder, [], datasets, 10**15
        ).model_id

    def attribute(self, model_id: int, text: str):
        self.tasks += 1
        cid = str(self.oracle.store.put_bytes(json.dumps({"kind": "generate", "text": text}).encode()))
        result = self.attributor(
            Task(task_id=self.tasks, model_id=model_id, result_cid=cid, input_digest="0x" + "00" * 32, k=1)
        )
        return result, json.loads(self.oracle.store.get_bytes(result.record_cid))


@pytest.fixture
def world(contracts, signers, tmp_path, models, chain_snapshot):
    world = World(contracts, signers, tmp_path, models)
    yield world
    world.indexer.stop()


def test_indexer__dataset_registered__indexed_before_any_task_and_the_attribution_builds_nothing(world, caplog):
    astro = world.register("astro", ASTRO, in_oracle_store=True)
    assert not world.indexes.has(astro.content_cid)

    with caplog.at_level(logging.INFO, logger="tributa.oracle.attribution"):
        assert world.indexer.step() >= 1
    manifest = world.indexes.path(astro.content_cid) / "manifest.json"
    assert manifest.is_file()
    lines = [r.getMessage() for r in caplog.records]
    assert any(f"indexing dataset {astro.dataset_id} ({astro.content_cid})" in line for line in lines)
    assert any("%)" in line and "tokens" in line for line in lines)  # progress, with its percent
    assert any(f"indexed dataset {astro.dataset_id}" in line and line.endswith("s") for line in lines)
    before = manifest.stat()
    caplog.clear()

    with caplog.at_level(logging.INFO, logger="tributa.oracle.attribution"):
        result, envelope = world.attribute(world.model({astro.dataset_id: 10_000}), ASTRO_QUOTE)

    assert (result.dataset_ids, result.weights_bps) == ([astro.dataset_id], [10_000])
    assert envelope["settlement"]["source"] == "engine"
    assert astro.dataset_id not in envelope["unindexed"]
    after = manifest.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert not [r for r in caplog.records if "index" in r.getMessage()]


def test_indexer__dataset_content_missing__others_still_attributed_and_it_is_named(world, caplog):
    astro = world.register("astro", ASTRO, in_oracle_store=True)
    baking = world.register("baking", BAKING, in_oracle_store=False)
    model = world.model({astro.dataset_id: 5000, baking.dataset_id: 5000})

    with caplog.at_level(logging.WARNING, logger="tributa.oracle.attribution"):
        world.indexer.step()
        world.indexer.step()  # looked for again: no second warning
    assert world.indexes.has(astro.content_cid) and not world.indexes.has(baking.content_cid)
    warnings = [r.getMessage() for r in caplog.records if f"dataset {baking.dataset_id} " in r.getMessage()]
    assert len(warnings) == 1, warnings
    assert baking.content_cid in warnings[0] and "content API" in warnings[0] and "store add" in warnings[0]
    assert "Traceback" not in caplog.text and all(r.exc_info is None for r in caplog.records)
    assert world.indexer.reason(baking.content_cid) == CONTENT_NOT_IN_STORE

    result, envelope = world.attribute(model, ASTRO_QUOTE)
    assert (result.dataset_ids, result.weights_bps) == ([astro.dataset_id], [10_000])
    assert envelope["settlement"]["source"] == "engine"  # not the model's training datasets
    assert baking.dataset_id in envelope["unindexed"]
    assert envelope["unindexed_reasons"][str(baking.dataset_id)] == CONTENT_NOT_IN_STORE
    assert (
        envelope["datasets"][astro.content_cid] == astro.dataset_id and baking.content_cid not in envelope["datasets"]
    )

    world.arrive("baking")
    with caplog.at_level(logging.INFO, logger="tributa.oracle.attribution"):
        assert world.indexer.step() == 1
    assert world.indexes.has(baking.content_cid)
    assert any(
        f"indexing dataset {baking.dataset_id}" in r.getMessage() and "arrived" in r.getMessage()
        for r in caplog.records
    )

    result, envelope = world.attribute(model, BAKING_QUOTE)
    assert (result.dataset_ids, result.weights_bps) == ([baking.dataset_id], [10_000])
    assert baking.dataset_id not in envelope["unindexed"] and astro.dataset_id not in envelope["unindexed"]


def test_indexer__content_uploaded_just_after_registration__no_warning_and_indexed_on_the_next_pass(world, caplog):
    baking = world.register("baking", BAKING, in_oracle_store=False)
    world.indexer.upload_grace_s = 120.0  # the default: the creator's upload follows its registration
    world.indexer.retry_s = 10.0

    with caplog.at_level(logging.WARNING, logger="tributa.oracle.attribution"):
        assert world.indexer.step() == 0  # registered, not uploaded yet
    assert not [r for r in caplog.records if f"dataset {baking.dataset_id} " in r.getMessage()]
    assert world.indexer.reason(baking.content_cid) == CONTENT_NOT_IN_STORE

    world.arrive("baking")
    assert world.indexer.step() == 1  # the next pass, not after the 10 s retry
    assert world.indexes.has(baking.content_cid)


def test_attributor__one_index_damaged__others_still_attributed_and_it_is_named(world, caplog):
    astro = world.register("astro", ASTRO, in_oracle_store=True)
    baking = world.register("baking", BAKING, in_oracle_store=True)
    world.indexer.step()
    (world.indexes.path(baking.content_cid) / "tokens.npy").unlink()

    with caplog.at_level(logging.WARNING, logger="tributa.oracle.attribution"):
        result, envelope = world.attribute(world.model({baking.dataset_id: 10_000}), ASTRO_QUOTE)
        world.attribute(world.model({astro.dataset_id: 10_000}), ASTRO_QUOTE)

    assert (result.dataset_ids, result.weights_bps) == ([astro.dataset_id], [10_000])
    assert envelope["unindexed_reasons"][str(baking.dataset_id)] == "index_unreadable"
    assert len([r for r in caplog.records if baking.content_cid in r.getMessage()]) == 1


def test_indexer__stopped_mid_build__thread_ends_at_once_and_leaves_no_partial_index(world):
    big = world.register("big", "".join(f"Line {i}: {ASTRO[i % 97 :]}\n" for i in range(400)), in_oracle_store=True)
    world.indexer.start()
    deadline = time.monotonic() + 60
    while world.indexer.reason(big.content_cid) != INDEXING and time.monotonic() < deadline:
        time.sleep(0.01)
    assert world.indexer.reason(big.content_cid) == INDEXING

    began = time.monotonic()
    world.indexer.stop(timeout_s=5)
    assert time.monotonic() - began < 2.0
    assert not world.indexer._thread.is_alive()
    assert not world.indexes.has(big.content_cid)
    assert not list(world.indexes.root.glob(".*-build-*"))  # no half-written index left behind


def test_oracle_run__dataset_registered_while_it_runs__indexed_from_its_log_and_sigterm_still_stops_within_5s(
    fresh_settings, contracts, signers, tmp_path, chain_snapshot
):
    import os
    import signal

    from tributa.devnet import free_port
    from tributa.processes import start_oracle

    settings = fresh_settings.with_overrides(oracle_url=f"http://127.0.0.1:{free_port()}")
    log_path = tmp_path / "oracle.log"
    oracle = start_oracle(settings, log_path, ["--text-logs"])  # with attribution, as operators run it
    try:
        creator, creator_store = signers["creator"], open_store(tmp_path / "creator-store")
        shipped, withheld = tmp_path / "astro.txt", tmp_path / "baking.txt"
        shipped.write_text(ASTRO)
        withheld.write_text(BAKING)
        open_store(settings.store_dir).put_file(shipped)  # as an upload to the content API puts it
        astro, baking = (
            register_dataset(contracts, creator, creator_store, path, [creator.address], [10_000], "CC0", path.stem)
            for path in (shipped, withheld)
        )
        manifest = settings.data_dir / "attribution" / astro.content_cid / "manifest.json"
        _wait_for(lambda: manifest.is_file(), 120)
        log = log_path.read_text()
        assert manifest.is_file(), log[-3000:]
        assert f"indexed dataset {astro.dataset_id} ({astro.content_cid})" in log
        # Within the upload grace the missing one is looked for on every pass, without a warning...
        assert "is not in the oracle's content store" not in log
        open_store(settings.store_dir).put_file(withheld)  # ...and indexed once its upload lands
        _wait_for(lambda: f"indexed dataset {baking.dataset_id} ({baking.content_cid})" in log_path.read_text(), 60)
        assert f"indexed dataset {baking.dataset_id} ({baking.content_cid})" in log_path.read_text(), (
            log_path.read_text()[-3000:]
        )
    finally:
        began = time.monotonic()
        os.kill(oracle.process.pid, signal.SIGTERM)
        code = oracle.process.wait(timeout=30)
        took = time.monotonic() - began
    log = log_path.read_text()
    assert code == 0 and took < 5, (code, took, log[-2000:])
    assert "Traceback" not in log


def _wait_for(condition, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.2)
