"""A dataset uploaded through the oracle's content API, against `store add` of the same file.

    .venv/bin/python scripts/bench.py content_bench

A fresh Anvil chain with the contracts deployed; the creator registers a 64 MiB text dataset
from a store of its own (as on its own machine). The oracle's API runs as the oracle runs it
(oracle/api_process.py forks it; uvicorn on loopback). Each run uploads the dataset with the
roles' own client (tributa/content_api.py: the DAG read from the creator's store into one CARv1,
signed, sent; the oracle parses it, re-hashes every block, checks the registration and the
quota, writes and pins it); between runs the oracle's copy is unpinned and collected, so each
run writes every block again.

Figures (medians of RUNS):
  content_upload_mb_per_s      MiB of the file per second, upload call to answer
  content_store_add_mb_per_s   `store add` (EmbeddedStore.put_file) of the same file into a fresh store
  content_upload_vs_store_add  the first over the second (the cost of the network path)
"""

from __future__ import annotations

import multiprocessing
import shutil
import time
from pathlib import Path

import httpx
import numpy as np

from bench.chain import deployed_chain, median
from oracle.api_process import ApiSpec, SharedClock, start_api_process
from oracle.db import database_url
from tributa.content_api import ContentApi
from tributa.crypto import public_key_of
from tributa.datasets import register_dataset
from tributa.devnet import free_port, settings_for
from tributa.store import open_store

HOST = "127.0.0.1"
DATASET_BYTES = 64 << 20
RUNS = 3


def _text(path: Path, size: int) -> None:
    """`size` bytes of ASCII words (a dataset must be UTF-8 text), deterministic."""
    words = np.array([w.encode() for w in "the a of data model answer royalty token agent chain proof span".split()])
    rng = np.random.default_rng(7)
    with path.open("wb") as out:
        written = 0
        while written < size:
            chunk = b" ".join(words[rng.integers(0, len(words), 200_000)]) + b"\n"
            out.write(chunk[: size - written])
            written += min(len(chunk), size - written)


def _wait_healthy(port: int, api) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if not api.is_alive():
            raise RuntimeError("the API process exited")
        try:
            if httpx.get(f"http://{HOST}:{port}/v1/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.2)
    raise RuntimeError("the API did not answer within 60 s")


def _store_add_s(path: Path, workdir: Path) -> float:
    times = []
    for i in range(RUNS):
        store_dir = workdir / f"add-{i}"
        store = open_store(store_dir)
        started = time.perf_counter()
        store.put_file(path)
        times.append(time.perf_counter() - started)
        shutil.rmtree(store_dir)
    return median(times)


def run(workdir: Path) -> dict[str, float]:
    dataset = workdir / "dataset.txt"
    _text(dataset, DATASET_BYTES)
    with deployed_chain(workdir) as (node, contracts, s):
        settings = settings_for(node, workdir / "oracle", workdir / "deployments")
        creator_store = open_store(workdir / "creator" / "store")
        registered = register_dataset(
            contracts, s["creator"], creator_store, dataset, [s["creator"].address], [10_000], "bench terms"
        )
        oracle_key = bytes(s["oracle"].account.key)
        port = free_port()
        spec = ApiSpec(
            settings=settings,
            db_url=database_url(settings.data_dir),
            host=HOST,
            port=port,
            lease_s=60,
            oracle_key=oracle_key,
            info={
                "chain_id": contracts.chain_id,
                "escrow": contracts.escrow.address,
                "oracle": s["oracle"].address,
                "oracle_public_key": "0x" + public_key_of(oracle_key).hex(),
            },
        )
        clock = SharedClock(int(contracts.w3.eth.get_block("latest")["timestamp"]))
        metrics_queue = multiprocessing.get_context("fork").Queue()
        api = start_api_process(spec, clock, metrics_queue)
        client = ContentApi(f"http://{HOST}:{port}", contracts.chain_id, contracts.escrow.address, s["creator"].account)
        try:
            _wait_healthy(port, api)
            upload_times = []
            for _ in range(RUNS):
                started = time.perf_counter()
                answer = client.upload(creator_store, registered.content_cid, f"dataset:{registered.dataset_id}")
                upload_times.append(time.perf_counter() - started)
                assert answer["root"] == registered.content_cid and answer["bytes"] >= DATASET_BYTES
                oracle_store = open_store(settings.store_dir)  # collect the oracle's copy: the next run writes it all
                oracle_store.unpin(registered.content_cid)
                oracle_store.gc()
        finally:
            client.close()
            api.terminate()
            api.join(15)
            if api.is_alive():
                api.kill()
                api.join(5)
            metrics_queue.close()
    add_s = _store_add_s(dataset, workdir)
    mib = DATASET_BYTES / 2**20
    upload_rate, add_rate = mib / median(upload_times), mib / add_s
    return {
        "content_upload_mb_per_s": round(upload_rate, 1),
        "content_store_add_mb_per_s": round(add_rate, 1),
        "content_upload_vs_store_add": round(upload_rate / add_rate, 3),
    }
