"""Job outputs of one set of inputs under a hardware variation (dtype, batching, threads, or
an environment such as ATEN_CPU_CAPABILITY, which takes a fresh process), for the tests and
the bench that check the acceptance rule holds across them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import torch

from tributa.runtime.embedding import EmbeddingRunner
from tributa.runtime.generation import GenerationRequest, GenerationRunner
from tributa.runtime.jobs import embedding_output, generation_output

# The inputs every variation is run on: prompt subjects (the generation check) and texts of one
# template (the embedding check), shared by tests/oracle/test_verification.py and bench/verify_bench.py.
SUBJECTS = (
    "The moon",
    "A good soup",
    "The old fox",
    "Stars at night",
    "My grandmother",
    "The river",
    "A small robot",
    "The king",
    "Bread dough",
    "The comet",
    "In the forest",
    "The recipe",
    "Once upon a time",
    "The telescope",
    "A hungry wolf",
    "Garlic and onions",
)
TEXTS = [f"{s} is sentence {i} of the embedding check." for i, s in enumerate(SUBJECTS * 4)]


def generation_outputs(
    base_dir: Path,
    adapters: dict[str, Path],
    requests: Sequence[GenerationRequest],
    dtype: str = "float32",
    batch: bool = False,
    threads: int | None = None,
) -> list[bytes]:
    """Canonical outputs of `requests` on a fresh CPU runner: one by one, or as one batch."""
    runner = GenerationRunner(base_dir, device="cpu", dtype=dtype)
    for name, path in adapters.items():
        runner.load_adapter(name, path)
    with torch_threads(threads):
        results = runner.generate_batch(requests) if batch else [runner.generate_batch([r])[0] for r in requests]
    return [generation_output(r).output for r in results]  # type: ignore[arg-type]


def embedding_outputs(texts: Sequence[str], batch: bool = False, threads: int | None = None) -> list[bytes]:
    """One canonical embedding output per text: each embedded alone, or all in one call."""
    runner = EmbeddingRunner(device="cpu")
    with torch_threads(threads):
        rows = runner.embed(list(texts)).vectors if batch else [runner.embed([t]).vectors[0] for t in texts]
    return [embedding_output(runner.model_id, runner.dim, [list(map(float, row))], {}).output for row in rows]


@contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    before = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def in_child(env: dict[str, str], kind: str, **kwargs) -> list[bytes]:
    """`generation_outputs` or `embedding_outputs` run in a child Python under `env` (variables
    like ATEN_CPU_CAPABILITY are read once, when torch loads)."""
    args = json.dumps({"kind": kind, "kwargs": kwargs}, default=_plain)
    done = subprocess.run(
        [sys.executable, "-m", "tributa.verification.matrix"],
        input=args,
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        check=False,
        timeout=900,
    )
    if done.returncode != 0:
        raise RuntimeError(f"child run failed: {done.stderr[-2000:]}")
    return [bytes.fromhex(h) for h in json.loads(done.stdout.strip().splitlines()[-1])]


def _plain(value: object) -> object:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, GenerationRequest):
        return {
            "prompt": value.prompt,
            "adapter": value.adapter,
            "max_new_tokens": value.max_new_tokens,
            "chat": value.chat,
        }
    raise TypeError(f"cannot send {type(value).__name__} to the child")


def _main() -> None:
    args = json.loads(sys.stdin.read())
    kwargs = args["kwargs"]
    if args["kind"] == "generate":
        kwargs["base_dir"] = Path(kwargs["base_dir"])
        kwargs["adapters"] = {k: Path(v) for k, v in kwargs["adapters"].items()}
        kwargs["requests"] = [GenerationRequest(**r) for r in kwargs["requests"]]
        outputs = generation_outputs(**kwargs)
    else:
        outputs = embedding_outputs(**kwargs)
    print(json.dumps([o.hex() for o in outputs]))


if __name__ == "__main__":
    _main()
