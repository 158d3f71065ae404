"""Contracts that ask for AI, end to end on Anvil: the example PromptBoard asks through AIOracle,
the oracle runs the request on an agent and fulfils it, the answer is delivered by callback once
it is final; a wrong answer is challenged by a watcher (`tributa verify watch`), re-executed by
a committee of staked agents drawn on-chain and overturned; a frivolous challenge loses its bond.

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
    from compute_agent.registration import AgentProfile, DEVICE_CPU, ensure_registered, join_committees
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
        ensure_registered(contracts, signer, AgentProfile(served, DEVICE_CPU, 4, public_key_of(bytes(signer.account.key))), stake)
        join_committees(contracts, signer, served)
    board = prompt_board.deploy(contracts, signer_for(contracts, "deployer"), model)
    oracle = start_oracle(settings, root / "oracle.log", ["--no-attribution", "--text-logs"])
    world = {"settings": settings, "root": root, "model": model, "board": board, "signers": signers, "oracle": oracle,
             "dirs": [demo_models.base_dir, adapter], "dir_b": adapter_b, "model_b": model_b, "agents": {}, "contracts": contracts,
             "board_b": prompt_board.deploy(contracts, signer_for(contracts, "deployer"), model_b)}
    yield world
    stop_honest(world)
    oracle.stop()


def start_honest(world, indexes=HONEST):
    for i in indexes:
        if i not in world["agents"]:
            data = world["root"] / f"agent-{i}"
            settings = world["settings"].with_overrides(data_dir=data)
            dirs = [*world["dirs"], world["dir_b"]] if i in ON_B else world["dirs"]
            args = ["--text-logs", "--account", f"dev:{i}", "--no-committee", *[a for d in dirs for a in ("--model-dir", str(d))]]
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


def honest_output(world, prompt: bytes, adapter_dir=None) -> bytes:
    """What the registered weights give, recomputed here (greedy decoding is deterministic)."""
    from tributa.catalog import describe_folder
    from tributa.registry import read_model
    from tributa.runtime.executor import Executor

    store = open_store(world["settings"].store_dir)
    base, adapter = (describe_folder(store, d) for d in (world["dirs"][0], adapter_dir or world["dirs"][1]))
    return Executor().run(base, [adapter], prompt, read_model(world["contracts"].registry, world["model"]).serving.max_new_tokens)


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
    lease = sign_lease(account, contracts.chain_id, contracts.escrow.address, offer["task_id"], int(offer["lease_expires_at"]))
    client.submit(offer["job_id"], garbage, digest, signature, lease)
    client.close()
    return offer["task_id"]


def watch_once(world, account: str = "dev:requester") -> list[dict]:
    settings = world["settings"]
    cmd = [sys.executable, "-m", "tributa.cli", "--rpc-url", settings.rpc_url, "--deployments", str(settings.deployments_dir),
           "--data-dir", str(world["root"] / "watcher"), "verify", "watch", "--once", "--json", "--account", account,
           *[a for d in world["dirs"] for a in ("--model-dir", str(d))]]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in done.stdout.splitlines()]


def test_callback__honest_answer__provisional_in_its_window_then_a_frivolous_challenge_loses_its_bond_and_it_is_delivered_once(world, contracts):
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
    assert [(e.args.request_id, e.args.outcome, e.args.to_challenger) for e in resolved] == [(rid, 1, 0)]  # UPHELD, bond kept
    assert contracts.ai_oracle.functions.balance_of(stranger.address).call() == 0
    delivered = contracts.ai_oracle.events.CallbackDelivered.get_logs(from_block=asked.tx.block_number)
    assert [(e.args.request_id, e.args.success) for e in delivered] == [(rid, True)]


def test_callback__garbage_answer__watcher_challenges_committee_overturns_and_the_consumer_gets_the_right_answer(world, contracts):
    stop_honest(world)  # the liar must be the one that takes the request
    asker = signer_for(contracts, "requester")
    prompt = b"The moon"
    liar = world["signers"][LIAR].address
    stake_before = contracts.escrow.functions.agent(liar).call()[0]
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
    assert resolved.args.outcome == 2 and resolved.args.to_challenger > contracts.ai_oracle.functions.challenge_bond().call()
    assert contracts.escrow.functions.agent(liar).call()[0] < stake_before  # slashed on its own signature
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
    buyer2.transact(contracts.ai_oracle.functions.challenge(rid), value=contracts.ai_oracle.functions.challenge_bond().call(),
                    action="challenge")
    (challenged,) = contracts.ai_oracle.events.Challenged.get_logs(from_block=asked.tx.block_number)
    assert liar in challenged.args.candidates  # model B's roster is its four servers: all drawn
    expected = as_delivered(honest_output(world, b"The sea", world["dir_b"]))
    assert prompt_board.wait_for_answer(world["board_b"], rid, TIMEOUT_S) == expected  # upheld by the two that ran
    assert committee.silent(rid, liar).call()
    running = [m for m in challenged.args.candidates if m != liar and committee.answered(rid, m).call()]
    assert len(running) == 2 and not any(committee.silent(rid, m).call() for m in running)
    # Past the committee deadline the oracle penalizes the silent member (anyone could).
    contracts.w3.provider.make_request("evm_increaseTime", [committee.deadline_of(rid).call() - contracts.w3.eth.get_block("latest")["timestamp"] + 1])
    contracts.w3.provider.make_request("evm_mine", [])
    penalized = contracts.committee.events.Penalized
    wait_for(lambda: any(e.args.request_id == rid for e in penalized.get_logs(from_block=asked.tx.block_number)),
             "the silent member's penalty", procs)
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
    contracts.w3.provider.make_request("evm_increaseTime", [fulfil_by - contracts.w3.eth.get_block("latest")["timestamp"] + 1])
    contracts.w3.provider.make_request("evm_mine", [])
    wait_for(lambda: request_row(contracts, rid)[4] == 5, "the oracle's expire", [world["oracle"]])  # EXPIRED
    assert oracle.balance_of(asker.address).call() - credit_before == asked.fee  # fee, reserve and excess: all of it
    assert prompt_board.answer(world["board_b"], rid) is None
