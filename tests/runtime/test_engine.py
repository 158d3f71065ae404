"""The serving engine: worker processes per base model, dynamic mixed-adapter batches, restarts."""

from __future__ import annotations

import json
import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from tributa.catalog import LocalModel
from tributa.ml.embeddings import model_dir as minilm_dir
from tributa.ml.models import ensure_demo_models
from tributa.runtime.engine import ServingEngine
from tributa.runtime.executor import Executor
from tributa.runtime.jobs import JobInputError, JobSpecError, RunnerRegistry
from tributa.runtime.worker import ModelWorker, WorkerConfig, WorkerCrashed, WorkerLoadError, worker_environment
from tributa.verification import VerificationParams, embeddings_agree

PROMPTS = ("The", "A star", "Heat the oven", "Once upon a time", "Step one.", "The moon")
SENTENCES = (
    "a cat",
    "the capital of France is Paris",
    "knead the dough, then leave it somewhere warm to rise",
    "x",
    "the Moon keeps one face toward the Earth because tides locked its spin long ago",
    "step two",
)


@pytest.fixture(scope="module")
def demo():
    return ensure_demo_models()


@pytest.fixture(scope="module")
def base(demo):
    return LocalModel(Path(demo.base_dir), "bafy-demo-base", b"", "generate")


@pytest.fixture(scope="module")
def adapters(demo):
    return [LocalModel(Path(path), f"bafy-{name}", b"", "adapter") for name, path in demo.adapters.items()]


@pytest.fixture(scope="module")
def engine(base, adapters):
    with ServingEngine(WorkerConfig("generate", None, threads=1, max_batch=64)) as engine:
        engine.preload([(base, adapters)], progress=lambda _: None)
        yield engine


@pytest.fixture(scope="module")
def in_process():
    return Executor(RunnerRegistry("cpu"))


def _inputs(adapters, n: int) -> list[bytes]:
    """n generation inputs over all adapters and the bare base (adapter null)."""
    choices = [a.cid for a in adapters] + [None]
    return [
        json.dumps(
            {"prompt": PROMPTS[i % len(PROMPTS)], "adapter": choices[i % len(choices)], "max_new_tokens": 8 + i % 9}
        ).encode()
        for i in range(n)
    ]


def _wait_for(condition, timeout: float = 30.0) -> None:
    give_up = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < give_up, "timed out waiting"
        time.sleep(0.005)


def test_engine__concurrent_jobs__run_batched_with_one_by_one_tokens(engine, base, adapters, in_process):
    inputs = _inputs(adapters, 24)
    one_by_one = [engine.run(base, adapters, x) for x in inputs]
    sent_before = len(engine.worker(base).batches)
    with ThreadPoolExecutor(len(inputs)) as pool:
        batched = list(pool.map(lambda x: engine.run(base, adapters, x), inputs))
    assert batched == one_by_one  # byte for byte, whatever shared the batch
    assert max(engine.worker(base).batches[sent_before:]) > 1
    # and equal to the in-process runtime's canonical bytes
    assert one_by_one[:8] == [in_process.run(base, adapters, x) for x in inputs[:8]]
    outputs = [json.loads(b) for b in batched]
    assert {o["adapter"] for o in outputs} == {a.cid for a in adapters} | {None}


def test_engine__embedding_job__same_bytes_as_in_process(engine, in_process):
    minilm = LocalModel(minilm_dir(), "bafy-minilm", b"", "embed")
    data = json.dumps({"texts": ["a cat on a mat", "the capital of France", "x"]}).encode()
    assert engine.run(minilm, [], data) == in_process.run(minilm, [], data)


def _embedding_inputs(n: int, texts_per_job: int) -> list[bytes]:
    """n embedding inputs whose texts range from one token to dozens, so length-sorting mixes jobs."""
    return [
        json.dumps(
            {
                "texts": [
                    " ".join([SENTENCES[(i + k) % len(SENTENCES)]] * (1 + (i * k) % 3)) for k in range(texts_per_job)
                ]
            }
        ).encode()
        for i in range(n)
    ]


