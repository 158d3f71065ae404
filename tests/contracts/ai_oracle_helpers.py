"""Helpers for the AIOracle / AICommittee tests (titanoboa): deployment on top of
the TaskEscrow world of conftest.py, settlements as the ABI bytes AIOracle takes,
committee verdicts, a conservation check, and the consumer contracts written in
Vyper that the callback tests call."""

from __future__ import annotations

from dataclasses import dataclass

import boa
from eth_abi import encode

from tests.contracts import helpers as h
from tributa.store import cid_of_bytes, cid_to_digest

SETTLEMENT_T = (
    "(uint256,bytes32,bytes32,address[],bytes[],uint256,(address,bytes32,uint256,bytes)[],uint256[],uint16[])"
)

GAS_PRICE = 10**10  # 10 gwei per gas of callback gas
AGENT_FEE = 2 * 10**15
CHALLENGE_BOND = 10**16
RESPONSE_WINDOW = 3_600
COMMITTEE_WINDOW = h.DAY
GAS_LIMIT = 200_000
MEMBER_DEPOSIT = 10**16  # AICommittee's least deposit of a roster member

REQUESTED, PROVISIONAL, CHALLENGED, FINAL, EXPIRED = 1, 2, 3, 4, 5
UPHELD, OVERTURNED, NO_QUORUM = 1, 2, 3

# A consumer in the style of an OAO app. Modes: 0 stores the answer, 1 reverts,
# 2 burns all its gas, 3 reenters the oracle with `reentry` calldata, 4 reverts
# with ~200 KB of revert data (a returndata bomb), 5 stores the answer and then
# asks again from inside the callback (a chained request), 6 returns at once.
CONSUMER = """
# pragma version ~=0.4.3

interface AIOracle:
    def request_callback(model_id: uint256, input: Bytes[8192], callback: address, gas_limit: uint64, callback_data: Bytes[2048]) -> uint256: payable
    def estimate_fee(model_id: uint256, gas_limit: uint256) -> uint256: view

oracle: public(address)
mode: public(uint256)
calls: public(uint256)
last_id: public(uint256)
last_output: public(Bytes[1024])
last_data: public(Bytes[1024])
gas_at_entry: public(uint256)
reentry: public(Bytes[4096])
reentry_ok: public(bool)
chained_id: public(uint256)
junk: HashMap[uint256, uint256]


@deploy
def __init__(oracle: address):
    self.oracle = oracle


@payable
@external
def __default__():
    pass


@external
def set_mode(mode: uint256, reentry: Bytes[4096]):
    self.mode = mode
    self.reentry = reentry


@payable
@external
def ask(model_id: uint256, prompt: Bytes[4096], gas_limit: uint64, data: Bytes[1024]) -> uint256:
    return extcall AIOracle(self.oracle).request_callback(model_id, prompt, self, gas_limit, data, value=msg.value)


@external
def aiOracleCallback(request_id: uint256, output: Bytes[1024], callback_data: Bytes[1024]):
    g: uint256 = msg.gas
    assert msg.sender == self.oracle, "consumer: not the oracle"
    mode: uint256 = self.mode
    if mode == 6:
        return
    if mode == 1:
        raise "consumer: no thanks"
    if mode == 2:
        for i: uint256 in range(100000):
            self.junk[i] = i + 1
    if mode == 3:
        self.reentry_ok = raw_call(self.oracle, self.reentry, max_outsize=0, revert_on_failure=False)
    if mode == 4:
        bomb: Bytes[200000] = empty(Bytes[200000])
        raw_revert(slice(concat(bomb, b"x"), 0, 200000))
    self.calls += 1
    self.last_id = request_id
    self.last_output = output
    self.last_data = callback_data
    self.gas_at_entry = g
    if mode == 5:
        fee: uint256 = staticcall AIOracle(self.oracle).estimate_fee(1, 100000)
        self.chained_id = extcall AIOracle(self.oracle).request_callback(1, b"and then?", self, 100000, b"", value=fee)
"""


@dataclass
class AO:
    w: object  # the conftest World
    oracle: object  # AIOracle
    committee: object  # AICommittee
    consumer: object
    members: list  # LocalAccounts on model 1's roster (not among w.agents)

    @property
    def escrow(self):
        return self.w.escrow


def deploy(w, n_members: int = 5) -> AO:
    with boa.env.prank(w.owner):
        committee = h.partial("AICommittee").deploy(w.escrow.address, MEMBER_DEPOSIT)
        oracle = h.partial("AIOracle").deploy(
            w.escrow.address, committee.address, GAS_PRICE, AGENT_FEE, CHALLENGE_BOND, RESPONSE_WINDOW, COMMITTEE_WINDOW
        )
        committee.bind(oracle.address)
        w.escrow.set_oracle(oracle.address, True)
    members = [h.new_account() for _ in range(n_members)]
    for m in members:
        h.register_agent(w.escrow, m)
        join(committee, m.address)
    consumer = boa.loads(CONSUMER, oracle.address)
    boa.env.set_balance(consumer.address, 10 * h.ETHER)
    return AO(w, oracle, committee, consumer, members)


