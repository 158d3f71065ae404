"""The serving engine on a real device: SmolLM2 with three LoRA adapters, one by one vs batched.

`scripts/gpu_check.sh` runs this on a GPU machine (`--device cuda`); the test suite runs it with
`--device cpu --quick`. It prints tokens/s one by one against mixed-adapter batches, the worker's
memory, and whether the device's tokens equal the CPU's (exact equality: the protocol compares
generation results by digest), and exits 1 if they do not.

    python -m tributa.runtime.gpu_check --device cuda [--batches 8 32] [--new-tokens 32]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

PROMPTS = (
    "The capital of France is", "Water boils at", "The largest planet in the solar system is",
    "Bread is made from", "A week has", "The sun rises in the", "Photosynthesis turns",
    "The opposite of hot is",
)
ADAPTERS = 3


def random_adapters(base_dir: Path, out: Path, count: int = ADAPTERS) -> list[Path]:
    """`count` LoRA adapters with seeded random weights (not trained: what matters here is that
    each changes the base's output), saved once under `out`."""
    import torch
    from peft import LoraConfig, get_peft_model

    from tributa.ml.models import load_causal_lm

    folders = [out / f"adapter-{i}" for i in range(count)]
    if all((f / "adapter_config.json").is_file() for f in folders):
        return folders
    model, _ = load_causal_lm(base_dir)
    for i, folder in enumerate(folders):
        torch.manual_seed(1000 + i)
        config = LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
        peft = get_peft_model(model, config)
        with torch.no_grad():  # small: the adapters steer the base, they do not drown it
            for name, param in peft.named_parameters():
                if "lora_" in name:
                    param.mul_(0.05)
        peft.save_pretrained(str(folder))
        model = peft.unload()
    return folders


def _jobs(adapters: list[Path], n: int, new_tokens: int) -> list[dict[str, Any]]:
    return [
        {"prompt": PROMPTS[i % len(PROMPTS)], "adapter": f"adapter-{i % len(adapters)}",
         "adapter_path": str(adapters[i % len(adapters)]), "max_new_tokens": new_tokens}
        for i in range(n)
    ]


def _tokens_per_s(worker, jobs: list[dict[str, Any]], batched: bool) -> tuple[float, list[list[int]]]:
    started = time.perf_counter()
    if batched:
        futures = [worker.submit(job) for job in jobs]
        replies = [f.result() for f in futures]
    else:
        replies = [worker.run(job) for job in jobs]
    seconds = time.perf_counter() - started
    tokens = [r["ok"]["token_ids"] for r in replies]
    return sum(map(len, tokens)) / seconds, tokens


def check(device: str, dtype: str | None, batches: list[int], new_tokens: int, cache: Path, say=print) -> dict[str, Any]:
    from tributa.ml.gguf_models import ensure_smollm2
    from tributa.runtime.worker import ModelWorker, WorkerConfig

    base = ensure_smollm2(progress=say)
    adapters = random_adapters(base, cache / "gpu-check-adapters")
    report: dict[str, Any] = {"device": device, "model": "SmolLM2-135M-Instruct", "adapters": len(adapters), "new_tokens": new_tokens}
    biggest = max(batches)
    config = WorkerConfig("generate", str(base), device=device, dtype=dtype, max_batch=biggest, max_adapters=len(adapters))
    with ModelWorker(config) as worker:
        info = worker.start()
        report["dtype"] = info["dtype"]
        say(f"worker on {info['device']} ({info['dtype']}), loaded in {info['load_s']:.1f}s")
        _tokens_per_s(worker, _jobs(adapters, 2, 2), batched=True)  # warm-up (kernels, caches)
        one_rate, _ = _tokens_per_s(worker, _jobs(adapters, min(8, biggest), new_tokens), batched=False)
        report["tokens_per_s_one_by_one"] = round(one_rate, 1)
        say(f"one by one: {one_rate:.1f} tokens/s")
        for size in batches:
            rate, _ = _tokens_per_s(worker, _jobs(adapters, size, new_tokens), batched=True)
            report[f"tokens_per_s_batch_{size}"] = round(rate, 1)
            say(f"mixed-adapter batch of {size}: {rate:.1f} tokens/s ({rate / one_rate:.1f}x)")
        stats = worker.stats()
        report["worker_rss_mb"] = stats["rss_mb"]
        if "gpu_peak_mb" in stats:
            report["gpu_peak_mb"] = stats["gpu_peak_mb"]
            say(f"GPU memory, peak allocated: {stats['gpu_peak_mb']:.0f} MiB")
    report.update(_agreement(base, adapters, device, new_tokens, say))
    return report


def _agreement(base: Path, adapters: list[Path], device: str, new_tokens: int, say) -> dict[str, Any]:
    """The same jobs in float32: batched on `device` against one by one on the CPU, equal tokens?"""
    from tributa.runtime.worker import ModelWorker, WorkerConfig

    jobs = _jobs(adapters, len(PROMPTS), new_tokens)
    tokens = {}
    for where, batched in ((device, True), ("cpu", False)):
        with ModelWorker(WorkerConfig("generate", str(base), device=where, dtype="float32", max_batch=len(jobs))) as worker:
            tokens[batched] = _tokens_per_s(worker, jobs, batched)[1]
    equal = sum(a == b for a, b in zip(tokens[True], tokens[False]))
    say(f"float32, batched on {device} vs one by one on cpu: {equal}/{len(jobs)} jobs with identical tokens")
    return {"agree_jobs": equal, "agree_of": len(jobs), "agree": equal == len(jobs)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda", help="cuda, cuda:N or cpu (default: cuda)")
    parser.add_argument("--dtype", default=None, choices=["float32", "bfloat16", "float16"],
                        help="the throughput worker's dtype (default: bf16/fp16 on a GPU, fp32 on CPU)")
    parser.add_argument("--batches", type=int, nargs="+", default=[8, 32], help="mixed batch sizes (default: 8 32)")
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--quick", action="store_true", help="batches of 2, 4 new tokens (for the CPU test)")
    parser.add_argument("--cache", type=Path, default=None, help="where the adapters are kept (default: the model cache)")
    parser.add_argument("--json", type=Path, default=None, help="also write the report here")
    args = parser.parse_args(argv)
    if args.quick:
        args.batches, args.new_tokens = [2], 4
    if min(args.batches) < 1 or args.new_tokens < 1:
        parser.error("--batches and --new-tokens must be positive")
    if args.device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            print(f"gpu_check: --device {args.device}, but this torch ({torch.__version__}) sees no CUDA device", file=sys.stderr)
            return 2
    from tributa.ml.tokenizer import resolve_cache_dir

    report = check(args.device, args.dtype, args.batches, args.new_tokens, resolve_cache_dir(args.cache))
    print(json.dumps(report, indent=2))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0 if report["agree"] else 1


if __name__ == "__main__":
    sys.exit(main())
