"""The serving engine: jobs per second one by one against dynamic mixed-adapter batches.

Every job goes through the real path of an agent's job: input bytes checked in this process,
queued to the base model's worker process, run there, canonical output bytes back. The baseline
is plain peft `generate(adapter_names=…)` on the same batch, in this process, in the same run.
Worker and baseline both use one torch thread, so the figures compare batching, not cores.
"""

from __future__ import annotations

import json
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

from tributa.catalog import LocalModel
from tributa.runtime.engine import ServingEngine
from tributa.runtime.worker import WorkerConfig

JOBS = 48
NEW_TOKENS = 32
REPEATS = 3
PROMPTS = ("The", "A star", "Heat the oven", "Once upon a time", "Step one.", "The moon")
SMOLLM_JOBS = 8
SMOLLM_NEW_TOKENS = 16
SMOLLM_PROMPTS = (
    "The capital of France is",
    "Water boils at",
    "The largest planet is",
    "Bread is made from",
    "A week has",
    "The sun rises in the",
    "Cats like to",
    "The opposite of hot is",
)


def _inputs(adapters: list[LocalModel], prompts: tuple[str, ...], n: int, new_tokens: int) -> list[bytes]:
    return [
        json.dumps(
            {
                "prompt": prompts[i % len(prompts)],
                "adapter": adapters[i % len(adapters)].cid,
                "max_new_tokens": new_tokens,
            }
        ).encode()
        for i in range(n)
    ]


def _sequential(
    engine: ServingEngine, base: LocalModel, adapters: list[LocalModel], inputs: list[bytes]
) -> list[bytes]:
    return [engine.run(base, adapters, x) for x in inputs]


# The job threads of an agent with capacity JOBS: long-lived, as Agent.run keeps its pool.
_JOB_THREADS = ThreadPoolExecutor(JOBS, thread_name_prefix="job")


def _batched(engine: ServingEngine, base: LocalModel, adapters: list[LocalModel], inputs: list[bytes]) -> list[bytes]:
    return list(_JOB_THREADS.map(lambda x: engine.run(base, adapters, x), inputs))


def _hf_generate(base_dir: Path, adapters: dict[str, Path], inputs: list[bytes]):
    """Plain peft: one generate(adapter_names=…) call on the whole batch, in this process."""
    from peft import PeftModel
    from transformers import GenerationConfig

    from tributa.ml.models import load_causal_lm

    model, tokenizer = load_causal_lm(base_dir)
    names = list(adapters)
    peft = PeftModel.from_pretrained(model, str(adapters[names[0]]), adapter_name=names[0])
    for name in names[1:]:
        peft.load_adapter(str(adapters[name]), adapter_name=name)
    peft.eval()
    ids = [tokenizer(json.loads(x)["prompt"])["input_ids"] for x in inputs]
    width = max(map(len, ids))
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    input_ids = torch.tensor([[pad] * (width - len(r)) + r for r in ids])
    mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in ids])
    config = GenerationConfig(
        max_new_tokens=NEW_TOKENS, do_sample=False, num_beams=1, eos_token_id=tokenizer.eos_token_id, pad_token_id=pad
    )
    adapter_names = [names[i % len(names)] for i in range(len(inputs))]  # as _inputs assigns them

    def generate() -> None:
        with torch.inference_mode():
            peft.generate(
                input_ids=input_ids,
                attention_mask=mask,
                generation_config=config,
                use_model_defaults=False,
                adapter_names=adapter_names,
            )

    return generate


def _interleaved_medians(*fns, repeats: int = REPEATS) -> list[float]:
    """Median seconds of each fn, run in turn each repeat, so noise hits them alike."""
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(repeats):
        for fn, samples in zip(fns, times, strict=False):
            started = time.perf_counter()
            fn()
            samples.append(time.perf_counter() - started)
    return [statistics.median(samples) for samples in times]


def _checked_engine(base: LocalModel, adapters: list[LocalModel], inputs: list[bytes]) -> ServingEngine:
    """A one-thread engine serving `base`, warmed by running `inputs` both ways, which must agree."""
    engine = ServingEngine(WorkerConfig("generate", None, threads=1, max_batch=len(inputs)))
    engine.preload([(base, adapters)], progress=lambda _: None)
    if _batched(engine, base, adapters, inputs) != _sequential(engine, base, adapters, inputs):
        engine.close()
        raise RuntimeError(f"{base.path.name}: batched outputs differ from one-by-one outputs")
    return engine