def join(committee, member: str, model_id: int = 1) -> None:
    """`member` (a registered agent of the model) joins its roster with the least deposit."""
    boa.env.set_balance(member, boa.env.get_balance(member) + MEMBER_DEPOSIT)
    with boa.env.prank(member):
        committee.join(model_id, value=MEMBER_DEPOSIT)


def file_digest(data: bytes) -> bytes:
    """The digest AIOracle names an input or output by: that of its `ipfs add` CID."""
    return cid_to_digest(cid_of_bytes(data))


def encode_settlement(s: tuple) -> bytes:
    """abi_encode(s) as AIOracle takes it (escrow.settle's calldata after the selector)."""
    return encode([SETTLEMENT_T], [s])


def settlement_for(
    ao: AO, rid: int, output: bytes, agents=(), agent_fee: int = 0, result: bytes | None = None, **kw
) -> bytes:
    """The encoded settlement of request `rid` whose result is file_digest(output), paying `agents`."""
    s = h.settlement(
        rid, agents=list(agents), agent_fee=agent_fee, result=result or file_digest(output), escrow=ao.escrow, **kw
    )
    return encode_settlement(s)


def request(
    ao: AO,
    requester: str | None = None,
    prompt: bytes = b"What is 2+2?",
    gas_limit: int = GAS_LIMIT,
    data: bytes = b"ctx",
    extra: int = 0,
    via_consumer: bool = True,
) -> int:
    """A request from the consumer contract (as `requester`'s tx) or, with via_consumer=False, from `requester` itself."""
    requester = requester or ao.w.requester
    fee = ao.oracle.estimate_fee(1, gas_limit) + extra
    with boa.env.prank(requester):
        if via_consumer:
            return ao.consumer.ask(1, prompt, gas_limit, data, value=fee)
        return ao.oracle.request_callback(1, prompt, ao.consumer.address, gas_limit, data, value=fee)


def fulfill(
    ao: AO,
    rid: int,
    output: bytes,
    settlement: bytes,
    data: bytes = b"ctx",
    is_cid: bool = False,
    sender: str | None = None,
    gas: int | None = None,
):
    with boa.env.prank(sender or ao.w.oracle):
        return ao.oracle.fulfill(rid, output, is_cid, settlement, data, gas=gas)


def finalize(
    ao: AO,
    rid: int,
    output: bytes,
    settlement: bytes,
    data: bytes = b"ctx",
    sender: str | None = None,
    gas: int | None = None,
):
    with boa.env.prank(sender or ao.w.stranger):
        return ao.oracle.finalize(rid, output, settlement, data, gas=gas)


def set_window(ao: AO, seconds: int, model_id: int = 1):
    with boa.env.prank(ao.w.publisher):
        ao.oracle.set_challenge_window(model_id, seconds)


def verdict(ao: AO, acct, rid: int, digest: bytes) -> tuple:
    return (acct.address, digest, h.sign_result(acct, ao.escrow, rid, digest))


def member(ao: AO, address: str):
    """The LocalAccount of a roster member (or original agent) by address."""
    for a in ao.members + ao.w.agents:
        if a.address.lower() == str(address).lower():
            return a
    raise KeyError(address)


def events(contract, name: str) -> list:
    return [e for e in contract.get_logs() if type(e).__name__ == name]


def held_by_oracle(ao: AO) -> int:
    """What AIOracle holds: its ETH plus its credit in the escrow."""
    return boa.env.get_balance(ao.oracle.address) + ao.escrow.balance_of(ao.oracle.address)


def assert_conserved(ao: AO, request_ids=()):
    """Every wei AIOracle holds (plus its requests' fees still inside the escrow)
    is owed: credits, reserves and bonds, and the fees of open requests."""
    in_escrow = 0
    for rid in request_ids:
        if ao.oracle.request(rid)[4] in (REQUESTED, PROVISIONAL, CHALLENGED):
            task = ao.escrow.task(rid)
            if task[7] in (h.OPEN, h.FAILED):
                in_escrow += task[3]
    owed = ao.oracle.total_credited() + ao.oracle.total_held() + ao.oracle.total_open_fees()
    assert held_by_oracle(ao) + in_escrow == owed
    # and the escrow's own invariant still holds
    e = ao.escrow
    assert boa.env.get_balance(e.address) == e.total_open_fees() + e.total_credited() + e.total_staked()