def test_engine__concurrent_embedding_jobs__one_batch_and_each_agrees_with_alone(engine):
    minilm = LocalModel(minilm_dir(), "bafy-minilm", b"", "embed")
    good = _embedding_inputs(16, 6)  # 96 texts: two chunks of the engine's max_batch (64)
    bad = json.dumps({"texts": []}).encode()  # passes the agent's checks, fails the runner's
    started = time.perf_counter()
    alone = [engine.run(minilm, [], x) for x in good]  # each in a batch of its own
    alone_s = time.perf_counter() - started
    worker = engine.worker(minilm)
    sent = len(worker.batches)

    def run(data: bytes) -> bytes | Exception:
        try:
            return engine.run(minilm, [], data)
        except JobInputError as exc:
            return exc

    # A frozen worker holds the first job's batch; everything else queues behind it and goes
    # out as one batch when it thaws: the batch's make-up does not depend on thread timing.
    os.kill(worker.pid, signal.SIGSTOP)
    try:
        with ThreadPoolExecutor(len(good) + 1) as pool:
            first = pool.submit(run, good[0])
            _wait_for(lambda: len(worker.batches) == sent + 1)
            rest = [pool.submit(run, x) for x in [*good[1:8], bad, *good[8:]]]
            _wait_for(lambda: len(worker._queue) == len(rest))
            thawed = time.perf_counter()
            os.kill(worker.pid, signal.SIGCONT)
            replies = [first.result(timeout=120)] + [f.result(timeout=120) for f in rest]
            batched_s = time.perf_counter() - thawed
    finally:
        os.kill(worker.pid, signal.SIGCONT)
    assert worker.batches[sent:] == [1, len(rest)]  # the bad job shared the second batch

    failed = replies.pop(8)
    assert isinstance(failed, JobInputError) and "texts must hold 1 to 256" in str(failed)
    params = VerificationParams()
    cosines = []
    for got, want in zip(replies, alone, strict=False):
        x, y = json.loads(got), json.loads(want)
        assert embeddings_agree(x, y, params.min_cosine)
        vx, vy = np.array(x["vectors"]), np.array(y["vectors"])
        cosines.extend(np.einsum("ij,ij->i", vx, vy) / np.linalg.norm(vx, axis=1) / np.linalg.norm(vy, axis=1))
    differ = sum(a != b for a, b in zip(replies, alone, strict=False))
    assert differ >= 1  # padded beside other jobs' texts: embedded alone, every byte would match
    print(
        f"\nembedding: {len(good)} jobs x 6 texts one by one {alone_s * 1e3:.0f} ms, batched (1 + {len(rest)}) "
        f"{batched_s * 1e3:.0f} ms ({alone_s / batched_s:.1f}x); max 1-cosine vs alone {1 - min(cosines):.2e}, "
        f"{differ}/{len(good)} outputs differ in bytes"
    )


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ({"prompt": "word " * 300}, "exceeds the model's context"),
        ({"prompt": "The", "max_new_tokens": 65}, "between 1 and 64"),
        ({"texts": ["an embedding job"]}, "unknown field"),
        ({"prompt": "The", "chat": "yes"}, '"chat" must be true or false'),
        ({"prompt": "The", "adapter": "bafy-not-an-adapter"}, "not one of this model's adapters"),
    ],
)
def test_engine__bad_job__input_error_and_the_worker_keeps_serving(engine, base, adapters, payload, message):
    pid = engine.worker(base).pid
    with pytest.raises(JobInputError, match=message):
        engine.run(base, adapters, json.dumps(payload).encode())
    assert json.loads(engine.run(base, adapters, b'{"prompt": "The", "max_new_tokens": 2}'))["kind"] == "generate"
    assert engine.worker(base).pid == pid  # the same process: nothing restarted


def test_engine__generation_job_to_embedding_model__input_error(engine):
    minilm = LocalModel(minilm_dir(), "bafy-minilm", b"", "embed")
    with pytest.raises(JobInputError, match="unknown field"):
        engine.run(minilm, [], b'{"prompt": "The"}')


def test_worker__adapter_cache_smaller_than_batch__evicts_reloads_and_agrees(demo, base, adapters, engine):
    inputs = _inputs(adapters, 12)
    expected = [engine.run(base, adapters, x) for x in inputs]
    small = ServingEngine(WorkerConfig("generate", None, threads=1, max_adapters=2))
    try:
        with ThreadPoolExecutor(len(inputs)) as pool:
            got = list(pool.map(lambda x: small.run(base, adapters, x), inputs))
        again = [small.run(base, adapters, x) for x in inputs]  # evicted adapters load again
        stats = small.stats()[str(base.path.resolve())]
    finally:
        small.close()
    assert got == expected and again == expected
    assert len(stats["adapters"]) == 2  # never more than the cache holds
    assert stats["rss_mb"] > 100


