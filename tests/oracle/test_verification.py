"""The acceptance rule on real models: honest answers from other hardware, batches and threads
agree; substituted models, adapters, prompts, truncations, edits and random vectors do not."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
from sqlalchemy import select

from oracle.db import Job, JobState, Task
from oracle.verify import decide
from tributa.ml.gguf_models import ensure_smollm2
from tributa.ml.models import ensure_demo_models
from tributa.runtime.generation import GenerationRequest, GenerationRunner
from tributa.runtime.jobs import canonical_json, embedding_output, generation_output
from tributa.verification import Answer, ClaimChecker, Judge, VerificationParams, agreeing_sets
from tributa.verification.matrix import SUBJECTS, TEXTS, embedding_outputs, generation_outputs, in_child

# The demo GPT-2's adapters are close to each other: its registered margin is tighter than the default.
GPT2 = VerificationParams(logit_margin=0.1)


@pytest.fixture(scope="module")
def demo():
    return ensure_demo_models(progress=lambda _: None)


@pytest.fixture(scope="module")
def requests(demo):
    names = [None, *demo.adapters]
    return [GenerationRequest(p, names[i % len(names)], 24) for i, p in enumerate(SUBJECTS)]


@pytest.fixture(scope="module")
def verifier(demo):
    runner = GenerationRunner(demo.base_dir, device="cpu", dtype="float32")
    for name, path in demo.adapters.items():
        runner.load_adapter(name, path)
    return runner


@pytest.fixture(scope="module")
def fp32(demo, requests):
    return generation_outputs(demo.base_dir, demo.adapters, requests)


@pytest.fixture(scope="module")
def embedded():
    return embedding_outputs(TEXTS, batch=True)


def _judge(verifier, request, params=GPT2) -> Judge:
    return Judge(params, ClaimChecker(verifier, request, params.logit_margin))


def _edited(claim: bytes, verifier, **changes) -> bytes:
    """A claim with fields replaced; text re-decoded from the new tokens, so only the tokens lie."""
    out = json.loads(claim)
    out.update(changes)
    if "token_ids" in changes and "text" not in changes:
        out["text"] = verifier.tokenizer.decode(out["token_ids"], skip_special_tokens=True)
    return canonical_json(out)


def _assert_generations_agree(verifier, requests, ours, theirs, params=GPT2) -> int:
    for request, a, b in zip(requests, ours, theirs, strict=False):
        assert _judge(verifier, request, params).agree(a, b), (request, a, b)
    return sum(a != b for a, b in zip(ours, theirs, strict=False))


# -- generation: accepted ----------------------------------------------------------------------
def test_generation__bf16_agent__agrees_with_fp32_though_tokens_differ(demo, requests, verifier, fp32):
    bf16 = generation_outputs(demo.base_dir, demo.adapters, requests, dtype="bfloat16")

    assert _assert_generations_agree(verifier, requests, fp32, bf16) >= 1  # some outputs really differ


def test_generation__batch_of_8_and_two_threads__agree_with_one_by_one(demo, requests, verifier, fp32):
    batched = generation_outputs(demo.base_dir, demo.adapters, requests[:8], batch=True)
    threaded = generation_outputs(demo.base_dir, demo.adapters, requests, threads=2)
    single = generation_outputs(demo.base_dir, demo.adapters, requests, threads=1)

    _assert_generations_agree(verifier, requests[:8], fp32[:8], batched)
    _assert_generations_agree(verifier, requests, single, threaded)


def test_generation__aten_default_capability_child__agrees(demo, requests, verifier, fp32):
    child = in_child(
        {"ATEN_CPU_CAPABILITY": "default"},
        "generate",
        base_dir=demo.base_dir,
        adapters=demo.adapters,
        requests=requests,
    )

    _assert_generations_agree(verifier, requests, fp32, child)


def test_generation__smollm2_bf16__agrees_with_fp32_at_the_default_margin():
    base = ensure_smollm2(progress=lambda _: None)
    prompts = [
        GenerationRequest(p, None, 16)
        for p in ("A week has", "The sun rises in the", "Cats like to", "The opposite of hot is")
    ]
    ours = generation_outputs(base, {}, prompts)
    theirs = generation_outputs(base, {}, prompts, dtype="bfloat16")

    assert (
        _assert_generations_agree(GenerationRunner(base, device="cpu"), prompts, ours, theirs, VerificationParams())
        >= 1
    )


# -- generation: rejected ----------------------------------------------------------------------
def _swaps_rejected(verifier, prompts, names, params, new_tokens=24) -> int:
    """Each adapter's (or the bare base's) answer relabelled as another's, for each prompt: every
    swap whose tokens differ from the claimed adapter's own answer is refused by the rescoring.
    Returns how many such swaps there were (an adapter that gives the same tokens is no swap)."""
    swaps = 0
    for prompt in prompts:
        answers = {a: generation_output(verifier.generate(prompt, a, new_tokens)).output for a in names}
        for ran in names:
            for claimed in names:
                forged = _edited(answers[ran], verifier, adapter=claimed)
                if ran == claimed or forged == answers[claimed]:
                    continue
                swaps += 1
                assert "logits below" in _judge(
                    verifier, GenerationRequest(prompt, claimed, new_tokens), params
                ).rejection(forged), (prompt, ran, claimed)
    return swaps


def test_generation__another_adapters_output__rejected(demo, verifier):
    names = [None, *demo.adapters]

    assert _swaps_rejected(verifier, SUBJECTS[:4], names, GPT2) >= 24  # of 48 ordered pairs, most really differ


def test_generation__smollm2_demo_adapters_swapped__rejected_at_the_default_margin():
    # The demo's real model: its adapters must be far enough apart that a swap is caught at the
    # margin honest bf16 needs (six training steps were not: 12 of 96 swaps passed).
    from tributa.ml.smollm_adapters import ensure_smollm2_demo

    smollm = ensure_smollm2_demo(progress=lambda _: None)  # a cache hit after `make setup`
    verifier = GenerationRunner(smollm.base_dir, device="cpu", dtype="float32")
    for name, path in smollm.adapters.items():
        verifier.load_adapter(name, path)

    assert (
        _swaps_rejected(verifier, ("The fox", "Bake the bread"), [None, *smollm.adapters], VerificationParams(), 16)
        >= 20
    )


def test_generation__another_model_text_passed_off__rejected(demo, requests, verifier, fp32):
    smol = generation_outputs(
        ensure_smollm2(progress=lambda _: None), {}, [GenerationRequest(r.prompt, None, 24) for r in requests[:4]]
    )
    for request, claim, other in zip(requests, fp32, smol, strict=False):
        ids = verifier.tokenizer(json.loads(other)["text"], add_special_tokens=False)["input_ids"][:24]
        forged = _edited(claim, verifier, token_ids=ids, finish_reason="length" if len(ids) == 24 else "eos")
        assert _judge(verifier, request).rejection(forged)
        assert _judge(verifier, request).rejection(other)  # and under its own name: another model


def test_generation__another_prompt_truncation_or_one_edited_token__rejected(demo, requests, verifier, fp32):
    period = 1 + len(demo.adapters)  # requests cycle through the bare base and each adapter
    for i, (request, claim) in enumerate(zip(requests, fp32, strict=False)):
        judge = _judge(verifier, request)
        ids = json.loads(claim)["token_ids"]
        # Another prompt's answer with the same adapter, its prompt length relabelled to this
        # one's: only the rescoring can tell it apart.
        elsewhere = _edited(fp32[(i + period) % len(fp32)], verifier, prompt_tokens=json.loads(claim)["prompt_tokens"])
        assert json.loads(elsewhere)["adapter"] == json.loads(claim)["adapter"]
        edited = ids[:]
        edited[len(ids) // 2] = (ids[len(ids) // 2] + 1) % len(verifier.tokenizer)

        assert judge.rejection(claim) is None
        assert "logits below" in judge.rejection(elsewhere)
        assert "stops after" in judge.rejection(_edited(claim, verifier, token_ids=ids[:-3], finish_reason="length"))
        assert "logits below" in judge.rejection(_edited(claim, verifier, token_ids=edited))
        assert "text" in judge.rejection(_edited(claim, verifier, text="something else"))
        assert "prompt_tokens" in judge.rejection(
            _edited(claim, verifier, prompt_tokens=json.loads(claim)["prompt_tokens"] + 1)
        )


def test_generation__without_a_verifier_model__only_equal_tokens_agree(demo, requests, fp32):
    bf16 = generation_outputs(demo.base_dir, demo.adapters, requests, dtype="bfloat16")
    judge = Judge(GPT2)

    assert all(judge.agree(a, a) for a in fp32)
    assert [judge.agree(a, b) for a, b in zip(fp32, bf16, strict=False)] == [
        a == b for a, b in zip(fp32, bf16, strict=False)
    ]


# -- embeddings ----------------------------------------------------------------------------------
def test_embedding__alone_vs_batch_threads_and_aten_default__agree(embedded):
    judge = Judge()
    alone = embedding_outputs(TEXTS, batch=False, threads=1)
    child = in_child({"ATEN_CPU_CAPABILITY": "default"}, "embed", texts=TEXTS, batch=True, threads=2)

    for other in (alone, child):
        assert all(judge.agree(a, b) for a, b in zip(embedded, other, strict=False))
    assert sum(a != b for a, b in zip(embedded, alone + child, strict=False)) >= 1  # the bytes do differ somewhere


def test_embedding__random_vectors_other_texts_and_another_model__rejected(embedded):
    judge = Judge()
    rng = np.random.default_rng(0)
    for i, claim in enumerate(embedded):
        out = json.loads(claim)
        noise = rng.normal(size=out["dim"])
        random = embedding_output(out["model"], out["dim"], [list(noise / np.linalg.norm(noise))], {}).output
        other_text = embedded[(i + 1) % len(embedded)]
        other_model = canonical_json({**out, "model": "another-model"})
        doubled = canonical_json({**out, "vectors": out["vectors"] * 2})

        assert not any(judge.agree(claim, x) for x in (random, other_text, other_model, doubled))


# -- grouping and verdicts -------------------------------------------------------------------------
def _jobs(outputs: list[bytes]) -> tuple[list[Job], dict[int, bytes]]:
    jobs = [
        Job(
            id=i,
            task_id=7,
            agent=f"A{i}",
            state=JobState.SUBMITTED,
            result_digest="0x" + hashlib.sha256(o).hexdigest(),
            result_cid=f"cid{i}",
            signature="0x",
        )
        for i, o in enumerate(outputs)
    ]
    return jobs, {j.id: o for j, o in zip(jobs, outputs, strict=False)}


def test_decide__fp32_bf16_and_a_substitute__honest_two_not_slashed(demo, requests, verifier, fp32):
    bf16 = generation_outputs(demo.base_dir, demo.adapters, requests, dtype="bfloat16")
    i = next(i for i, (a, b) in enumerate(zip(fp32, bf16, strict=False)) if a != b)
    wrong = _edited(fp32[i], verifier, token_ids=json.loads(fp32[(i + 1) % len(fp32)])["token_ids"])
    jobs, outputs = _jobs([fp32[i], bf16[i], wrong])

    verdict = decide(
        Task(task_id=7, k=3, input_digest="0x" + "00" * 32),
        jobs,
        None,
        lambda o: ("cid", "0x"),
        judge=_judge(verifier, requests[i]),
        output_of=lambda j: outputs[j.id],
    )

    assert verdict.source == "majority" and verdict.slashed == ["A2"]
    assert {j.agent for j in verdict.paid + verdict.agreed} == {"A0", "A1"} and len(verdict.paid) == 1
    assert verdict.result_digest == verdict.paid[0].result_digest


@pytest.mark.parametrize("poison_ids", [[-1], [2**40], ["x"]], ids=["negative", "past-the-vocabulary", "not-an-int"])
def test_decide__a_claim_that_breaks_the_tokenizer__rejected_alone_and_the_honest_two_still_agree(
    demo, requests, verifier, fp32, poison_ids
):
    # The review's attack: ids the tokenizer cannot decode made the check raise, which switched
    # rescoring off for the task, so the honest fp32 and bf16 answers no longer agreed and the
    # bf16 agent was slashed. The poison's digest sorts first, so it is judged first.
    bf16 = generation_outputs(demo.base_dir, demo.adapters, requests, dtype="bfloat16")
    i = next(i for i, (a, b) in enumerate(zip(fp32, bf16, strict=False)) if a != b)
    eos = sorted(verifier.stop_ids)[0]
    digest = lambda o: "0x" + hashlib.sha256(o).hexdigest()  # noqa: E731
    pad = 0
    while True:
        poison = canonical_json(
            {**json.loads(fp32[i]), "token_ids": [*poison_ids, eos], "finish_reason": "eos", "pad": pad}
        )
        if digest(poison) < min(digest(fp32[i]), digest(bf16[i])):
            break
        pad += 1
    jobs, outputs = _jobs([fp32[i], bf16[i], poison])

    verdict = decide(
        Task(task_id=7, k=3, input_digest="0x" + "00" * 32),
        jobs,
        None,
        lambda o: ("cid", "0x"),
        judge=_judge(verifier, requests[i]),
        output_of=lambda j: outputs[j.id],
    )

    assert verdict.source == "majority" and verdict.slashed == ["A2"]
    assert {j.agent for j in verdict.paid + verdict.agreed} == {"A0", "A1"}


def test_judge__the_verifier_itself_fails__raises_instead_of_falling_back_to_equal_bytes(requests, fp32):
    from tributa.verification.judge import RescoreFailed

    def broken(claim):
        raise MemoryError("the sandbox ran out")

    judge = Judge(GPT2, broken)
    with pytest.raises(RescoreFailed, match="MemoryError"):
        judge.agree(fp32[0], canonical_json({**json.loads(fp32[0]), "pad": 1}))
    assert judge.agree(fp32[0], fp32[0])  # equal bytes need no verifier


def test_decide__spot_check_of_a_bf16_agent__paid_with_its_own_digest(demo, requests, verifier, fp32):
    bf16 = generation_outputs(demo.base_dir, demo.adapters, requests, dtype="bfloat16")
    i = next(i for i, (a, b) in enumerate(zip(fp32, bf16, strict=False)) if a != b)
    jobs, outputs = _jobs([bf16[i]])

    verdict = decide(
        Task(task_id=7, k=1, input_digest="0x" + "00" * 32),
        jobs,
        lambda task: fp32[i],
        lambda o: ("oracle-cid", "0xoracle"),
        spot_check=True,
        judge=_judge(verifier, requests[i]),
        output_of=lambda j: outputs[j.id],
    )

    assert verdict.source == "spot_check" and [j.agent for j in verdict.paid] == ["A0"] and verdict.slashed == []
    assert verdict.result_digest == jobs[0].result_digest


def test_committee_answer__a_bf16_posted_answer__upheld_on_the_members_fp32_model_in_process_and_sandboxed(
    demo, tmp_path
):
    from tributa.catalog import describe_folder
    from tributa.runtime.executor import Executor
    from tributa.runtime.jobs import RunnerRegistry
    from tributa.runtime.sandbox import run_callable
    from tributa.store import open_store
    from tributa.verification.local import claim_checker, committee_answer

    store = open_store(tmp_path / "store")
    base, adapter = describe_folder(store, demo.base_dir), describe_folder(store, next(iter(demo.adapters.values())))
    fp32_run, bf16_run = Executor(RunnerRegistry("cpu")), Executor(RunnerRegistry("cpu", "bfloat16"))
    pairs = (
        (p.encode(), fp32_run.run(base, [adapter], p.encode(), 24), bf16_run.run(base, [adapter], p.encode(), 24))
        for p in SUBJECTS
    )
    prompt, own, posted = next((p, a, b) for p, a, b in pairs if a != b)
    claim = json.loads(posted)
    edited = canonical_json({**claim, "token_ids": [claim["token_ids"][0] + 1, *claim["token_ids"][1:]]})
    swapped = Executor(RunnerRegistry("cpu")).run(
        base, [], json.dumps({"prompt": prompt.decode(), "adapter": None}).encode(), 24
    )
    for where in ({"registry": RunnerRegistry("cpu")}, {"run_callable": run_callable}):
        judge = Judge(GPT2, claim_checker(base, [adapter], prompt, 24, GPT2.logit_margin, **where))
        assert committee_answer(posted, own, judge) == posted  # the rule accepts it: the member signs it
        for wrong in (edited, b'{"kind": "generate", "text": "lies"}', swapped):
            assert committee_answer(wrong, own, judge) == own
        assert committee_answer(None, own, judge) == own


def test_agreeing_sets__tie__broken_by_lowest_digest_and_canonical_is_most_held():
    same = lambda a, b: a[:1] == b[:1]  # noqa: E731 - agree on the first byte
    answers = [Answer("0xc", b"x2", 1), Answer("0xb", b"y1", 2), Answer("0xa", b"x1", 1)]

    sets = agreeing_sets(answers, same)

    assert [(s.members, s.agents) for s in sets] == [(frozenset({"0xa", "0xc"}), 2), (frozenset({"0xb"}), 2)]
    assert sets[0].canonical == "0xa" and sets[1].canonical == "0xb"
    assert agreeing_sets(list(reversed(answers)), same) == sets


# -- on a real chain, through the oracle's re-executor ----------------------------------------------
def _demo_model(contracts, signers, store, demo, adapter_dir):
    """The demo base + one adapter, registered (or found: a weights set registers once per chain)."""
    from types import SimpleNamespace

    from tributa.catalog import describe_folder
    from tributa.publish import register_model

    base, adapter = describe_folder(store, demo.base_dir), describe_folder(store, adapter_dir)
    key = contracts.registry.functions.weights_key(base.digest, [adapter.digest]).call()
    existing = contracts.registry.functions.model_id_of_weights(key).call()
    if existing:
        return SimpleNamespace(model_id=existing, adapters=[adapter])
    return register_model(
        contracts, signers["publisher"], store, "verify-demo", demo.base_dir, [adapter_dir], None, 10**15
    )


@pytest.mark.parametrize(
    "registered_margin, sandboxed",
    [(None, False), (0.001, False), (None, True)],
    ids=["default-margin", "registered-tight-margin", "rescored-in-a-bwrap-worker"],
)
def test_settle__fp32_and_bf16_agents_disagree_in_bytes__settles_on_chain_by_the_models_terms(
    demo, contracts, signers, tmp_path, chain_snapshot, registered_margin, sandboxed
):
    """With the margin the settler is given, both honest agents agree and nobody is slashed; with a
    tighter margin registered on the model (`set_serving_terms`), the bf16 answer is rejected.
    With the oracle's sandboxed executor the claims are rescored in a bwrap worker, and the
    oracle's own process loads no model."""
    from oracle.db import TaskState
    from oracle.jobs import Submission
    from oracle.reexecute import Reexecutor
    from tests.helpers import OracleParts, ensure_agent, post_raw_task, signer_for
    from tributa.chain.eip712 import sign_result
    from tributa.runtime.executor import Executor
    from tributa.store import cid as cidlib

    parts = OracleParts(contracts, signers, tmp_path)
    adapter_dir = demo.adapters["cooking"]
    model = _demo_model(contracts, signers, parts.store, demo, adapter_dir)
    name = model.adapters[0].cid  # the executor names an adapter by its CID, and so does its output
    if registered_margin is not None:
        from tributa.publish import set_serving_terms

        set_serving_terms(contracts, signers["publisher"], model.model_id, logit_margin=registered_margin)
    if sandboxed:
        from tributa.runtime.sandbox import SandboxedExecutor

        executor = SandboxedExecutor()
    else:
        executor = Executor()
    parts.settler.reexecute = Reexecutor(contracts, parts.store, [demo.base_dir, adapter_dir], executor)
    assert (parts.settler.reexecute.registry is None) == sandboxed  # nothing to load models in-process with
    parts.settler.verification = GPT2
    asked = [GenerationRequest(p, name, 24) for p in SUBJECTS]
    fp, bf = (generation_outputs(demo.base_dir, {name: adapter_dir}, asked, dtype=d) for d in ("float32", "bfloat16"))
    i = next(i for i, (a, b) in enumerate(zip(fp, bf, strict=False)) if a != b)
    input_cid = str(parts.store.put_bytes(canonical_json({"prompt": SUBJECTS[i], "max_new_tokens": 24})))
    agents = [signer_for(contracts, role) for role in ("16", "17")]
    for agent in agents:
        ensure_agent(contracts, agent, [model.model_id])
    task_id = post_raw_task(contracts, signers["requester"], model.model_id, cidlib.cid_to_digest(input_cid), k=2)
    parts.ingestor.poll_once()
    escrow = contracts.escrow.functions
    before = [(escrow.balance_of(a.address).call(), escrow.agent(a.address).call().stake) for a in agents]
    for agent, output in zip(agents, (fp[i], bf[i]), strict=False):
        offer = parts.book.lease(agent.address, {model.model_id}, parts.chain_time())
        digest = cidlib.cid_to_digest(str(parts.store.cid_of(output)))
        signature = sign_result(agent.account, contracts.chain_id, contracts.escrow.address, task_id, digest)
        parts.book.submit(agent.address, offer.job_id, Submission(output, digest, signature))

    assert parts.settler.settle_ready() == 1

    assert parts.state(task_id) == TaskState.SETTLED
    after = [(escrow.balance_of(a.address).call(), escrow.agent(a.address).call().stake) for a in agents]
    slashed = [a[1] < b[1] for a, b in zip(after, before, strict=False)]
    assert slashed == ([False, False] if registered_margin is None else [False, True])  # the bf16 agent is agents[1]
    assert sorted(a[0] > b[0] for a, b in zip(after, before, strict=False)) == [
        False,
        True,
    ]  # the canonical one is paid
    from oracle.db import Job
    from oracle.jobs import agreement

    with parts.db.session() as s:  # routing counts the honest bf16 answer as agreeing, though its bytes differ
        assert [s.execute(select(Job.agreed).where(Job.agent == a.address)).scalar_one() for a in agents] == (
            [True, True] if registered_margin is None else [True, False]
        )
        assert agreement(s, agents[1].address) == ((1, 1) if registered_margin is None else (0, 1))
    if sandboxed:
        executor.close()
