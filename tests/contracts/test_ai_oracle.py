"""AIOracle + AICommittee: contracts that ask for AI (ORA OAO-style requests and
callbacks), outputs on-chain, a challenge window with a committee of staked
agents, and no wei ever stuck."""

import hashlib

import boa
import pytest
from eth_utils import function_signature_to_4byte_selector as selector
from eth_utils import keccak

from tests.contracts import ai_oracle_helpers as x
from tests.contracts import helpers as h

OUT = b"4"
ANSWER = x.file_digest(OUT)
WRONG = b"5"


@pytest.fixture(scope="module")
def ao_world(world):
    return x.deploy(world)


@pytest.fixture
def ao(ao_world):
    with boa.env.anchor():
        yield ao_world


def provisional(ao, output=WRONG, agents=None, window=600, **kw):
    """A request whose provisional result `output` is signed by `agents` (default: agent 0)."""
    x.set_window(ao, window)
    rid = x.request(ao, **kw)
    agents = [ao.w.agents[0]] if agents is None else agents
    s = x.settlement_for(ao, rid, output, agents=agents, agent_fee=10**15 if agents else 0)
    x.fulfill(ao, rid, output, s)
    return rid, s


def challenge(ao, rid, challenger=None, bond=x.CHALLENGE_BOND):
    with boa.env.prank(challenger or ao.w.stranger):
        ao.oracle.challenge(rid, value=bond)
    (ev,) = x.events(ao.oracle, "Challenged")
    return list(ev.candidates)


def committee_of(ao, candidates, originals=None):
    originals = [ao.w.agents[0].address] if originals is None else originals
    return [x.member(ao, m) for m in ao.committee.committee_of(candidates, originals)]


def resolve(ao, rid, candidates, s, verdicts, output, is_cid=False, sender=None, gas=None):
    with boa.env.prank(sender or ao.w.stranger):
        ao.oracle.resolve(rid, candidates, s, verdicts, output, is_cid, b"ctx", gas=gas)
    return ao.oracle.get_logs()


# ------------------------------------------------------------- requests


def test_request_callback__posts_an_escrow_task_and_emits_the_input(ao):
    fee = ao.oracle.estimate_fee(1, x.GAS_LIMIT)
    with boa.env.prank(ao.w.requester):
        rid = ao.consumer.ask(1, b"What is 2+2?", x.GAS_LIMIT, b"ctx", value=fee)
    (req,) = x.events(ao.consumer, "AICallbackRequest")  # the logs of the consumer's transaction
    (terms,) = x.events(ao.consumer, "RequestTerms")
    assert (
        req.account,
        req.request_id,
        req.model_id,
        req.input,
        req.callback_contract,
        req.gas_limit,
        req.callback_data,
    ) == (ao.consumer.address, rid, 1, b"What is 2+2?", ao.consumer.address, x.GAS_LIMIT, b"ctx")
    task = ao.escrow.task(rid)
    reserve = x.GAS_LIMIT * x.GAS_PRICE
    assert task[0] == ao.oracle.address and task[1] == 1  # requester, model
    assert task[2] == x.file_digest(b"What is 2+2?")  # input digest: that of its `ipfs add` CID
    assert task[3] == fee - reserve == terms.task_fee and task[6] == 5  # fee, k
    assert task[5] == terms.escrow_deadline == terms.fulfil_by + 600 + x.COMMITTEE_WINDOW + h.DAY
    r = ao.oracle.request(rid)
    assert (r.callback, r.gas_limit, r.state, r.challenge_window, r.reserve, r.refund_to) == (
        ao.consumer.address,
        x.GAS_LIMIT,
        x.REQUESTED,
        600,
        reserve,
        ao.w.requester,
    )
    assert r.due == boa.env.timestamp + x.RESPONSE_WINDOW
    assert boa.env.get_balance(ao.oracle.address) == reserve
    x.assert_conserved(ao, [rid])


