"""The fees of a new attempt: pure arithmetic on what the node reports and on the attempt it replaces.

EIP-1559 chains get maxFeePerGas and maxPriorityFeePerGas; chains whose blocks carry no base fee
(or a policy that forces it) get gasPrice. A replacement raises every fee by at least
`policy.bump_bps` over the attempt it replaces (a node refuses a smaller one), and no fee ever goes
above `policy.max_fee_per_gas`.
"""

from __future__ import annotations

from dataclasses import dataclass

from oracle.tx.policy import TxPolicy

# The fee fields of a transaction, as signed: {"gasPrice": …} or {"maxFeePerGas": …, "maxPriorityFeePerGas": …}.
Fees = dict[str, int]


@dataclass(frozen=True)
class Market:
    """What the node reports now: the latest block's base fee and the node's suggested tip
    (EIP-1559), or, with no base fee, its gas price."""

    base_fee: int | None = None
    priority_fee: int = 0
    gas_price: int = 0


def priced_on(base_fee: int | None, policy: TxPolicy) -> int | None:
    """The base fee EIP-1559 fees are priced on; None: a gasPrice (legacy) transaction."""
    return None if policy.legacy else base_fee


def bump(value: int, bps: int) -> int:
    """`value` raised by `bps` basis points, rounded up, and always by at least 1 wei."""
    return value + max(1, -(-value * bps // 10_000))


def next_fees(market: Market, floor: Fees | None, policy: TxPolicy) -> Fees:
    """Fees for a new attempt: the market's, and at least +bump over `floor` (the fees of the attempt
    it replaces) when bumping; capped at the policy's max fee."""
    base = priced_on(market.base_fee, policy)
    cap = policy.max_fee_per_gas
    if base is None:
        price = market.gas_price
        if floor is not None and "gasPrice" in floor:
            price = max(price, bump(floor["gasPrice"], policy.bump_bps))
        return {"gasPrice": price if cap is None else min(price, cap)}
    priority = market.priority_fee
    max_fee = 2 * base + priority  # room for the base fee to double before the tx is priced out
    if floor is not None and "maxFeePerGas" in floor:
        priority = max(priority, bump(floor.get("maxPriorityFeePerGas", 0), policy.bump_bps))
        max_fee = max(max_fee, bump(floor["maxFeePerGas"], policy.bump_bps))
    if cap is not None:
        max_fee = min(max_fee, cap)
    return {"maxFeePerGas": max_fee, "maxPriorityFeePerGas": min(priority, max_fee)}


def top_fee(fees: Fees) -> int:
    """The most an attempt pays per gas: its maxFeePerGas, or its gasPrice."""
    return fees["maxFeePerGas"] if "maxFeePerGas" in fees else fees["gasPrice"]