def _demo_figures() -> dict[str, float]:
    from tributa.ml.models import ensure_demo_models

    demo = ensure_demo_models(progress=lambda _: None)
    base = LocalModel(Path(demo.base_dir), "demo-base", b"", "generate")
    adapters = [LocalModel(Path(p), f"demo-{name}", b"", "adapter") for name, p in demo.adapters.items()]
    inputs = _inputs(adapters, PROMPTS, JOBS, NEW_TOKENS)
    with _checked_engine(base, adapters, inputs) as engine:
        torch.set_num_threads(1)
        hf_generate = _hf_generate(Path(demo.base_dir), {name: Path(p) for name, p in demo.adapters.items()}, inputs)
        hf_generate()  # warm-up
        sequential_s, batched_s, hf_s = _interleaved_medians(
            lambda: _sequential(engine, base, adapters, inputs),
            lambda: _batched(engine, base, adapters, inputs),
            hf_generate,
            repeats=5,
        )
    return {
        "agent_jobs_per_s_sequential": round(JOBS / sequential_s, 2),
        "agent_jobs_per_s_batched": round(JOBS / batched_s, 2),
        "agent_batch_speedup": round(sequential_s / batched_s, 2),
        "agent_vs_hf_generate_ratio": round(hf_s / batched_s, 3),
    }


def _smollm_figures() -> dict[str, float]:
    from tributa.ml.smollm_adapters import ensure_smollm2_demo

    demo = ensure_smollm2_demo(progress=lambda _: None)
    base = LocalModel(Path(demo.base_dir), "smollm2", b"", "generate")
    adapters = [LocalModel(Path(p), f"smollm2-{name}", b"", "adapter") for name, p in demo.adapters.items()][:3]
    inputs = _inputs(adapters, SMOLLM_PROMPTS, SMOLLM_JOBS, SMOLLM_NEW_TOKENS)
    with _checked_engine(base, adapters, inputs) as engine:
        sequential_s, batched_s = _interleaved_medians(
            lambda: _sequential(engine, base, adapters, inputs),
            lambda: _batched(engine, base, adapters, inputs),
            repeats=2,
        )
        rss = engine.stats()[str(base.path.resolve())]["rss_mb"]
    return {
        "agent_smollm_jobs_per_s_sequential": round(SMOLLM_JOBS / sequential_s, 3),
        "agent_smollm_jobs_per_s_batched": round(SMOLLM_JOBS / batched_s, 3),
        "agent_smollm_batch_speedup": round(sequential_s / batched_s, 2),
        "agent_rss_mb": round(rss, 1),
    }


def _sandbox_overhead() -> dict[str, float]:
    """An empty job (one new token on the demo base) in a bwrap worker against in-process."""
    from tributa.ml.models import ensure_demo_models
    from tributa.runtime import bwrap
    from tributa.runtime.executor import Executor
    from tributa.runtime.jobs import RunnerRegistry

    if bwrap.bwrap_path() is None:
        raise RuntimeError("bubblewrap is not installed: `make setup` installs it")
    demo = ensure_demo_models(progress=lambda _: None)
    base = LocalModel(Path(demo.base_dir), "demo-base", b"", "generate")
    job = json.dumps({"prompt": "The", "max_new_tokens": 1, "adapter": None}).encode()
    torch.set_num_threads(1)
    in_process = Executor(RunnerRegistry("cpu"))
    with ServingEngine(WorkerConfig("generate", None, threads=1, isolation="bwrap", memory_mb=16384)) as engine:
        engine.preload([(base, [])], progress=lambda _: None)
        for _ in range(3):  # warm both
            engine.run(base, [], job), in_process.run(base, [], job)
        sandboxed_s, local_s = _interleaved_medians(
            lambda: engine.run(base, [], job), lambda: in_process.run(base, [], job), repeats=30
        )
    return {"sandbox_job_overhead_ms": round((sandboxed_s - local_s) * 1e3, 2)}


def run(workdir: Path) -> dict[str, float]:
    return {**_demo_figures(), **_smollm_figures(), **_sandbox_overhead()}