def test_estimate_fee__is_the_grossed_up_task_fee_plus_gas_limit_times_gas_price(ao):
    model_fee = ao.w.model_fee
    shares = h.PROTOCOL_FEE_BPS + h.DATA_SHARE_BPS
    need = model_fee + x.AGENT_FEE
    task_fee = -(-need * h.BPS // (h.BPS - shares))
    assert ao.oracle.estimate_fee(1, 0) == task_fee
    assert ao.oracle.estimate_fee(1, 123_456) == task_fee + 123_456 * x.GAS_PRICE
    assert ao.oracle.estimateFee(1, 123_456) == ao.oracle.estimate_fee(1, 123_456)
    # what the escrow leaves the agents covers agent_fee
    left = task_fee - task_fee * h.PROTOCOL_FEE_BPS // h.BPS - task_fee * h.DATA_SHARE_BPS // h.BPS - model_fee
    assert x.AGENT_FEE <= left <= x.AGENT_FEE + 1


def test_request_callback__overpayment_is_credited_to_the_refund_address_at_once(ao):
    rid = x.request(ao, extra=12345)
    assert ao.oracle.balance_of(ao.w.requester) == 12345
    x.assert_conserved(ao, [rid])


def test_request_callback__refunds_go_to_tx_origin_unless_the_requester_named_a_payee(ao):
    rid = x.request(ao)  # the consumer asks in the requester's transaction
    assert ao.oracle.request(rid).refund_to == ao.w.requester
    payee = boa.env.generate_address("payee")
    ao.consumer.set_mode(0, b"")
    with boa.env.prank(ao.consumer.address):
        ao.oracle.set_payee(payee)
    rid2 = x.request(ao)
    assert ao.oracle.request(rid2).refund_to == payee
    assert ao.oracle.payee_of(ao.consumer.address) == payee


def test_request_callback__camel_case_alias_has_oras_selector_and_works(ao):
    assert (
        selector("requestCallback(uint256,bytes,address,uint64,bytes)")
        == ao.oracle.requestCallback.prepare_calldata(1, b"", ao.consumer.address, 1, b"")[:4]
    )
    assert selector("estimateFee(uint256,uint256)") == ao.oracle.estimateFee.prepare_calldata(1, 1)[:4]
    assert selector("isFinalized(uint256)") == ao.oracle.isFinalized.prepare_calldata(1)[:4]
    fee = ao.oracle.estimateFee(1, 50_000)
    with boa.env.prank(ao.w.requester):
        rid = ao.oracle.requestCallback(1, b"hi", ao.consumer.address, 50_000, b"", value=fee)
    assert ao.oracle.request(rid).state == x.REQUESTED and not ao.oracle.isFinalized(rid)


def test_events__signatures_match_oras_ai_callback_request_and_result(ao):
    def signature(name):
        (ev,) = [e for e in ao.oracle.abi if e.get("type") == "event" and e["name"] == name]
        return f"{name}({','.join(i['type'] for i in ev['inputs'])})", [i["indexed"] for i in ev["inputs"]]

    assert signature("AICallbackRequest") == (
        "AICallbackRequest(address,uint256,uint256,bytes,address,uint64,bytes)",
        [True, True, False, False, False, False, False],
    )
    assert signature("AICallbackResult") == (
        "AICallbackResult(address,uint256,address,bytes)",
        [True, True, False, False],
    )


@pytest.mark.parametrize(
    "change, reason",
    [
        ({"prompt": b""}, "aioracle: empty input"),
        ({"prompt": b"x" * 4097}, "aioracle: input too long"),
        ({"data": b"d" * 1025}, "aioracle: callback data too long"),
        ({"gas_limit": 0}, "aioracle: zero gas limit"),
        ({"gas_limit": 5_000_001}, "aioracle: gas limit above maximum"),
        ({"callback": "eoa"}, "aioracle: callback is not a contract"),
        ({"underpay": 1}, "aioracle: fee below estimate"),
        ({"model_id": 99}, "aioracle: unknown or inactive model"),
    ],
)
def test_request_callback__bad_input__reverts_with_its_reason_and_holds_nothing(ao, change, reason):
    model_id = change.get("model_id", 1)
    prompt = change.get("prompt", b"q")
    data = change.get("data", b"")
    gas_limit = change.get("gas_limit", 100_000)
    callback = ao.w.stranger if change.get("callback") == "eoa" else ao.consumer.address
    fee = ao.oracle.estimate_fee(1, gas_limit) - change.get("underpay", 0)
    before = (boa.env.get_balance(ao.w.requester), ao.escrow.task_count(), held_by_all(ao))
    with boa.env.prank(ao.w.requester), boa.reverts(reason):
        ao.oracle.request_callback(model_id, prompt, callback, gas_limit, data, value=fee)
    assert (boa.env.get_balance(ao.w.requester), ao.escrow.task_count(), held_by_all(ao)) == before


def held_by_all(ao):
    return boa.env.get_balance(ao.oracle.address), boa.env.get_balance(ao.escrow.address)


def test_request_callback__inactive_model__reverts(ao):
    with boa.env.prank(ao.w.publisher):
        ao.w.registry.set_model_active(1, False)
    with boa.env.prank(ao.w.requester), boa.reverts("aioracle: unknown or inactive model"):
        ao.oracle.request_callback(1, b"q", ao.consumer.address, 1, b"", value=10**18)


# ------------------------------------------------- fulfil with no window


def test_fulfill__window_zero__settles_and_delivers_once_in_the_same_transaction(ao):
    x.set_window(ao, 0)
    rid = x.request(ao)
    s = x.settlement_for(ao, rid, OUT, agents=[ao.w.agents[0]], agent_fee=10**15)
    x.fulfill(ao, rid, OUT, s)
    logs = ao.oracle.get_logs()
    names = [type(e).__name__ for e in logs]
    assert names.count("TaskSettled") == 1 and names.count("AICallbackResult") == 1
    (result,) = x.events(ao.oracle, "AICallbackResult")
    assert (result.account, result.request_id, result.invoker, result.output) == (
        ao.consumer.address,
        rid,
        ao.w.oracle,
        OUT,
    )
    (delivered,) = x.events(ao.oracle, "CallbackDelivered")
    assert delivered.success and delivered.settled
    assert (ao.consumer.calls(), ao.consumer.last_id(), ao.consumer.last_output(), ao.consumer.last_data()) == (
        1,
        rid,
        OUT,
        b"ctx",
    )
    assert ao.escrow.task(rid)[7] == h.SETTLED
    assert ao.oracle.is_finalized(rid) and ao.oracle.request(rid).state == x.FINAL
    # the callback reserve pays the deliverer; the escrow's refund the requester
    assert ao.oracle.balance_of(ao.w.oracle) == x.GAS_LIMIT * x.GAS_PRICE
    assert ao.oracle.balance_of(ao.w.requester) > 0
    assert ao.escrow.balance_of(ao.w.agents[0].address) == 10**15
    x.assert_conserved(ao, [rid])
    with boa.reverts("aioracle: not awaiting a result"):
        x.fulfill(ao, rid, OUT, s)
    assert ao.consumer.calls() == 1


def test_fulfill__settlement_with_datasets_and_slashes__reaches_the_escrow_as_posted(ao):
    x.set_window(ao, 0)
    rid = x.request(ao)
    s = x.settlement_for(
        ao,
        rid,
        OUT,
        agents=[ao.w.agents[0]],
        agent_fee=10**15,
        slashed=[ao.w.agents[1]],
        dataset_ids=[1, 2],
        weights=[2500, 7500],
    )
    stake = ao.escrow.agent(ao.w.agents[1].address)[0]
    x.fulfill(ao, rid, OUT, s)
    logs = ao.oracle.get_logs()
    (settled,) = [e for e in logs if type(e).__name__ == "TaskSettled"]
    (slash,) = [e for e in logs if type(e).__name__ == "AgentSlashed"]
    credited = [e for e in logs if type(e).__name__ == "RoyaltyCredited"]
    assert settled.data_share == ao.escrow.task(rid)[3] * h.DATA_SHARE_BPS // h.BPS and len(credited) == 2
    assert slash.agent == ao.w.agents[1].address and slash.amount == stake * h.SLASH_BPS // h.BPS
    x.assert_conserved(ao, [rid])


@pytest.mark.parametrize("size", [1, 127, 128, 1024, 4096])
def test_request_and_fulfill__input_and_output_digests_are_their_ipfs_add_cids_at_every_varint_width(ao, size):
    x.set_window(ao, 0)
    prompt = bytes(i % 251 for i in range(size))
    rid = x.request(ao, prompt=prompt, gas_limit=1_000_000)  # room to store a 1 KiB answer
    assert ao.escrow.task(rid)[2] == x.file_digest(prompt)
    output = prompt[:1024] if size != 4096 else b""  # the empty file has its own encoding
    x.fulfill(ao, rid, output, x.settlement_for(ao, rid, output))
    assert ao.oracle.request(rid).state == x.FINAL and ao.consumer.last_output() == output


def test_fulfill__an_output_named_by_its_plain_sha256__refused(ao):
    x.set_window(ao, 0)
    rid = x.request(ao)
    s = x.settlement_for(ao, rid, OUT, result=hashlib.sha256(OUT).digest())
    with boa.reverts("aioracle: output does not match the result digest"):
        x.fulfill(ao, rid, OUT, s)


def test_fulfill__cid_output__is_accepted_for_v0_and_v1_dag_pb_cids_of_the_digest_only(ao):
    x.set_window(ao, 0)
    digest = x.file_digest(b"a long output" * 200)
    for prefix in (b"\x12\x20", b"\x01\x70\x12\x20"):
        rid = x.request(ao)
        s = x.settlement_for(ao, rid, b"", result=digest)
        x.fulfill(ao, rid, prefix + digest, s, is_cid=True)
        assert ao.consumer.last_output() == prefix + digest
        assert ao.oracle.request(rid).output_is_cid
    rid = x.request(ao)  # a raw-codec CID of the digest names other bytes than the output's
    with boa.reverts("aioracle: output does not match the result digest"):
        x.fulfill(ao, rid, b"\x01\x55\x12\x20" + digest, x.settlement_for(ao, rid, b"", result=digest), is_cid=True)


@pytest.mark.parametrize(
    "output, is_cid",
    [
        (b"\x12\x21" + b"\x00" * 32, True),
        (b"\x01\x71\x12\x20" + b"\x00" * 32, True),
        (b"\x12\x20" + b"\x00" * 31, True),
        (WRONG, False),
    ],
)
def test_fulfill__output_not_naming_the_result_digest__reverts(ao, output, is_cid):
    x.set_window(ao, 0)
    rid = x.request(ao)
    s = x.settlement_for(ao, rid, OUT)
    with boa.reverts("aioracle: output does not match the result digest"):
        x.fulfill(ao, rid, output, s, is_cid=is_cid)


def test_fulfill__not_the_oracle__reverts(ao):
    rid = x.request(ao)
    s = x.settlement_for(ao, rid, OUT)
    with boa.reverts("aioracle: caller is not the oracle"):
        x.fulfill(ao, rid, OUT, s, sender=ao.w.stranger)


def test_fulfill__bad_settlements__revert_with_their_reasons(ao):
    x.set_window(ao, 0)
    rid = x.request(ao)
    with boa.reverts("aioracle: settlement of another task"):
        x.fulfill(ao, rid, OUT, x.settlement_for(ao, rid + 1, OUT))
    three = x.settlement_for(ao, rid, OUT, agents=ao.w.agents, agent_fee=3)
    with boa.reverts("aioracle: too many agents"):
        x.fulfill(ao, rid, OUT, three)
    one_slashed = x.encode_settlement(
        h.settlement(rid, agents=ao.w.agents[:2], slashed=[ao.w.agents[2]], result=ANSWER, escrow=ao.escrow)
    )
    with boa.reverts("aioracle: too many agents"):
        x.fulfill(ao, rid, OUT, one_slashed)
    s = x.settlement_for(ao, rid, OUT)
    with boa.reverts("aioracle: settlement not canonical"):
        x.fulfill(ao, rid, OUT, (64).to_bytes(32, "big") + s[32:])
    with boa.reverts("aioracle: wrong callback data"):
        x.fulfill(ao, rid, OUT, s, data=b"other")
    bad_sig = x.encode_settlement(
        h.settlement(rid, agents=[ao.w.agents[0].address], signatures=[b"\x01" * 65], agent_fee=1, result=ANSWER)
    )
    with boa.reverts("aioracle: escrow rejected the settlement"):
        x.fulfill(ao, rid, OUT, bad_sig)
    with boa.reverts("aioracle: not awaiting a result"):
        x.fulfill(ao, 999, OUT, x.settlement_for(ao, 999, OUT))


def test_fulfill__after_the_response_window__reverts(ao):
    rid = x.request(ao)
    boa.env.time_travel(seconds=x.RESPONSE_WINDOW + 1)
    with boa.reverts("aioracle: response window closed"):
        x.fulfill(ao, rid, OUT, x.settlement_for(ao, rid, OUT))


# -------------------------------------------------- the challenge window


def test_fulfill__with_a_window__holds_payouts_and_the_callback_until_finalize(ao):
    rid, s = provisional(ao, output=OUT)
    (posted,) = x.events(ao.oracle, "ResultPosted")
    assert (posted.output, posted.result_digest, posted.settlement_hash) == (OUT, ANSWER, keccak(s))
    assert posted.final_at == boa.env.timestamp + 600
    assert ao.consumer.calls() == 0 and ao.escrow.task(rid)[7] == h.OPEN
    assert ao.escrow.balance_of(ao.w.agents[0].address) == 0
    assert ao.oracle.request(rid).state == x.PROVISIONAL and ao.oracle.settlement_hash(rid) == keccak(s)
    with boa.reverts("aioracle: challenge window open"):
        x.finalize(ao, rid, OUT, s)
    boa.env.time_travel(seconds=600)
    x.finalize(ao, rid, OUT, s)
    assert ao.consumer.calls() == 1 and ao.consumer.last_output() == OUT
    assert ao.escrow.task(rid)[7] == h.SETTLED
    assert ao.escrow.balance_of(ao.w.agents[0].address) == 10**15
    assert ao.oracle.balance_of(ao.w.stranger) == x.GAS_LIMIT * x.GAS_PRICE  # the finalizer brought the callback gas
    x.assert_conserved(ao, [rid])
    with boa.reverts("aioracle: no provisional result"):
        x.finalize(ao, rid, OUT, s)
    assert ao.consumer.calls() == 1


def test_finalize__wrong_settlement_output_or_callback_data__reverts(ao):
    rid, s = provisional(ao, output=OUT)
    boa.env.time_travel(seconds=600)
    other = x.settlement_for(ao, rid, OUT, agents=[ao.w.agents[1]], agent_fee=10**15)
    with boa.reverts("aioracle: wrong settlement"):
        x.finalize(ao, rid, OUT, other)
    with boa.reverts("aioracle: not the posted output"):
        x.finalize(ao, rid, WRONG, s)
    with boa.reverts("aioracle: wrong callback data"):
        x.finalize(ao, rid, OUT, s, data=b"nope")
    with boa.reverts("aioracle: no provisional result"):
        x.finalize(ao, 12345, OUT, s)


def test_finalize__settlement_the_escrow_now_rejects__refunds_the_task_and_still_delivers(ao):
    rid, s = provisional(ao, output=OUT)
    # the paid agent unbonds everything: the escrow no longer pays it
    with boa.env.prank(ao.w.agents[0].address):
        ao.escrow.request_unbond(h.MIN_STAKE)
    boa.env.time_travel(seconds=600)
    fee = ao.escrow.task(rid)[3]
    x.finalize(ao, rid, OUT, s)
    (delivered,) = x.events(ao.oracle, "CallbackDelivered")
    assert delivered.success and not delivered.settled
    assert ao.escrow.task(rid)[7] == h.REFUNDED
    assert ao.oracle.balance_of(ao.w.requester) == fee
    assert ao.consumer.calls() == 1
    x.assert_conserved(ao, [rid])


def test_set_challenge_window__publisher_only_and_bounded(ao):
    with boa.env.prank(ao.w.stranger), boa.reverts("aioracle: caller is not the publisher"):
        ao.oracle.set_challenge_window(1, 60)
    with boa.env.prank(ao.w.publisher), boa.reverts("aioracle: challenge window too long"):
        ao.oracle.set_challenge_window(1, 7 * h.DAY + 1)
    with boa.env.prank(ao.w.publisher), boa.reverts("aioracle: unknown model"):
        ao.oracle.set_challenge_window(77, 60)
    assert ao.oracle.challenge_window(1) == 600  # default
    x.set_window(ao, 0)
    assert ao.oracle.challenge_window(1) == 0
    rid = x.request(ao)
    x.set_window(ao, 3600)  # open requests keep theirs
    assert ao.oracle.request(rid).challenge_window == 0


# ------------------------------------------------------------ callbacks


@pytest.mark.parametrize("mode", [1, 2, 4], ids=["reverts", "burns-all-gas", "returndata-bomb"])
def test_deliver__failing_callback__blocks_neither_its_settlement_nor_other_requests(ao, mode):
    x.set_window(ao, 0)
    ao.consumer.set_mode(mode, b"")
    rid = x.request(ao)
    s = x.settlement_for(ao, rid, OUT, agents=[ao.w.agents[0]], agent_fee=10**15)
    x.fulfill(ao, rid, OUT, s, gas=3_000_000)
    (delivered,) = x.events(ao.oracle, "CallbackDelivered")
    assert not delivered.success and delivered.settled
    assert ao.escrow.task(rid)[7] == h.SETTLED and ao.oracle.is_finalized(rid)
    assert ao.escrow.balance_of(ao.w.agents[0].address) == 10**15
    # the next request goes through as usual
    ao.consumer.set_mode(0, b"")
    rid2 = x.request(ao)
    x.fulfill(ao, rid2, OUT, x.settlement_for(ao, rid2, OUT))
    assert ao.consumer.calls() == 1 and ao.consumer.last_id() == rid2
    with boa.reverts("aioracle: not awaiting a result"):  # no second delivery of the failed one
        x.fulfill(ao, rid, OUT, s)
    x.assert_conserved(ao, [rid, rid2])


def test_deliver__returndata_bomb__costs_the_fulfiller_no_more_than_a_plain_revert(ao):
    x.set_window(ao, 0)
    used = {}
    for mode in (1, 4):
        with boa.env.anchor():
            ao.consumer.set_mode(mode, b"")
            rid = x.request(ao)
            x.fulfill(ao, rid, OUT, x.settlement_for(ao, rid, OUT))
            used[mode] = ao.oracle._computation.get_gas_used()
    # the bomb's memory is the callee's own gas (<= gas_limit); nothing is copied back
    assert used[4] - used[1] < x.GAS_LIMIT


def test_deliver__reentrant_callback__is_locked_out_and_the_reentered_call_works_afterwards(ao):
    # request A provisional and finalizable; request B (window 0) reenters finalize(A) from its callback
    rid_a, s_a = provisional(ao, output=OUT)
    boa.env.time_travel(seconds=600)
    reentry = ao.oracle.finalize.prepare_calldata(rid_a, OUT, s_a, b"ctx")
    x.set_window(ao, 0)
    rid_b = x.request(ao)
    ao.consumer.set_mode(3, reentry)
    x.fulfill(ao, rid_b, OUT, x.settlement_for(ao, rid_b, OUT), gas=3_000_000)
    assert ao.consumer.calls() == 1 and ao.consumer.last_id() == rid_b
    assert not ao.consumer.reentry_ok()  # the lock refused finalize(A)
    assert ao.oracle.request(rid_a).state == x.PROVISIONAL
    ao.consumer.set_mode(0, b"")
    x.finalize(ao, rid_a, OUT, s_a)
    assert ao.consumer.calls() == 2 and ao.oracle.is_finalized(rid_a)
    x.assert_conserved(ao, [rid_a, rid_b])


def test_deliver__callback_may_chain_a_new_request(ao):
    x.set_window(ao, 0)
    ao.consumer.set_mode(5, b"")
    rid = x.request(ao, gas_limit=1_000_000)
    x.fulfill(ao, rid, OUT, x.settlement_for(ao, rid, OUT), gas=3_000_000)
    (delivered,) = x.events(ao.oracle, "CallbackDelivered")
    chained = ao.consumer.chained_id()
    assert delivered.success and chained == rid + 1
    assert ao.oracle.request(chained).state == x.REQUESTED
    x.assert_conserved(ao, [rid, chained])


def test_deliver__callback_gets_exactly_gas_limit__and_less_gas_reverts_the_delivery(ao):
    """The 63/64 rule: a deliverer who brings too little gas cannot short the
    callback; the delivery reverts whole and can be retried with more."""
    x.set_window(ao, 0)
    ao.consumer.set_mode(0, b"")
    rid = x.request(ao, gas_limit=x.GAS_LIMIT)
    s = x.settlement_for(ao, rid, OUT)

    def attempt(gas):
        with boa.env.anchor():
            try:
                x.fulfill(ao, rid, OUT, s, gas=gas)
            except boa.BoaError as e:
                return False, str(e)
            return True, ao.consumer.gas_at_entry()

    lo, hi = 50_000, 2_000_000
    assert attempt(hi)[0] and not attempt(lo)[0]
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if attempt(mid)[0]:
            hi = mid
        else:
            lo = mid
    ok, seen = attempt(hi)
    assert ok
    # at the least gas that works, the callback still starts with (nearly) all of
    # gas_limit: what it lacks is its own dispatch and calldata copying
    assert x.GAS_LIMIT - 1_500 <= seen <= x.GAS_LIMIT
    failed, why = attempt(lo)
    assert not failed and "aioracle: not enough gas for the callback" in why
    x.ao_gas_bound = hi  # reported by the gas test


def test_deliver__gas_hungry_callback__uses_at_most_gas_limit(ao):
    x.set_window(ao, 0)
    used = {}
    for mode in (0, 2):
        with boa.env.anchor():
            ao.consumer.set_mode(mode, b"")
            rid = x.request(ao)
            x.fulfill(ao, rid, OUT, x.settlement_for(ao, rid, OUT), gas=3_000_000)
            used[mode] = ao.oracle._computation.get_gas_used()
    assert used[2] - used[0] <= x.GAS_LIMIT


# ------------------------------------------------------------ challenges


def test_challenge__draws_distinct_serving_candidates_never_the_challenger(ao):
    rid, _s = provisional(ao)
    challenger = ao.members[0]
    cands = challenge(ao, rid, challenger=challenger.address)
    assert len(cands) == 3 + 1  # committee + one original agent
    assert len(set(cands)) == 4 and challenger.address not in cands
    assert all(ao.escrow.serves_model(c, 1) for c in cands)
    r = ao.oracle.request(rid)
    assert (r.state, r.challenger, r.bond) == (x.CHALLENGED, challenger.address, x.CHALLENGE_BOND)
    assert r.due == min(boa.env.timestamp + x.COMMITTEE_WINDOW, r.escrow_deadline - h.DAY)
    assert len(committee_of(ao, cands)) == 3
    x.assert_conserved(ao, [rid])


def test_challenge__bad_challenges__revert_with_their_reasons_and_hold_nothing(ao):
    rid, s = provisional(ao)
    with boa.env.prank(ao.w.stranger), boa.reverts("aioracle: bond below minimum"):
        ao.oracle.challenge(rid, value=x.CHALLENGE_BOND - 1)
    with boa.env.prank(ao.w.stranger), boa.reverts("aioracle: no provisional result"):
        ao.oracle.challenge(rid + 1, value=x.CHALLENGE_BOND)
    challenge(ao, rid)
    with boa.env.prank(ao.w.requester), boa.reverts("aioracle: already challenged"):
        ao.oracle.challenge(rid, value=x.CHALLENGE_BOND)
    boa.env.time_travel(seconds=600)
    with boa.reverts("aioracle: challenged"):  # a challenged result waits for resolve
        x.finalize(ao, rid, WRONG, s)
    boa.env.set_balance(ao.w.stranger, 2**97)
    with boa.env.prank(ao.w.stranger), boa.reverts("aioracle: bond too large"):
        ao.oracle.challenge(provisional(ao)[0], value=2**96)
    rid2, _ = provisional(ao)
    boa.env.time_travel(seconds=600)
    before = boa.env.get_balance(ao.oracle.address)
    with boa.env.prank(ao.w.stranger), boa.reverts("aioracle: challenge window closed"):
        ao.oracle.challenge(rid2, value=x.CHALLENGE_BOND)
    assert boa.env.get_balance(ao.oracle.address) == before


def test_challenge__roster_too_small__reverts(ao):
    rid, _s = provisional(ao)
    for m in ao.members[:3]:
        with boa.env.prank(m.address):
            ao.committee.leave(1)
    with boa.env.prank(ao.w.stranger), boa.reverts("aioracle: too few committee members"):
        ao.oracle.challenge(rid, value=x.CHALLENGE_BOND)


def test_resolve__upheld__bond_goes_half_to_the_agents_half_to_the_committee(ao):
    rid, s = provisional(ao, output=OUT)
    cands = challenge(ao, rid)
    members = committee_of(ao, cands)
    verdicts = [x.verdict(ao, m, rid, ANSWER) for m in members[:2]]
    logs = resolve(ao, rid, cands, s, verdicts, OUT)
    (res,) = [e for e in logs if type(e).__name__ == "ChallengeResolved"]
    assert (res.outcome, res.result_digest, res.to_challenger) == (x.UPHELD, ANSWER, 0)
    assert ao.oracle.balance_of(ao.w.agents[0].address) == x.CHALLENGE_BOND // 2
    assert [ao.oracle.balance_of(m.address) for m in members] == [x.CHALLENGE_BOND // 4, x.CHALLENGE_BOND // 4, 0]
    assert ao.oracle.balance_of(ao.w.stranger) == x.GAS_LIMIT * x.GAS_PRICE  # the resolver delivered
    assert ao.escrow.task(rid)[7] == h.SETTLED and ao.escrow.balance_of(ao.w.agents[0].address) == 10**15
    assert ao.consumer.calls() == 1 and ao.consumer.last_output() == OUT
    x.assert_conserved(ao, [rid])


def test_resolve__overturned__slashes_the_original_agent_pays_the_committee_and_rewards_the_challenger(ao):
    rid, s = provisional(ao, output=WRONG)
    cands = challenge(ao, rid)
    members = committee_of(ao, cands)
    stake_before = ao.escrow.agent(ao.w.agents[0].address)[0]
    verdicts = [x.verdict(ao, m, rid, ANSWER) for m in members]
    logs = resolve(ao, rid, cands, s, verdicts, OUT)
    (slash,) = [e for e in logs if type(e).__name__ == "AgentSlashed"]
    (settled,) = [e for e in logs if type(e).__name__ == "TaskSettled"]
    (res,) = [e for e in logs if type(e).__name__ == "ChallengeResolved"]
    assert slash.agent == ao.w.agents[0].address and slash.amount == stake_before * h.SLASH_BPS // h.BPS
    assert settled.result_digest == ANSWER and list(settled.agents) == [m.address for m in members]
    each = settled.agent_fee // 3
    assert [ao.escrow.balance_of(m.address) for m in members] == [each] * 3
    assert ao.escrow.balance_of(ao.w.agents[0].address) == 0  # never paid for the wrong answer
    fee = ao.escrow.task(rid)[3]
    reward = min(slash.amount // 2, fee)
    assert res.outcome == x.OVERTURNED and res.to_challenger == x.CHALLENGE_BOND + reward
    assert ao.oracle.balance_of(ao.w.stranger) == x.CHALLENGE_BOND + reward + x.GAS_LIMIT * x.GAS_PRICE
    assert ao.consumer.calls() == 1 and ao.consumer.last_output() == OUT
    x.assert_conserved(ao, [rid])


def test_resolve__overturned_to_a_cid__marks_the_output_as_a_cid(ao):
    rid, s = provisional(ao, output=WRONG)
    cands = challenge(ao, rid)
    digest = x.file_digest(b"long" * 500)
    verdicts = [x.verdict(ao, m, rid, digest) for m in committee_of(ao, cands)[:2]]
    with boa.reverts("aioracle: only the oracle delivers a CID"):  # anyone else must bring the bytes
        resolve(ao, rid, cands, s, verdicts, b"\x12\x20" + digest, is_cid=True)
    resolve(ao, rid, cands, s, verdicts, b"\x12\x20" + digest, is_cid=True, sender=ao.w.oracle)
    assert ao.oracle.request(rid).output_is_cid and ao.consumer.last_output() == b"\x12\x20" + digest


def test_finalize_and_resolve__the_posted_output_in_another_form__refused(ao):
    digest = x.file_digest(OUT)
    rid, s = provisional(ao, output=OUT)
    boa.env.time_travel(seconds=601)
    with boa.reverts("aioracle: not the posted output"):  # its CID names the same digest
        x.finalize(ao, rid, b"\x12\x20" + digest, s)
    rid, s = provisional(ao, output=OUT)
    cands = challenge(ao, rid)
    upheld = [x.verdict(ao, m, rid, ANSWER) for m in committee_of(ao, cands)[:2]]
    with boa.reverts("aioracle: not the posted output"):
        resolve(ao, rid, cands, s, upheld, b"\x12\x20" + digest)
    resolve(ao, rid, cands, s, upheld, OUT)
    assert ao.consumer.last_output() == OUT


def test_resolve__verdicts_posted_on_chain__count_even_when_resolve_leaves_them_out(ao):
    rid, s = provisional(ao, output=WRONG)
    cands = challenge(ao, rid)
    members = committee_of(ao, cands)
    for m in members[:2]:  # the committee overturns on-chain, before the deadline
        v = x.verdict(ao, m, rid, ANSWER)
        ao.committee.post_verdict(rid, v[1], v[2])
    boa.env.time_travel(seconds=x.COMMITTEE_WINDOW + 1)
    resolve(ao, rid, cands, s, [], OUT)  # a resolver bringing no verdicts cannot make it NO_QUORUM
    (ev,) = [e for e in x.events(ao.oracle, "ChallengeResolved")]
    assert ev.outcome == x.OVERTURNED and ao.consumer.last_output() == OUT
    assert not any(ao.committee.silent(rid, m.address) for m in members[:2]) and ao.committee.silent(
        rid, members[2].address
    )


def test_committee__prune__a_member_below_the_deposit__anyone(ao):
    rid, members, deadline = quorum_upholds(ao)
    silent = members[2].address
    boa.env.time_travel(seconds=deadline - boa.env.timestamp + 1)
    with boa.env.prank(ao.w.stranger):
        ao.committee.penalize(rid, silent)
        ao.committee.prune(1, silent)
    assert silent not in ao.committee.roster(1)
    with boa.env.prank(ao.w.stranger), boa.reverts("committee: agent still serves the model"):
        ao.committee.prune(1, members[0].address)


def test_resolve__no_quorum__waits_for_the_deadline_then_returns_the_bond(ao):
    rid, s = provisional(ao, output=OUT)
    cands = challenge(ao, rid)
    members = committee_of(ao, cands)
    split = [x.verdict(ao, members[0], rid, ANSWER), x.verdict(ao, members[1], rid, x.file_digest(b"other"))]
    with boa.env.prank(ao.w.stranger), boa.reverts("aioracle: no quorum yet"):
        ao.oracle.resolve(rid, cands, s, split, OUT, False, b"ctx")
    boa.env.time_travel(seconds=x.COMMITTEE_WINDOW + 1)
    logs = resolve(ao, rid, cands, s, split, OUT)
    (res,) = [e for e in logs if type(e).__name__ == "ChallengeResolved"]
    assert (res.outcome, res.to_challenger) == (x.NO_QUORUM, x.CHALLENGE_BOND)
    assert ao.consumer.last_output() == OUT and ao.escrow.task(rid)[7] == h.SETTLED
    x.assert_conserved(ao, [rid])


def test_resolve__no_answer_at_all_by_the_deadline__posted_result_stands(ao):
    rid, s = provisional(ao, output=OUT)
    cands = challenge(ao, rid)
    boa.env.time_travel(seconds=x.COMMITTEE_WINDOW + 1)
    resolve(ao, rid, cands, s, [], OUT)
    assert ao.oracle.balance_of(ao.w.stranger) == x.CHALLENGE_BOND + x.GAS_LIMIT * x.GAS_PRICE
    assert ao.oracle.is_finalized(rid)


SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141


def malleable(sig: bytes) -> bytes:
    """The same signature with high s (recovers to the same signer; refused)."""
    r, s_, v = sig[:32], int.from_bytes(sig[32:64], "big"), sig[64]
    return r + (SECP256K1_N - s_).to_bytes(32, "big") + bytes([55 - v])


def test_resolve__bad_resolutions__revert_with_their_reasons(ao):
    rid, s = provisional(ao, output=WRONG)
    with boa.env.prank(ao.w.stranger), boa.reverts("aioracle: not challenged"):
        ao.oracle.resolve(rid, [], s, [], OUT, False, b"ctx")
    cands = challenge(ao, rid)
    members = committee_of(ao, cands)
    good = [x.verdict(ao, m, rid, ANSWER) for m in members[:2]]
    cases = [
        (dict(candidates=cands[::-1]), "aioracle: wrong candidates"),
        (dict(s=x.settlement_for(ao, rid, OUT)), "aioracle: wrong settlement"),
        (dict(data=b"x"), "aioracle: wrong callback data"),
        (dict(verdicts=[x.verdict(ao, ao.w.agents[0], rid, ANSWER), *good[:1]]), "committee: not a committee member"),
        (dict(verdicts=[good[0], good[0]]), "committee: duplicate verdict"),
        (
            dict(verdicts=[(members[0].address, ANSWER, h.sign_result(members[1], ao.escrow, rid, ANSWER)), good[1]]),
            "committee: bad verdict signature",
        ),
        (
            dict(
                verdicts=[(members[0].address, ANSWER, h.sign_result(members[0], ao.escrow, rid + 1, ANSWER)), good[1]]
            ),
            "committee: bad verdict signature",
        ),
        (
            dict(verdicts=[(members[0].address, ANSWER, malleable(good[0][2])), good[1]]),
            "committee: bad verdict signature",
        ),
        (dict(output=WRONG), "aioracle: output does not match the result digest"),
    ]
    for change, reason in cases:
        args = dict(candidates=cands, s=s, verdicts=good, output=OUT, data=b"ctx") | change
        with boa.env.prank(ao.w.stranger), boa.reverts(reason):
            ao.oracle.resolve(rid, args["candidates"], args["s"], args["verdicts"], args["output"], False, args["data"])
    resolve(ao, rid, cands, s, good, OUT)
    with boa.env.prank(ao.w.stranger), boa.reverts("aioracle: not challenged"):
        ao.oracle.resolve(rid, cands, s, good, OUT, False, b"ctx")
    with boa.env.prank(ao.w.stranger), boa.reverts("aioracle: no provisional result"):
        ao.oracle.challenge(rid, value=x.CHALLENGE_BOND)


def test_resolve__committee_excludes_the_original_agents_even_when_drawn(ao):
    # every roster member but three is also an original agent: the committee is the other three
    for a in ao.w.agents[:2]:
        x.join(ao.committee, a.address)
    rid, _s = provisional(ao, output=WRONG, agents=ao.w.agents[:2])
    cands = challenge(ao, rid)
    originals = [a.address for a in ao.w.agents[:2]]
    committee = ao.committee.committee_of(cands, originals)
    assert len(cands) == 5 and len(committee) == 3 and not set(committee) & set(originals)


# --------------------------------------------------------------- expiry


def test_expire__unanswered_request__refunds_fee_and_reserve_to_the_refund_address(ao):
    rid = x.request(ao)
    with boa.env.prank(ao.w.stranger), boa.reverts("aioracle: not expired"):
        ao.oracle.expire(rid)
    boa.env.time_travel(seconds=x.RESPONSE_WINDOW + 1)
    fee = ao.escrow.task(rid)[3]
    with boa.env.prank(ao.w.stranger):
        ao.oracle.expire(rid)
    (failed,) = x.events(ao.oracle, "TaskFailed")
    assert failed.reason == "aioracle: request ended without a final settlement"
    assert ao.escrow.task(rid)[7] == h.REFUNDED
    assert ao.oracle.balance_of(ao.w.requester) == fee + x.GAS_LIMIT * x.GAS_PRICE
    assert ao.oracle.request(rid).state == x.EXPIRED and ao.consumer.calls() == 0
    x.assert_conserved(ao, [rid])
    with boa.env.prank(ao.w.stranger), boa.reverts("aioracle: request closed"):
        ao.oracle.expire(rid)
    with boa.env.prank(ao.w.stranger), boa.reverts("aioracle: unknown request"):
        ao.oracle.expire(999)
    # and the requester pulls it (the oracle withdraws its escrow credit on the way)
    before = boa.env.get_balance(ao.w.requester)
    with boa.env.prank(ao.w.requester):
        ao.oracle.withdraw()
    assert boa.env.get_balance(ao.w.requester) - before == fee + x.GAS_LIMIT * x.GAS_PRICE


def test_escrow__another_oracle_key__can_neither_settle_nor_fail_a_request_only_its_aioracle_ends(ao):
    # Else one oracle key would decide a contract's answer alone, skipping the window and the committee.
    rid = x.request(ao)
    s = h.settlement(rid, agents=[], agent_fee=0, result=ANSWER, escrow=ao.escrow)
    with boa.env.prank(ao.w.oracle):
        with boa.reverts("escrow: only its requesting oracle ends this task"):
            ao.escrow.settle(s)
        with boa.reverts("escrow: only its requesting oracle ends this task"):
            ao.escrow.fail_task(rid, "agents gone", [])
        assert ao.escrow.settle_batch([s]) == [False]
    assert ao.escrow.task(rid)[7] == h.OPEN
    x.fulfill(ao, rid, OUT, x.settlement_for(ao, rid, OUT))  # AIOracle itself still can
    x.assert_conserved(ao, [rid])


def test_expire__task_refunded_in_the_escrow_by_someone_else__still_credits_the_fee(ao):
    rid = x.request(ao)
    boa.env.time_travel(seconds=ao.oracle.request(rid).escrow_deadline - boa.env.timestamp + 1)
    ao.escrow.refund(rid)  # anyone may, past the escrow deadline
    fee = ao.escrow.task(rid)[3]
    with boa.env.prank(ao.w.stranger):
        ao.oracle.expire(rid)
    assert ao.oracle.balance_of(ao.w.requester) == fee + x.GAS_LIMIT * x.GAS_PRICE
    x.assert_conserved(ao, [rid])


def test_expire__provisional_or_challenged_past_the_escrow_deadline__returns_everything(ao):
    rid, _s = provisional(ao, output=OUT)
    rid2, _s2 = provisional(ao, output=OUT)
    challenge(ao, rid2, challenger=ao.w.requester)
    deadline = ao.oracle.request(rid).escrow_deadline
    with boa.env.prank(ao.w.stranger), boa.reverts("aioracle: not expired"):
        ao.oracle.expire(rid)
    boa.env.time_travel(seconds=deadline - boa.env.timestamp + 1)
    fee = ao.escrow.task(rid)[3]
    with boa.env.prank(ao.w.stranger):
        ao.oracle.expire(rid)
        ao.oracle.expire(rid2)
    reserve = x.GAS_LIMIT * x.GAS_PRICE
    assert ao.oracle.balance_of(ao.w.requester) == 2 * (fee + reserve) + x.CHALLENGE_BOND
    assert ao.consumer.calls() == 0
    x.assert_conserved(ao, [rid, rid2])


def test_finalize__past_the_escrow_deadline__delivers_and_refunds_the_whole_fee(ao):
    rid, s = provisional(ao, output=OUT)
    boa.env.time_travel(seconds=ao.oracle.request(rid).escrow_deadline - boa.env.timestamp + 1)
    fee = ao.escrow.task(rid)[3]
    x.finalize(ao, rid, OUT, s)
    assert ao.consumer.calls() == 1 and ao.escrow.task(rid)[7] == h.REFUNDED
    assert ao.oracle.balance_of(ao.w.requester) == fee
    x.assert_conserved(ao, [rid])


# ----------------------------------------------------- money and access


def test_withdraw__nothing_credited__reverts_and_withdraw_for_pushes(ao):
    with boa.env.prank(ao.w.stranger), boa.reverts("aioracle: nothing to withdraw"):
        ao.oracle.withdraw()
    rid = x.request(ao, extra=777)
    before = boa.env.get_balance(ao.w.requester)
    with boa.env.prank(ao.w.stranger):
        assert ao.oracle.withdraw_for(ao.w.requester) == 777
    assert boa.env.get_balance(ao.w.requester) - before == 777
    x.assert_conserved(ao, [rid])


def test_withdraw__to_an_account_that_refuses_eth__reverts_and_keeps_the_credit(ao):
    refuser = ao.committee.address  # a contract without a payable default
    with boa.env.prank(ao.w.requester):
        ao.oracle.set_payee(refuser)
        ao.oracle.request_callback(1, b"q", ao.consumer.address, 1, b"", value=ao.oracle.estimate_fee(1, 1) + 10)
    assert ao.oracle.balance_of(refuser) == 10
    with boa.env.prank(ao.w.stranger), boa.reverts("aioracle: transfer failed"):
        ao.oracle.withdraw_for(refuser)
    assert ao.oracle.balance_of(refuser) == 10


def test_default__only_the_escrow_may_send_eth(ao):
    with pytest.raises(Exception, match="aioracle: only the escrow pays in"):
        boa.env.raw_call(ao.oracle.address, sender=ao.w.stranger, value=1)


def test_sweep__owner_only_and_never_touches_what_is_owed(ao):
    rid = x.request(ao, extra=5)
    with boa.env.prank(ao.w.owner), boa.reverts("aioracle: nothing to sweep"):
        ao.oracle.sweep(ao.w.treasury)
    # ETH forced in (e.g. a selfdestruct) while a request is open: held back,
    # since an open request's fee may already sit in the oracle's escrow credit
    boa.env.set_balance(ao.oracle.address, boa.env.get_balance(ao.oracle.address) + 999)
    assert ao.oracle.surplus() == 0
    boa.env.time_travel(seconds=x.RESPONSE_WINDOW + 1)
    with boa.env.prank(ao.w.stranger):
        ao.oracle.expire(rid)
    assert ao.oracle.surplus() == 999
    with boa.env.prank(ao.w.stranger), boa.reverts("ownable: caller is not the owner"):
        ao.oracle.sweep(ao.w.stranger)
    with boa.env.prank(ao.w.owner):
        assert ao.oracle.sweep(ao.w.treasury) == 999
    x.assert_conserved(ao, [rid])


def test_set_params__owner_only_bounded_and_applies_to_new_requests(ao):
    with boa.env.prank(ao.w.stranger), boa.reverts("ownable: caller is not the owner"):
        ao.oracle.set_params(1, 1, 1, 1, 1)
    cases = [
        ((2**96 // 5_000_000 + 1, 0, 0, 1, 1), "aioracle: gas price too high"),
        ((0, 2**96, 0, 1, 1), "aioracle: agent fee too large"),
        ((0, 0, 2**96, 1, 1), "aioracle: bond too large"),
        ((0, 0, 0, 0, 1), "aioracle: response window out of range"),
        ((0, 0, 0, 7 * h.DAY + 1, 1), "aioracle: response window out of range"),
        ((0, 0, 0, 1, 0), "aioracle: committee window out of range"),
        ((0, 0, 0, 1, 7 * h.DAY + 1), "aioracle: committee window out of range"),
    ]
    for args, reason in cases:
        with boa.env.prank(ao.w.owner), boa.reverts(reason):
            ao.oracle.set_params(*args)
    rid = x.request(ao)
    with boa.env.prank(ao.w.owner):
        ao.oracle.set_params(2 * x.GAS_PRICE, 0, 1, 60, 60)
    (ev,) = x.events(ao.oracle, "ParamsSet")
    assert (ev.gas_price, ev.agent_fee, ev.challenge_bond, ev.response_window, ev.committee_window) == (
        2 * x.GAS_PRICE,
        0,
        1,
        60,
        60,
    )
    assert ao.oracle.request(rid).reserve == x.GAS_LIMIT * x.GAS_PRICE
    assert ao.oracle.estimate_fee(1, 10) == ao.oracle.estimate_fee(1, 0) + 20 * x.GAS_PRICE


def test_deploy__zero_escrow_or_a_committee_of_another_escrow__reverts(ao):
    other = h.deploy_system()
    other_committee = h.partial("AICommittee").deploy(other.escrow.address, x.MEMBER_DEPOSIT)
    with boa.reverts("aioracle: committee of another escrow"):
        h.partial("AIOracle").deploy(ao.escrow.address, other_committee.address, 1, 1, 1, 1, 1)
    with boa.reverts("committee: zero escrow"):
        h.partial("AICommittee").deploy(h.ZERO_ADDRESS, x.MEMBER_DEPOSIT)
    with boa.reverts("aioracle: zero escrow"):
        h.partial("AIOracle").deploy(h.ZERO_ADDRESS, other_committee.address, 1, 1, 1, 1, 1)


def test_ownership__transfer_and_renounce_are_owner_only(ao):
    with boa.env.prank(ao.w.stranger), boa.reverts("ownable: caller is not the owner"):
        ao.oracle.transfer_ownership(ao.w.stranger)
    with boa.env.prank(ao.w.stranger), boa.reverts("ownable: caller is not the owner"):
        ao.oracle.renounce_ownership()


# -------------------------------------------------------------- rosters


def test_committee_roster__join_leave_prune(ao):
    outsider = ao.w.outsider
    with boa.env.prank(outsider.address), boa.reverts("committee: not an agent serving the model"):
        ao.committee.join(1, value=x.MEMBER_DEPOSIT)
    m = ao.members[0]
    with boa.env.prank(m.address), boa.reverts("committee: already on the roster"):
        ao.committee.join(1, value=x.MEMBER_DEPOSIT)
    with boa.env.prank(ao.w.stranger), boa.reverts("committee: agent still serves the model"):
        ao.committee.prune(1, m.address)
    with boa.env.prank(m.address):
        ao.escrow.request_unbond(h.MIN_STAKE)
    with boa.env.prank(ao.w.stranger):
        ao.committee.prune(1, m.address)
    assert m.address not in ao.committee.roster(1) and len(ao.committee.roster(1)) == len(ao.members) - 1
    with boa.env.prank(m.address), boa.reverts("committee: not on the roster"):
        ao.committee.leave(1)
    last = ao.members[-1]
    with boa.env.prank(ao.members[1].address):
        ao.committee.leave(1)
    assert ao.committee.roster(1)[-1] != ao.members[1].address and last.address in ao.committee.roster(1)


def test_committee_roster__is_capped_at_64(ao):
    for _ in range(64 - len(ao.members)):
        a = h.new_account()
        h.register_agent(ao.escrow, a)
        x.join(ao.committee, a.address)
    a = h.new_account()
    h.register_agent(ao.escrow, a)
    with boa.env.prank(a.address), boa.reverts("committee: roster full"):
        ao.committee.join(1, value=x.MEMBER_DEPOSIT)


# ---------------------------------------------------- committee deposits


def assert_committee_conserved(ao):
    c = ao.committee
    assert boa.env.get_balance(c.address) == c.total_deposits() + c.total_credits()


def quorum_upholds(ao):
    """A challenged request upheld by two of its three members; returns (rid, members, deadline)."""
    rid, s = provisional(ao, output=OUT)
    cands = challenge(ao, rid)
    members = committee_of(ao, cands)
    resolve(ao, rid, cands, s, [x.verdict(ao, m, rid, ANSWER) for m in members[:2]], OUT)
    return rid, members, ao.committee.deadline_of(rid)


def test_committee__join_without_the_deposit__refused(ao):
    a = h.new_account()
    h.register_agent(ao.escrow, a)
    with boa.env.prank(a.address), boa.reverts("committee: deposit below minimum"):
        ao.committee.join(1, value=x.MEMBER_DEPOSIT - 1)
    assert a.address not in ao.committee.roster(1) and ao.committee.deposit_of(a.address) == 0
    assert_committee_conserved(ao)


def test_committee__draw_tally_and_bind__only_the_bound_oracle_or_deployer(ao):
    with boa.env.prank(ao.w.stranger), boa.reverts("committee: caller is not the AIOracle"):
        ao.committee.draw(1, 1, 3, ao.w.stranger, 10**10, 10**10)
    with boa.env.prank(ao.w.stranger), boa.reverts("committee: caller is not the AIOracle"):
        ao.committee.tally(1, [], b"", [])
    with boa.env.prank(ao.w.stranger), boa.reverts("committee: caller is not the deployer"):
        ao.committee.bind(ao.oracle.address)
    with boa.env.prank(ao.w.owner), boa.reverts("committee: already bound"):
        ao.committee.bind(ao.oracle.address)


def test_committee__a_silent_member__loses_half_its_deposit_to_the_treasury_after_the_deadline(ao):
    rid, members, deadline = quorum_upholds(ao)
    silent = members[2].address
    assert ao.committee.silent(rid, silent) and not any(ao.committee.silent(rid, m.address) for m in members[:2])
    with boa.env.prank(ao.w.stranger), boa.reverts("committee: committee deadline not passed"):
        ao.committee.penalize(rid, silent)
    boa.env.time_travel(seconds=deadline - boa.env.timestamp + 1)
    with boa.env.prank(ao.w.stranger), boa.reverts("committee: no silence recorded"):
        ao.committee.penalize(rid, members[0].address)  # it answered
    with boa.env.prank(ao.w.stranger):
        ao.committee.penalize(rid, silent)
    treasury = ao.w.treasury
    assert ao.committee.deposit_of(silent) == x.MEMBER_DEPOSIT // 2 == ao.committee.credit_of(treasury)
    with boa.env.prank(ao.w.stranger), boa.reverts("committee: no silence recorded"):
        ao.committee.penalize(rid, silent)  # once
    before = boa.env.get_balance(treasury)
    with boa.env.prank(treasury):
        ao.committee.withdraw()
    assert boa.env.get_balance(treasury) - before == x.MEMBER_DEPOSIT // 2
    assert_committee_conserved(ao)
    # below the least deposit it is drawn no more, until it tops up
    for _ in range(3):
        rid2, _ = provisional(ao, output=OUT)
        assert silent not in challenge(ao, rid2)
    with boa.env.prank(silent):
        ao.committee.deposit(value=x.MEMBER_DEPOSIT // 2)
    assert ao.committee.deposit_of(silent) == x.MEMBER_DEPOSIT


def test_committee__a_member_left_out_of_resolve__proves_it_answered_by_posting_its_signature(ao):
    rid, members, deadline = quorum_upholds(ao)
    third = members[2]
    assert ao.committee.silent(rid, third.address)
    with boa.env.prank(ao.w.stranger), boa.reverts("committee: bad verdict signature"):
        ao.committee.post_verdict(rid, ANSWER, b"\x01" * 65)
    v = x.verdict(ao, third, rid, ANSWER)
    with boa.env.prank(ao.w.stranger):  # anyone may post a member's signature
        ao.committee.post_verdict(rid, v[1], v[2])
    assert ao.committee.answered(rid, third.address) and not ao.committee.silent(rid, third.address)
    boa.env.time_travel(seconds=deadline - boa.env.timestamp + 1)
    with boa.env.prank(ao.w.stranger), boa.reverts("committee: no silence recorded"):
        ao.committee.penalize(rid, third.address)
    with boa.env.prank(ao.w.stranger), boa.reverts("committee: committee deadline passed"):
        ao.committee.post_verdict(rid, v[1], v[2])
    with boa.env.prank(ao.w.stranger), boa.reverts("committee: no challenge drawn for this request"):
        ao.committee.post_verdict(rid + 100, v[1], v[2])
    assert ao.committee.deposit_of(third.address) == x.MEMBER_DEPOSIT


def test_committee__withdraw_deposit__only_off_every_roster_and_after_the_lock(ao):
    rid, members, _deadline = quorum_upholds(ao)
    m = members[0].address
    with boa.env.prank(m), boa.reverts("committee: leave every roster first"):
        ao.committee.withdraw_deposit(x.MEMBER_DEPOSIT)
    with boa.env.prank(m):
        ao.committee.leave(1)
    with boa.env.prank(m), boa.reverts("committee: deposit locked by a challenge"):
        ao.committee.withdraw_deposit(x.MEMBER_DEPOSIT)
    assert (
        ao.committee.locked_until(m) == ao.oracle.request(rid).escrow_deadline + ao.committee.DEPOSIT_LOCK()
    )  # past any late resolve
    boa.env.time_travel(seconds=ao.committee.locked_until(m) - boa.env.timestamp + 1)
    with boa.env.prank(m), boa.reverts("committee: amount above the deposit"):
        ao.committee.withdraw_deposit(x.MEMBER_DEPOSIT + 1)
    before = boa.env.get_balance(m)
    with boa.env.prank(m):
        ao.committee.withdraw_deposit(x.MEMBER_DEPOSIT)
    assert boa.env.get_balance(m) - before == x.MEMBER_DEPOSIT and ao.committee.deposit_of(m) == 0
    assert_committee_conserved(ao)


# ------------------------------------------------------------------ gas


GAS: dict = {}


def tx_gas(contract, fn_name, *args, sender, value=0, gas=None):
    """tx gas as tests/contracts/test_gas.py counts it: cold access lists,
    intrinsic gas, refunds capped at a fifth."""
    fn = getattr(contract, fn_name)
    calldata = fn.prepare_calldata(*args)
    boa.env.evm.vm.state._account_db._journal_accessed_state.clear()
    with boa.env.prank(sender):
        fn(*args, value=value, gas=gas)
    comp = contract._computation
    used = h.intrinsic_gas(calldata) + comp.get_gas_used()
    return used - min(comp.get_gas_refund(), used // 5)


def test_gas__request_fulfil_challenge_resolve(ao):
    """Gas of each step from a cold access list (run with -s for the table).
    Chainlink's Operator on Anvil: request 126,376, fulfilment 45,590."""
    w = ao.w
    prompt = b"What is the capital of France? Answer in one word."
    fee = ao.oracle.estimate_fee(1, 100_000)

    def post():
        with boa.env.prank(w.requester):
            return ao.oracle.request_callback(1, prompt, ao.consumer.address, 100_000, b"ctx", value=fee)

    def paid(rid, output=b"Paris"):
        return x.settlement_for(ao, rid, output, agents=[w.agents[0]], agent_fee=10**15)

    # steady state: every balance and total the figures touch is non-zero
    # (one request stays open throughout; the first open request of all pays
    # ~60,000 more: the running totals here and in the escrow go 0 -> non-zero)
    x.set_window(ao, 0)
    rid = post()
    x.fulfill(ao, rid, b"Paris", paid(rid))
    post()

    GAS["gas_request_callback (50-byte input)"] = tx_gas(
        ao.oracle, "request_callback", 1, prompt, ao.consumer.address, 100_000, b"ctx", sender=w.requester, value=fee
    )
    rid = ao.escrow.task_count()
    ao.consumer.set_mode(6, b"")  # a callback that returns at once: the callback's own gas ~0
    GAS["gas_settle_with_callback (W=0, k=1; callback returns at once)"] = tx_gas(
        ao.oracle, "fulfill", rid, b"Paris", False, paid(rid), b"ctx", sender=w.oracle
    )
    ao.consumer.set_mode(0, b"")
    rid = post()
    GAS["  the same, the callback storing the answer (4 SSTOREs)"] = tx_gas(
        ao.oracle, "fulfill", rid, b"Paris", False, paid(rid), b"ctx", sender=w.oracle
    )

    tid = h.post_task(w.escrow, w.requester, fee=ao.escrow.task(rid)[3])
    h.post_task(w.escrow, w.requester)  # keeps the escrow's open total non-zero
    plain = h.settlement(tid, agents=[w.agents[0]], agent_fee=10**15, result=x.file_digest(b"Paris"), escrow=ao.escrow)
    GAS["  for comparison: escrow.settle of a plain task, same settlement"] = tx_gas(
        ao.escrow, "settle", plain, sender=w.oracle
    )
    x.set_window(ao, 600)
    ao.consumer.set_mode(6, b"")
    rid = post()
    s = paid(rid)
    GAS["fulfill (W>0: provisional, nothing paid or called)"] = tx_gas(
        ao.oracle, "fulfill", rid, b"Paris", False, s, b"ctx", sender=w.oracle
    )
    with boa.env.anchor():
        boa.env.time_travel(seconds=600)
        GAS["finalize (settle + callback returning at once)"] = tx_gas(
            ao.oracle, "finalize", rid, b"Paris", s, b"ctx", sender=w.stranger
        )
    GAS["gas_challenge (draws 4 candidates)"] = tx_gas(
        ao.oracle, "challenge", rid, sender=w.stranger, value=x.CHALLENGE_BOND
    )
    (ev,) = x.events(ao.oracle, "Challenged")
    cands = list(ev.candidates)
    members = committee_of(ao, cands)
    with boa.env.anchor():
        vs = [x.verdict(ao, m, rid, x.file_digest(b"Paris")) for m in members[:2]]
        GAS["gas_resolve (upheld, 2 verdicts, settle + callback)"] = tx_gas(
            ao.oracle, "resolve", rid, cands, s, vs, b"Paris", False, b"ctx", sender=w.stranger
        )
    vs = [x.verdict(ao, m, rid, x.file_digest(b"Lyon")) for m in members]
    GAS["gas_resolve (overturned, 3 verdicts, 1 slash, settle + callback)"] = tx_gas(
        ao.oracle, "resolve", rid, cands, s, vs, b"Lyon", False, b"ctx", sender=w.stranger
    )
    print("\n" + "\n".join(f"{k:<68} {v:>9,}" for k, v in GAS.items()))
    assert ao.oracle.is_finalized(rid) and ao.escrow.task(rid)[7] == h.SETTLED
