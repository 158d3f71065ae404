"""Contracts that ask for AI, end to end on Anvil: the example PromptBoard asks through AIOracle,
the oracle runs the request on an agent and fulfils it, the answer is delivered by callback once
it is final; a wrong answer is challenged by a watcher (`tributa verify watch`), re-executed by
a committee of staked agents drawn on-chain and overturned; a frivolous challenge loses its bond;
an honest bf16 answer is upheld by fp32 members (they sign the posted digest the rule accepts);
members find a challenge on-chain and post their verdicts while the oracle is down; reverting
and gas-burning consumers change nothing else.

Real parts throughout: the oracle and four honest agents are `tributa … run` processes with the
demo's tiny GPT-2 and its adapter in bwrap workers; the dishonest agent is a real job-API client
that signs garbage; the watcher is the CLI re-executing in its own sandbox."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from tests.helpers import registered_model, signer_for
from tributa import prompt_board
from tributa.chain.accounts import dev_account
from tributa.chain.tx import Signer
from tributa.processes import start_agent, start_oracle
from tributa.store import cid_of_bytes, cid_to_digest, open_store

HONEST = (12, 13, 14, 15)  # dev account indexes of the honest agents
LIAR = 16
# Model B's servers, all on its roster: an answer there leaves exactly three committee members,
# two running honest agents and the liar, who never answers a duty (a silent member).
ON_B = (12, 13, 14, LIAR)
WINDOW_S = 300  # the model's challenge window: ample for the watcher to re-execute on a loaded machine
TIMEOUT_S = 240


@pytest.fixture(scope="module")
def world(contracts, deployed, demo_models, tmp_path_factory):
    """A callback model (tiny GPT-2 + one adapter), its board, the agents registered and on its
    committee roster, and the oracle running; agents are started by the tests that need them."""
    from compute_agent.registration import DEVICE_CPU, AgentProfile, ensure_registered, join_committees
    from tributa.crypto import public_key_of

    root = tmp_path_factory.mktemp("ai-oracle")
    settings = deployed.with_overrides(data_dir=root / "oracle")
    store = open_store(settings.store_dir)
    publisher = signer_for(contracts, "publisher")
    adapter, adapter_b = (demo_models.adapters[name] for name in sorted(demo_models.adapters)[:2])
    model = registered_model(contracts, publisher, store, "callback-gen", demo_models.base_dir, [adapter])
    model_b = registered_model(contracts, publisher, store, "callback-gen-b", demo_models.base_dir, [adapter_b])
    for m in (model, model_b):
        publisher.transact(contracts.ai_oracle.functions.set_challenge_window(m, WINDOW_S), action="set window")
    signers = {i: Signer(contracts.w3, dev_account(i)) for i in (*HONEST, LIAR)}
    for i, signer in signers.items():
        served = [model, model_b] if i in ON_B else [model]
        # The liar stakes well above the minimum: slashed once, it still serves (and sits silent on model B's committee).
        stake = 10 * contracts.escrow.functions.min_stake().call() if i == LIAR else None
        ensure_registered(
            contracts, signer, AgentProfile(served, DEVICE_CPU, 4, public_key_of(bytes(signer.account.key))), stake
        )
        join_committees(contracts, signer, served)
    board = prompt_board.deploy(contracts, signer_for(contracts, "deployer"), model)
    oracle = start_oracle(settings, root / "oracle.log", ["--no-attribution", "--text-logs"])
    world = {
        "settings": settings,
        "root": root,
        "model": model,
        "board": board,
        "signers": signers,
        "oracle": oracle,
        "dirs": [demo_models.base_dir, adapter],
        "dir_b": adapter_b,
        "model_b": model_b,
        "agents": {},
        "contracts": contracts,
        "board_b": prompt_board.deploy(contracts, signer_for(contracts, "deployer"), model_b),
    }
    yield world
    stop_honest(world)
    world["oracle"].stop()  # perhaps a restarted one


def start_honest(world, indexes=HONEST, extra=()):
    for i in indexes:
        if i not in world["agents"]:
            data = world["root"] / f"agent-{i}"
            settings = world["settings"].with_overrides(data_dir=data)
            dirs = [*world["dirs"], world["dir_b"]] if i in ON_B else world["dirs"]
            args = [
                "--text-logs",
                "--account",
                f"dev:{i}",
                "--no-committee",
                *extra,
                *[a for d in dirs for a in ("--model-dir", str(d))],
            ]
            world["agents"][i] = start_agent(settings, world["root"] / f"agent-{i}.log", args)


def only_honest(world, indexes):
    """Exactly these honest agents running: the others stopped."""
    for i in [i for i in world["agents"] if i not in indexes]:
        world["agents"].pop(i).stop()
    start_honest(world, indexes)


def stop_honest(world):
    for agent in world["agents"].values():
        agent.stop()
    world["agents"].clear()


def request_row(contracts, rid):
    return contracts.ai_oracle.functions.request(rid).call()


def wait_for(predicate, what, procs, timeout_s=TIMEOUT_S):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        for proc in procs:
            assert proc.alive(), f"{proc.name} died while waiting for {what}: see {proc.log_path}"
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def honest_output(world, prompt: bytes, adapter_dir=None, dtype=None) -> bytes:
    """What the registered weights give, recomputed here (greedy decoding is deterministic)."""
    from tributa.catalog import describe_folder
    from tributa.registry import read_model
    from tributa.runtime.executor import Executor
    from tributa.runtime.jobs import RunnerRegistry

    store = open_store(world["settings"].store_dir)
    base, adapter = (describe_folder(store, d) for d in (world["dirs"][0], adapter_dir or world["dirs"][1]))
    executor = Executor(RunnerRegistry("cpu", dtype)) if dtype else Executor()
    return executor.run(
        base, [adapter], prompt, read_model(world["contracts"].registry, world["model"]).serving.max_new_tokens
    )


def as_delivered(output: bytes) -> bytes:
    return output if len(output) <= 1024 else b"\x12\x20" + cid_to_digest(cid_of_bytes(output))


def liar_answers(world, contracts, garbage: bytes, task_id: int) -> int:
    """The dishonest agent leases the job of `task_id` and signs `garbage` as its result (a
    committee duty it is offered meanwhile it keeps and never answers)."""
    from compute_agent.client import JobClient
    from tributa.chain.eip712 import sign_lease, sign_result

    account = world["signers"][LIAR].account
    client = JobClient(world["settings"].oracle_url, account, contracts.chain_id, contracts.escrow.address)

    def offered():
        offer = client.poll(wait_s=2.0)
        return offer if offer and offer["task_id"] == task_id else None

    offer = wait_for(offered, f"the liar's job for task {task_id}", [world["oracle"]])
    digest = cid_to_digest(cid_of_bytes(garbage))
    signature = sign_result(account, contracts.chain_id, contracts.escrow.address, offer["task_id"], digest)
    lease = sign_lease(
        account, contracts.chain_id, contracts.escrow.address, offer["task_id"], int(offer["lease_expires_at"])
    )
    client.submit(offer["job_id"], garbage, digest, signature, lease)
    client.close()
    return offer["task_id"]


def watch_once(world, account: str = "dev:requester") -> list[dict]:
    settings = world["settings"]
    cmd = [
        sys.executable,
        "-m",
        "tributa.cli",
        "--rpc-url",
        settings.rpc_url,
        "--deployments",
        str(settings.deployments_dir),
        "--data-dir",
        str(world["root"] / "watcher"),
        "verify",
        "watch",
        "--once",
        "--json",
        "--account",
        account,
        *[a for d in world["dirs"] for a in ("--model-dir", str(d))],
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in done.stdout.splitlines()]


def test_callback__honest_answer__provisional_in_its_window_then_a_frivolous_challenge_loses_its_bond_and_it_is_delivered_once(
    world, contracts
):
    start_honest(world)
    asker = signer_for(contracts, "requester")
    prompt = b"The stars"
    asked = prompt_board.ask(world["board"], asker, prompt)
    rid = asked.request_id
    procs = [world["oracle"], *world["agents"].values()]
    wait_for(lambda: request_row(contracts, rid)[4] == 2, "the provisional result", procs)
    assert prompt_board.answer(world["board"], rid) is None  # nothing delivered inside the window

    # A watcher with the same model finds nothing wrong and does not challenge.
    assert {c["request_id"]: c["verdict"] for c in watch_once(world)}.get(rid) == "agrees"

    # A challenger without evidence: the committee re-executes and upholds; its bond is forfeited.
    stranger = signer_for(contracts, "buyer2")
    bond = contracts.ai_oracle.functions.challenge_bond().call()
    stranger.transact(contracts.ai_oracle.functions.challenge(rid), value=bond, action="challenge")
    expected = honest_output(world, prompt)
    got = prompt_board.wait_for_answer(world["board"], rid, TIMEOUT_S)
    assert got == as_delivered(expected)
    resolved = contracts.ai_oracle.events.ChallengeResolved.get_logs(from_block=asked.tx.block_number)
    assert [(e.args.request_id, e.args.outcome, e.args.to_challenger) for e in resolved] == [
        (rid, 1, 0)
    ]  # UPHELD, bond kept
    assert contracts.ai_oracle.functions.balance_of(stranger.address).call() == 0
    delivered = contracts.ai_oracle.events.CallbackDelivered.get_logs(from_block=asked.tx.block_number)
    assert [(e.args.request_id, e.args.success) for e in delivered] == [(rid, True)]


def test_callback__an_honest_bf16_answer__the_watcher_agrees_and_fp32_committee_members_uphold_it_without_slashing(
    world, contracts
):
    # Members that signed their own fp32 bytes would agree with each other, overturn this honest
    # answer from other numerics and slash its agent: they must sign the posted one, which the rule accepts.
    bf16_agent = HONEST[-1]
    prompt = next(
        (
            p
            for p in (
                b"The stars",
                b"The river",
                b"Once upon a time",
                b"My favourite food",
                b"In the morning",
                b"The king said",
                b"Rain fell on",
                b"A small dog",
                b"The city at night",
                b"She opened the door",
            )
            if honest_output(world, p) != honest_output(world, p, dtype="bfloat16")
        ),
        None,
    )
    assert prompt is not None, "bf16 and fp32 agree on every prompt: nothing to uphold"
    only_honest(world, ())
    start_honest(world, (bf16_agent,), extra=("--dtype", "bfloat16"))
    agent = world["signers"][bf16_agent].address
    stake_before = contracts.escrow.functions.agent(agent).call().stake
    asked = prompt_board.ask(world["board"], signer_for(contracts, "requester"), prompt)
    rid = asked.request_id
    wait_for(
        lambda: request_row(contracts, rid)[4] == 2,
        "the bf16 agent's provisional result",
        [world["oracle"], *world["agents"].values()],
    )
    (posted,) = contracts.ai_oracle.events.ResultPosted.get_logs(
        from_block=asked.tx.block_number, argument_filters={"request_id": rid}
    )
    bf16, fp32 = honest_output(world, prompt, dtype="bfloat16"), honest_output(world, prompt)
    assert bytes(posted.args.output) == as_delivered(bf16) != as_delivered(fp32)

    check = {c["request_id"]: c for c in watch_once(world)}[rid]
    assert (check["verdict"], check["note"]) == ("agrees", "other bytes, accepted by the rule"), check

    stranger = signer_for(contracts, "buyer2")
    stranger.transact(
        contracts.ai_oracle.functions.challenge(rid),
        value=contracts.ai_oracle.functions.challenge_bond().call(),
        action="challenge",
    )
    start_honest(world, tuple(i for i in HONEST if i != bf16_agent))  # the fp32 committee
    assert prompt_board.wait_for_answer(world["board"], rid, TIMEOUT_S) == as_delivered(bf16)
    (resolved,) = [
        e
        for e in contracts.ai_oracle.events.ChallengeResolved.get_logs(from_block=asked.tx.block_number)
        if e.args.request_id == rid
    ]
    assert resolved.args.outcome == 1  # UPHELD
    assert contracts.escrow.functions.agent(agent).call().stake >= stake_before  # not slashed
    # The members posted their verdicts on-chain themselves, each over the posted digest.
    (challenged,) = [
        e
        for e in contracts.ai_oracle.events.Challenged.get_logs(from_block=asked.tx.block_number)
        if e.args.request_id == rid
    ]
    members = contracts.committee.functions.committee_of(challenged.args.candidates, [agent]).call()
    verdicts = [
        contracts.committee.functions.posted_digest(rid, m).call()
        for m in members
        if m != world["signers"][LIAR].address
    ]
    assert len(verdicts) >= 2 and set(verdicts) == {bytes(posted.args.result_digest)}
    world["agents"].pop(bf16_agent).stop()  # later tests start it on float32


def test_callback__oracle_down_through_a_challenge__members_find_their_duty_on_chain_and_their_verdicts_decide(
    world, contracts
):
    # Members that learnt of a duty only from the oracle would sit silent while it is away (or
    # withholds it), and the posted result would stand on the oracle's word alone.
    start_honest(world)
    prompt = b"The forest"
    asked = prompt_board.ask(world["board"], signer_for(contracts, "requester"), prompt)
    rid = asked.request_id
    wait_for(
        lambda: request_row(contracts, rid)[4] == 2,
        "the provisional result",
        [world["oracle"], *world["agents"].values()],
    )
    (posted,) = contracts.ai_oracle.events.ResultPosted.get_logs(
        from_block=asked.tx.block_number, argument_filters={"request_id": rid}
    )
    world["oracle"].stop()
    try:
        stranger = signer_for(contracts, "buyer2")
        stranger.transact(
            contracts.ai_oracle.functions.challenge(rid),
            value=contracts.ai_oracle.functions.challenge_bond().call(),
            action="challenge",
        )
        (challenged,) = [
            e
            for e in contracts.ai_oracle.events.Challenged.get_logs(from_block=asked.tx.block_number)
            if e.args.request_id == rid
        ]
        honest = {world["signers"][i].address for i in HONEST}

        def on_chain() -> list[str]:
            return [
                m
                for m in challenged.args.candidates
                if m in honest
                and contracts.committee.functions.posted_digest(rid, m).call() == bytes(posted.args.result_digest)
            ]

        assert (
            len(
                wait_for(
                    lambda: len(on_chain()) >= 2 and on_chain(),
                    "two verdicts posted by the members themselves",
                    list(world["agents"].values()),
                )
            )
            >= 2
        )
    finally:
        world["oracle"] = start_oracle(
            world["settings"], world["root"] / "oracle-restarted.log", ["--no-attribution", "--text-logs"]
        )
    assert prompt_board.wait_for_answer(world["board"], rid, TIMEOUT_S) == as_delivered(honest_output(world, prompt))
    (resolved,) = [
        e
        for e in contracts.ai_oracle.events.ChallengeResolved.get_logs(from_block=asked.tx.block_number)
        if e.args.request_id == rid
    ]
    assert resolved.args.outcome == 1  # UPHELD, on the members' own verdicts


def test_callback__reverting_and_gas_burning_consumers__their_requests_still_settle_and_the_board_still_gets_its_answer(
    world, contracts
):
    import vyper
    from web3.logs import DISCARD

    from tests.contracts.ai_oracle_helpers import CONSUMER

    start_honest(world)
    deployer, asker = signer_for(contracts, "deployer"), signer_for(contracts, "requester")
    out = vyper.compile_code(CONSUMER, output_formats=["abi", "bytecode"])
    factory = contracts.w3.eth.contract(abi=out["abi"], bytecode=out["bytecode"])
    gas_limit = 200_000
    fee = contracts.ai_oracle.functions.estimate_fee(world["model"], gas_limit).call()
    consumers, rids, first_block = {}, {}, 0
    for mode, name in ((1, "reverts"), (2, "burns all its gas")):
        address = deployer.transact(
            factory.constructor(contracts.ai_oracle.address), action="deploy consumer"
        ).receipt.contractAddress
        consumer = contracts.w3.eth.contract(address=address, abi=out["abi"])
        deployer.transact(consumer.functions.set_mode(mode, b""), action="set mode")
        receipt = asker.transact(
            consumer.functions.ask(world["model"], b"The garden", gas_limit, b"ctx"), value=fee, action="ask"
        ).receipt
        (asked,) = contracts.ai_oracle.events.AICallbackRequest().process_receipt(
            receipt, errors=DISCARD
        )  # the escrow's logs too
        consumers[name], rids[name] = consumer, int(asked.args.request_id)
        first_block = first_block or receipt.blockNumber
    board_ask = prompt_board.ask(world["board"], asker, b"The garden")
    rids["board"] = board_ask.request_id
    procs = [world["oracle"], *world["agents"].values()]
    wait_for(lambda: all(request_row(contracts, r)[4] == 2 for r in rids.values()), "three provisional results", procs)
    final_at = max(request_row(contracts, r)[6] for r in rids.values())
    contracts.w3.provider.make_request(
        "evm_increaseTime", [final_at - contracts.w3.eth.get_block("latest")["timestamp"] + 1]
    )
    contracts.w3.provider.make_request("evm_mine", [])
    wait_for(
        lambda: all(request_row(contracts, r)[4] == 4 for r in rids.values()), "three finalized results", procs
    )  # FINAL

    delivered = {
        int(e.args.request_id): e.args
        for e in contracts.ai_oracle.events.CallbackDelivered.get_logs(from_block=first_block)
    }
    for name, consumer in consumers.items():
        assert (delivered[rids[name]].success, delivered[rids[name]].settled) == (False, True), name
        assert consumer.functions.calls().call() == 0, name  # its callback's writes were rolled back
    assert (delivered[rids["board"]].success, delivered[rids["board"]].settled) == (True, True)
    assert prompt_board.answer(world["board"], rids["board"]) == as_delivered(honest_output(world, b"The garden"))
    assert all(contracts.escrow.functions.task(r).call().state == 2 for r in rids.values())  # SETTLED: its agent paid
    assert all(p.alive() for p in procs)


def test_callback__garbage_answer__watcher_challenges_committee_overturns_and_the_consumer_gets_the_right_answer(
    world, contracts
):
    stop_honest(world)  # the liar must be the one that takes the request
    asker = signer_for(contracts, "requester")
    prompt = b"The moon"
    liar = world["signers"][LIAR].address
    stake_before = contracts.escrow.functions.agent(liar).call().stake
    asked = prompt_board.ask(world["board"], asker, prompt)
    rid = asked.request_id
    garbage = b'{"kind": "generate", "text": "lies"}'
    assert liar_answers(world, contracts, garbage, rid) == rid
    wait_for(lambda: request_row(contracts, rid)[4] == 2, "the liar's provisional result", [world["oracle"]])

    checks = {c["request_id"]: c for c in watch_once(world, "dev:buyer")}
    assert checks[rid]["verdict"] == "challenged", checks
    start_honest(world)  # the committee: re-executes once it is drawn
    procs = [world["oracle"], *world["agents"].values()]
    got = prompt_board.wait_for_answer(world["board"], rid, TIMEOUT_S)
    expected = honest_output(world, prompt)
    assert got == as_delivered(expected)
    (resolved,) = contracts.ai_oracle.events.ChallengeResolved.get_logs(from_block=asked.tx.block_number)
    assert (
        resolved.args.outcome == 2
        and resolved.args.to_challenger > contracts.ai_oracle.functions.challenge_bond().call()
    )
    assert contracts.escrow.functions.agent(liar).call().stake < stake_before  # slashed on its own signature
    assert all(p.alive() for p in procs)


def test_callback__a_committee_member_that_never_answers__loses_half_its_deposit_after_the_deadline(world, contracts):
    # Model B's running servers only: an agent registers for every model whose base it holds
    # (adapters fetched on demand), so agent 15 would serve model B too, and when it answered
    # the request the committee (three of the four on the roster) could leave the liar out.
    only_honest(world, tuple(i for i in ON_B if i != LIAR))
    committee = contracts.committee.functions
    liar = world["signers"][LIAR].address
    deposit = committee.deposit_of(liar).call()
    treasury = contracts.escrow.functions.treasury().call()
    credit_before = committee.credit_of(treasury).call()
    asked = prompt_board.ask(world["board_b"], signer_for(contracts, "requester"), b"The sea")
    rid = asked.request_id
    procs = [world["oracle"], *world["agents"].values()]
    wait_for(lambda: request_row(contracts, rid)[4] == 2, "the provisional result", procs)
    buyer2 = signer_for(contracts, "buyer2")
    buyer2.transact(
        contracts.ai_oracle.functions.challenge(rid),
        value=contracts.ai_oracle.functions.challenge_bond().call(),
        action="challenge",
    )
    (challenged,) = contracts.ai_oracle.events.Challenged.get_logs(from_block=asked.tx.block_number)
    assert liar in challenged.args.candidates  # model B's roster is its four servers: all drawn
    expected = as_delivered(honest_output(world, b"The sea", world["dir_b"]))
    assert prompt_board.wait_for_answer(world["board_b"], rid, TIMEOUT_S) == expected  # upheld by the two that ran
    assert committee.silent(rid, liar).call()
    running = [m for m in challenged.args.candidates if m != liar and committee.answered(rid, m).call()]
    assert len(running) == 2 and not any(committee.silent(rid, m).call() for m in running)
    # Past the committee deadline the oracle penalizes the silent member (anyone could).
    contracts.w3.provider.make_request(
        "evm_increaseTime", [committee.deadline_of(rid).call() - contracts.w3.eth.get_block("latest")["timestamp"] + 1]
    )
    contracts.w3.provider.make_request("evm_mine", [])
    penalized = contracts.committee.events.Penalized
    wait_for(
        lambda: any(e.args.request_id == rid for e in penalized.get_logs(from_block=asked.tx.block_number)),
        "the silent member's penalty",
        procs,
    )
    events = penalized.get_logs(from_block=asked.tx.block_number)  # the liar may also have sat silent on model A's
    (mine,) = [e for e in events if e.args.request_id == rid]
    assert (mine.args.member, mine.args.to) == (liar, treasury) and mine.args.amount > 0
    assert committee.deposit_of(liar).call() == deposit - sum(e.args.amount for e in events if e.args.member == liar)
    assert committee.credit_of(treasury).call() - credit_before == sum(e.args.amount for e in events)
    assert not committee.silent(rid, liar).call() and all(committee.deposit_of(m).call() == deposit for m in running)


def test_callback__nobody_answers__the_oracle_expires_it_and_the_asker_gets_every_wei_back(world, contracts):
    stop_honest(world)
    asker = signer_for(contracts, "requester")
    oracle = contracts.ai_oracle.functions
    credit_before = oracle.balance_of(asker.address).call()
    asked = prompt_board.ask(world["board_b"], asker, b"Nobody serves this now")
    rid = asked.request_id
    fulfil_by = request_row(contracts, rid)[6]
    contracts.w3.provider.make_request(
        "evm_increaseTime", [fulfil_by - contracts.w3.eth.get_block("latest")["timestamp"] + 1]
    )
    contracts.w3.provider.make_request("evm_mine", [])
    wait_for(lambda: request_row(contracts, rid)[4] == 5, "the oracle's expire", [world["oracle"]])  # EXPIRED
    assert oracle.balance_of(asker.address).call() - credit_before == asked.fee  # fee, reserve and excess: all of it
    assert prompt_board.answer(world["board_b"], rid) is None
