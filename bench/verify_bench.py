"""The acceptance rule: what rescoring a claim costs, and how often it errs either way.

False rejects: honest answers produced under another dtype (bf16), batch (8 vs 1), thread count
(2 vs 1) or ATEN_CPU_CAPABILITY=default (a child process), judged against the fp32 one-by-one
answer, for the demo GPT-2 with its adapters (registered margin 0.1), the demo's SmolLM2 with
its adapters (default margin) and MiniLM embeddings. False accepts: substituted adapter, prompt,
model, truncated output, one edited token, random vectors, another text's vectors, another
model's name, and every swap of one SmolLM2 demo adapter's (or the bare base's) answer for
another's (also reported alone, `verify_smollm_adapter_swap_accept_rate`). Both must be 0.
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path

import numpy as np

from tributa.ml.models import ensure_demo_models
from tributa.ml.smollm_adapters import ensure_smollm2_demo
from tributa.runtime.generation import GenerationRequest, GenerationRunner
from tributa.runtime.jobs import canonical_json, embedding_output, generation_output
from tributa.verification import ClaimChecker, Judge, VerificationParams
from tributa.verification.matrix import SUBJECTS, TEXTS, embedding_outputs, generation_outputs, in_child

GPT2 = VerificationParams(logit_margin=0.1)
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
SWAP_PROMPTS = (
    "The fox",
    "A crow sat",
    "Bake the bread",
    "Once upon a time",
    "The recipe for soup",
    "The king said",
    "In the forest",
    "Stir the",
)
NEW_TOKENS = 24
REPEATS = 5
QUIET = {"progress": lambda _: None}


class Tally:
    """Judgements that went the wrong way, out of how many were made."""

    def __init__(self) -> None:
        self.wrong = self.total = 0

    def count(self, wrong: bool) -> None:
        self.wrong += wrong
        self.total += 1

    @property
    def rate(self) -> float:
        return self.wrong / self.total if self.total else 0.0


def _verifier(base: Path, adapters: dict[str, Path]) -> GenerationRunner:
    runner = GenerationRunner(base, device="cpu", dtype="float32")
    for name, path in adapters.items():
        runner.load_adapter(name, path)
    return runner


def _judge(runner: GenerationRunner, request: GenerationRequest, params: VerificationParams) -> Judge:
    return Judge(params, ClaimChecker(runner, request, params.logit_margin))


def _honest_generations(rejects: Tally, runner, base, adapters, requests, params, variants) -> list[bytes]:
    reference = generation_outputs(base, adapters, requests)
    for variant in variants:
        for request, ours, theirs in zip(requests, reference, variant, strict=False):
            rejects.count(not _judge(runner, request, params).agree(ours, theirs))
    return reference


def _forged(claim: bytes, runner: GenerationRunner, **changes) -> bytes:
    out = {**json.loads(claim), **changes}
    if "token_ids" in changes:
        out["text"] = runner.tokenizer.decode(out["token_ids"], skip_special_tokens=True)
    return canonical_json(out)


def _substitutions(accepts: Tally, runner, requests, reference, smollm_texts) -> None:
    for i, (request, claim) in enumerate(zip(requests, reference, strict=False)):
        ids = json.loads(claim)["token_ids"]
        edited = ids[:]
        edited[len(ids) // 2] = (ids[len(ids) // 2] + 1) % len(runner.tokenizer)
        other = next(r for r in requests if r.adapter != request.adapter)
        relabelled = GenerationRequest(request.prompt, other.adapter, NEW_TOKENS)
        # Another prompt's answer with the same adapter, relabelled to this prompt's length: only
        # rescoring can tell it apart (another adapter's answer would fail on its label).
        j = next(j for j in range(i + 1, i + len(requests)) if requests[j % len(requests)].adapter == request.adapter)
        elsewhere = _forged(reference[j % len(requests)], runner, prompt_tokens=json.loads(claim)["prompt_tokens"])
        forgeries = [
            (request, elsewhere),
            (request, _forged(claim, runner, token_ids=ids[:-3], finish_reason="length")),  # truncated
            (request, _forged(claim, runner, token_ids=edited)),  # one edited token
            (relabelled, _forged(claim, runner, adapter=other.adapter)),  # another adapter's answer
        ]
        if i < len(smollm_texts):  # another model's text, retokenized and passed off as this one's
            stolen = runner.tokenizer(smollm_texts[i], add_special_tokens=False)["input_ids"][:NEW_TOKENS]
            forgeries.append((request, _forged(claim, runner, token_ids=stolen, finish_reason="length")))
        for asked, forged in forgeries:
            honest = _honest_output(runner, asked)
            if forged != honest:  # an adapter whose answer is the same is no substitution
                accepts.count(_judge(runner, asked, GPT2).agree(honest, forged))


def _honest_output(runner: GenerationRunner, request: GenerationRequest) -> bytes:
    return generation_output(runner.generate(request.prompt, request.adapter, request.max_new_tokens)).output


def _embedding_matrix(rejects: Tally, accepts: Tally) -> None:
    judge = Judge()
    reference = embedding_outputs(TEXTS, batch=True)
    variants = (
        embedding_outputs(TEXTS, batch=False),
        embedding_outputs(TEXTS, batch=True, threads=1),
        in_child({"ATEN_CPU_CAPABILITY": "default"}, "embed", texts=TEXTS, batch=True),
    )
    for variant in variants:
        for ours, theirs in zip(reference, variant, strict=False):
            rejects.count(not judge.agree(ours, theirs))
    rng = np.random.default_rng(0)
    for i, claim in enumerate(reference):
        out = json.loads(claim)
        noise = rng.normal(size=out["dim"])
        for forged in (
            embedding_output(out["model"], out["dim"], [list(noise / np.linalg.norm(noise))], {}).output,
            reference[(i + 1) % len(reference)],
            canonical_json({**out, "model": "another-model"}),
        ):
            accepts.count(judge.agree(claim, forged))


def _smollm_adapter_swaps(
    accepts: Tally, smollm_runner: GenerationRunner, names: list[str | None]
) -> tuple[int, int, float]:
    """The demo's own SmolLM2 adapters swapped for one another and for the bare base at the
    default margin, each counted in `accepts`: (swaps, accepted, the least worst-token margin of
    a swap)."""
    params = VerificationParams()
    swaps = accepted = 0
    least = float("inf")
    for prompt in SWAP_PROMPTS:
        outputs = {a: _honest_output(smollm_runner, GenerationRequest(prompt, a, NEW_TOKENS)) for a in names}
        for ran, claimed in ((a, b) for a in names for b in names if a != b):
            asked = GenerationRequest(prompt, claimed, NEW_TOKENS)
            forged = _forged(outputs[ran], smollm_runner, adapter=claimed)
            if json.loads(forged)["token_ids"] == json.loads(outputs[claimed])["token_ids"]:
                continue  # the same tokens: no substitution to catch
            swaps += 1
            passed = _judge(smollm_runner, asked, params).agree(outputs[claimed], forged)
            accepted += passed
            accepts.count(passed)
            least = min(least, max(smollm_runner.rescore(asked, json.loads(forged)["token_ids"])))
    return swaps, accepted, least


def _rescore_ms_per_token(runner: GenerationRunner, requests: list[GenerationRequest], claims: list[bytes]) -> float:
    ids = [json.loads(c)["token_ids"] for c in claims]
    tokens = sum(len(i) for i in ids)
    times = []
    for _ in range(REPEATS):
        started = time.perf_counter()
        for request, claim in zip(requests, ids, strict=False):
            runner.rescore(request, claim)
        times.append((time.perf_counter() - started) * 1e3 / tokens)
    return statistics.median(times)


def run(workdir: Path) -> dict[str, float]:
    rejects, accepts = Tally(), Tally()
    demo = ensure_demo_models(**QUIET)
    names = [None, *demo.adapters]
    requests = [GenerationRequest(p, names[i % len(names)], NEW_TOKENS) for i, p in enumerate(SUBJECTS)]
    gpt2 = _verifier(demo.base_dir, demo.adapters)
    reference = _honest_generations(
        rejects,
        gpt2,
        demo.base_dir,
        demo.adapters,
        requests,
        GPT2,
        (
            generation_outputs(demo.base_dir, demo.adapters, requests, dtype="bfloat16"),
            # two batches of 8, mixed adapters, against one by one
            generation_outputs(demo.base_dir, demo.adapters, requests[:8], batch=True)
            + generation_outputs(demo.base_dir, demo.adapters, requests[8:], batch=True),
            generation_outputs(demo.base_dir, demo.adapters, requests, threads=2),
            in_child(
                {"ATEN_CPU_CAPABILITY": "default"},
                "generate",
                base_dir=demo.base_dir,
                adapters=demo.adapters,
                requests=requests,
            ),
        ),
    )

    smollm = ensure_smollm2_demo(**QUIET)
    smollm_names = [None, *smollm.adapters]
    smollm_requests = [
        GenerationRequest(p, smollm_names[i % len(smollm_names)], NEW_TOKENS) for i, p in enumerate(SMOLLM_PROMPTS)
    ]
    smollm_runner = _verifier(smollm.base_dir, smollm.adapters)
    smollm_reference = _honest_generations(
        rejects,
        smollm_runner,
        smollm.base_dir,
        smollm.adapters,
        smollm_requests,
        VerificationParams(),
        (
            generation_outputs(smollm.base_dir, smollm.adapters, smollm_requests, dtype="bfloat16"),
            generation_outputs(smollm.base_dir, smollm.adapters, smollm_requests, batch=True),
            generation_outputs(smollm.base_dir, smollm.adapters, smollm_requests, threads=2),
            in_child(
                {"ATEN_CPU_CAPABILITY": "default"},
                "generate",
                base_dir=smollm.base_dir,
                adapters=smollm.adapters,
                requests=smollm_requests,
            ),
        ),
    )
    _substitutions(accepts, gpt2, requests, reference, [json.loads(c)["text"] for c in smollm_reference])
    _embedding_matrix(rejects, accepts)
    rescore_ms = _rescore_ms_per_token(smollm_runner, smollm_requests, smollm_reference)
    swaps, swaps_accepted, least_swap_margin = _smollm_adapter_swaps(accepts, smollm_runner, smollm_names)
    return {
        "verify_rescore_ms_per_token": rescore_ms,
        "verify_smollm_adapter_swaps": float(swaps),
        "verify_smollm_adapter_swap_accept_rate": swaps_accepted / swaps if swaps else 0.0,
        "verify_smollm_adapter_swap_least_margin": least_swap_margin,
        "verify_false_reject_rate": rejects.rate,
        "verify_false_accept_rate": accepts.rate,
        "verify_honest_pairs": float(rejects.total),
        "verify_forged_pairs": float(accepts.total),
    }