def _generate_job(adapters, prompt: str, adapter: int | None, max_new_tokens: int) -> dict:
    chosen = adapters[adapter] if adapter is not None else None
    return {
        "prompt": prompt,
        "adapter": chosen.cid if chosen else None,
        "adapter_path": str(chosen.path) if chosen else None,
        "max_new_tokens": max_new_tokens,
    }


def test_worker__killed_mid_batch__every_job_reruns_and_completes(base, adapters):
    jobs = [_generate_job(adapters, PROMPTS[i], i % 3, 200 if i == 0 else 4) for i in range(4)]
    with ModelWorker(WorkerConfig("generate", str(base.path), threads=1)) as worker:
        expected = [worker.run(job) for job in jobs]
        pid = worker.pid
        os.kill(pid, signal.SIGSTOP)  # frozen: the batch cannot finish before the kill
        futures = [worker.submit(job) for job in jobs]
        _wait_for(lambda: len(worker.batches) == 5)
        os.kill(pid, signal.SIGKILL)
        results = [f.result(timeout=120) for f in futures]
        assert worker.restarts == 1 and worker.pid not in (None, pid)
    assert [r["ok"]["token_ids"] for r in results] == [r["ok"]["token_ids"] for r in expected]
    assert worker.batches[5 : 5 + worker.batches[4]] == [1] * worker.batches[4]  # re-run one by one


def test_worker__hung__killed_restarted_and_the_job_completes(base, adapters):
    job = _generate_job(adapters, "The", 1, 4)
    config = WorkerConfig("generate", str(base.path), threads=1, batch_timeout_s=2.0)
    with ModelWorker(config) as worker:
        expected = worker.run(job)
        pid = worker.pid
        os.kill(pid, signal.SIGSTOP)  # a hang: alive, silent
        assert worker.run(job, timeout=120)["ok"]["token_ids"] == expected["ok"]["token_ids"]
        assert worker.restarts == 1 and worker.pid != pid


def test_worker__hangs_under_the_same_job_again__fails_naming_the_time_limit(base, adapters):
    config = WorkerConfig("generate", str(base.path), threads=1, batch_timeout_s=2.0, max_attempts=1)
    with ModelWorker(config) as worker:
        worker.start()
        os.kill(worker.pid, signal.SIGSTOP)
        future = worker.submit(_generate_job(adapters, "The", 0, 4))
        with pytest.raises(WorkerCrashed, match=r"ran past its 2s time limit \(tries: 1\); not completed"):
            future.result(timeout=120)
        # the next job gets a fresh worker
        assert "ok" in worker.run(_generate_job(adapters, "The", 0, 4), timeout=120)


def test_worker__model_that_fails_to_load__every_job_fails_with_why(tmp_path):
    (tmp_path / "config.json").write_text('{"model_type": "gpt2"}')  # no weights, no tokenizer
    with ModelWorker(WorkerConfig("generate", str(tmp_path))) as worker:
        future = worker.submit({"prompt": "The", "adapter": None, "adapter_path": None, "max_new_tokens": 2})
        with pytest.raises(WorkerLoadError, match=f"cannot load the model at {tmp_path}"):
            future.result(timeout=120)


def test_engine__adapter_of_another_base__refused_at_preload(tmp_path, base):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    other = GPT2LMHeadModel(GPT2Config(vocab_size=64, n_positions=32, n_embd=16, n_layer=1, n_head=2))
    get_peft_model(other, LoraConfig(r=2, target_modules=["c_attn"])).save_pretrained(tmp_path)
    foreign = LocalModel(tmp_path, "bafy-foreign", b"", "adapter")
    with ServingEngine(WorkerConfig("generate", None, threads=1)) as engine:
        with pytest.raises(JobSpecError, match="cannot serve adapter"):
            engine.preload([(base, [foreign])], progress=lambda _: None)
        with pytest.raises(JobInputError, match="does not fit base model"):
            engine.run(base, [foreign], b'{"prompt": "The"}')


def test_worker_environment__passes_no_agent_secret():
    parent = {
        "PATH": "/usr/bin",
        "HOME": "/home/a",
        "TRIBUTA_PRIVATE_KEY": "0xsecret",
        "TRIBUTA_PASSWORD": "pw",
        "AWS_SECRET_ACCESS_KEY": "k",
    }
    env = worker_environment(parent)
    assert "0xsecret" not in env.values() and "pw" not in env.values() and "k" not in env.values()
    assert env["PATH"] == "/usr/bin" and env["HF_HUB_OFFLINE"] == "1"
