"""Initial Model Offerings from the CLI's side: launch, buy, finalize, status, claims."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from web3 import Web3
from web3.contract import Contract

from tributa.chain.contracts import Contracts
from tributa.chain.events import first_event
from tributa.chain.result_names import with_result_names
from tributa.chain.tx import Signer, TxResult
from tributa.errors import TributaError

STATES = {1: "active", 2: "succeeded", 3: "failed"}
MAX_NAME, MAX_SYMBOL = 25, 5  # snekmate's erc20 bounds
TOKEN_UNIT = 10**18


@dataclass(frozen=True)
class ImoView:
    imo_id: int
    model_id: int
    token: str
    publisher: str
    price: int  # wei per whole token
    soft_cap: int
    hard_cap: int
    sale_end: int
    raised: int
    sold: int
    tokens_for_sale: int
    publisher_tokens: int
    vesting_start: int
    vesting_duration: int
    vested_claimed: int
    proceeds_withdrawn: bool
    state: str


@dataclass(frozen=True)
class Holder:
    address: str
    balance: int
    claimable: int


def launcher(contracts: Contracts) -> Contract:
    if contracts.launcher is None:
        raise TributaError("this deployment has no IMOLauncher; redeploy with `ape run deploy`")
    return contracts.launcher


def token_contract(contracts: Contracts, address: str) -> Contract:
    return contracts.w3.eth.contract(
        address=Web3.to_checksum_address(address),
        abi=with_result_names(contracts.deployment.abis["ModelToken"]),
        decode_tuples=True,
    )


def read_imo(contracts: Contracts, imo_id: int) -> ImoView:
    count = launcher(contracts).functions.imo_count().call()
    if not 1 <= imo_id <= count:
        raise TributaError(f"IMO {imo_id} does not exist (there are {count})")
    imo = launcher(contracts).functions.imo(imo_id).call()
    fields = {name: getattr(imo, name) for name in ImoView.__dataclass_fields__ if name not in ("imo_id", "state")}
    return ImoView(imo_id, **fields, state=STATES.get(imo.state, str(imo.state)))


def launch(
    contracts: Contracts,
    publisher: Signer,
    model_id: int,
    name: str,
    symbol: str,
    supply_tokens: int,
    price_wei: int,
    soft_cap_wei: int,
    hard_cap_wei: int,
    duration_s: int,
    publisher_share_bps: int,
    vesting_s: int,
    redeem_share_bps: int = 0,
) -> tuple[int, str, TxResult]:
    """Launch a sale of the model's token; returns (imo id, token address, tx)."""
    if not 1 <= len(name) <= MAX_NAME or not 1 <= len(symbol) <= MAX_SYMBOL:
        raise TributaError(f"token name must be 1..{MAX_NAME} and symbol 1..{MAX_SYMBOL} characters")
    check_launch(
        launcher(contracts),
        supply_tokens * TOKEN_UNIT,
        price_wei,
        soft_cap_wei,
        hard_cap_wei,
        duration_s,
        publisher_share_bps,
        vesting_s,
        redeem_share_bps,
    )
    now = contracts.w3.eth.get_block("latest")["timestamp"]
    call = launcher(contracts).functions.launch(
        model_id,
        name,
        symbol,
        supply_tokens * TOKEN_UNIT,
        price_wei,
        soft_cap_wei,
        hard_cap_wei,
        now + duration_s,
        publisher_share_bps,
        vesting_s,
        redeem_share_bps,
    )
    result = publisher.transact(call, action="launch")
    event = first_event(launcher(contracts), "Launched", result.receipt)
    return event["imo_id"], event["token"], result


def _eth(wei: int) -> str:
    text = f"{Decimal(wei) / 10**18:f}"
    return (text.rstrip("0").rstrip(".") if "." in text else text) + " ETH"


def whole_tokens(base_units: int) -> str:
    """Token base units as whole tokens with thousands separators (1,000,000; never 1e+06)."""
    if base_units % TOKEN_UNIT == 0:
        return f"{base_units // TOKEN_UNIT:,}"
    return f"{Decimal(base_units) / TOKEN_UNIT:,f}".rstrip("0")


def check_launch(
    launcher_: Contract,
    supply: int,
    price_wei: int,
    soft_cap_wei: int,
    hard_cap_wei: int,
    duration_s: int,
    publisher_share_bps: int,
    vesting_s: int,
    redeem_share_bps: int,
) -> None:
    """The launcher's own bounds, checked before anything is sent: each failure is one line
    that names the limit (the contract enforces the same bounds with "imo: ..." reasons)."""
    f = launcher_.functions
    limits = {
        "supply": f.MAX_SUPPLY().call(),
        "hard_cap": f.MAX_HARD_CAP().call(),
        "duration": f.MAX_SALE_DURATION().call(),
        "vesting": f.MAX_VESTING_DURATION().call(),
        "publisher": f.MAX_PUBLISHER_SHARE_BPS().call(),
        "redeem": f.MAX_REDEEM_SHARE_BPS().call(),
    }
    if not 0 < supply <= limits["supply"]:
        raise TributaError(f"supply must be 1..{whole_tokens(limits['supply'])} tokens")
    if price_wei <= 0:
        raise TributaError("price must be above 0 ETH per token")
    if not 0 < hard_cap_wei <= limits["hard_cap"]:
        raise TributaError(f"hard cap must be above 0 and at most {limits['hard_cap']} wei")
    if soft_cap_wei > hard_cap_wei:
        raise TributaError(f"soft cap is above the hard cap (max {_eth(hard_cap_wei)})")
    if not 0 < duration_s <= limits["duration"]:
        raise TributaError(f"sale duration must be 1..{limits['duration']:,} s")
    if publisher_share_bps > limits["publisher"]:
        raise TributaError(f"publisher share is too high (max {limits['publisher']:,} bps)")
    if vesting_s > limits["vesting"]:
        raise TributaError(f"vesting is too long (max {limits['vesting']:,} s)")
    if redeem_share_bps > limits["redeem"]:
        raise TributaError(f"redeem share is too high (max {limits['redeem']:,} bps)")
    for_sale = supply - supply * publisher_share_bps // 10_000
    hard_cap_tokens = hard_cap_wei * TOKEN_UNIT // price_wei
    if hard_cap_tokens == 0:
        raise TributaError(f"hard cap buys no tokens at this price (min {_eth(price_wei)})")
    if hard_cap_tokens > for_sale:
        raise TributaError(
            f"hard cap exceeds tokens for sale (max {whole_tokens(for_sale)}; the hard cap buys {whole_tokens(hard_cap_tokens)})"
        )


def buy(contracts: Contracts, buyer: Signer, imo_id: int, value_wei: int) -> tuple[int, TxResult]:
    """Buy at the fixed price; returns (token base units bought, tx)."""
    if value_wei <= 0:
        raise TributaError("buy with a positive amount of ETH")
    result = buyer.transact(launcher(contracts).functions.buy(imo_id), value=value_wei, action="buy")
    return first_event(launcher(contracts), "Purchased", result.receipt)["tokens"], result


def finalize(contracts: Contracts, caller: Signer, imo_id: int) -> TxResult:
    return caller.transact(launcher(contracts).functions.finalize(imo_id), action="finalize")


def flush_fees(contracts: Contracts, caller: Signer, token: str) -> int:
    """Move the fees the escrow credited to the token into it (anyone may), so holders can claim."""
    owed = contracts.escrow.functions.balance_of(token).call()
    if owed:
        caller.transact(contracts.escrow.functions.withdraw_for(Web3.to_checksum_address(token)), action="withdraw_for")
    return owed


def holders(contracts: Contracts, token: str) -> list[Holder]:
    """Every address that ever received the token (the custodian aside), with its balance and
    claimable revenue."""
    t = token_contract(contracts, token)
    custodian = t.functions.custodian().call()
    seen = {e["args"]["receiver"] for e in t.events.Transfer.get_logs(from_block=contracts.deployment.block_number)}
    result = []
    for address in sorted(a for a in seen if int(a, 16) != 0 and a != custodian):
        result.append(
            Holder(address, t.functions.balanceOf(address).call(), t.functions.claimable_revenue(address).call())
        )
    return result


def claim(contracts: Contracts, holder: Signer, imo_id: int) -> tuple[int, int]:
    """Collect the holder's sale tokens (if any are waiting) and its revenue; returns (tokens, wei)."""
    view = read_imo(contracts, imo_id)
    tokens = 0
    purchase = launcher(contracts).functions.purchased(imo_id, holder.address).call()
    if view.state == "succeeded" and purchase[1] and not purchase[2]:
        result = holder.transact(launcher(contracts).functions.claim_tokens(imo_id), action="claim_tokens")
        tokens = first_event(launcher(contracts), "TokensClaimed", result.receipt)["amount"]
    flush_fees(contracts, holder, view.token)
    t = token_contract(contracts, view.token)
    owed = t.functions.claimable_revenue(holder.address).call()
    if owed:
        holder.transact(t.functions.claim(), action="claim")
    if not tokens and not owed:
        raise TributaError(f"{holder.address} has nothing to claim from IMO {imo_id}")
    return tokens, owed


def withdraw_excess(contracts: Contracts, buyer: Signer) -> tuple[int, TxResult]:
    """Pull what the buyer sent above hard caps (credited by `buy`); returns (wei, tx)."""
    owed = launcher(contracts).functions.excess_of(buyer.address).call()
    if owed == 0:
        raise TributaError(f"{buyer.address} has no excess to withdraw (only a buy above a hard cap leaves one)")
    return owed, buyer.transact(launcher(contracts).functions.withdraw_excess(), action="withdraw_excess")


def _publisher_of_success(contracts: Contracts, publisher: Signer, imo_id: int) -> ImoView:
    view = read_imo(contracts, imo_id)
    if view.publisher != publisher.address:
        raise TributaError(f"IMO {imo_id} was launched by {view.publisher}, not by {publisher.address}")
    if view.state != "succeeded":
        raise TributaError(
            f"IMO {imo_id} is {view.state}, not succeeded (a sale pays its publisher only after a successful finalize)"
        )
    return view


def withdraw_proceeds(contracts: Contracts, publisher: Signer, imo_id: int) -> tuple[int, TxResult]:
    """The publisher pulls everything a successful sale raised; returns (wei, tx)."""
    view = _publisher_of_success(contracts, publisher, imo_id)
    if view.proceeds_withdrawn:
        raise TributaError(f"the proceeds of IMO {imo_id} were already withdrawn")
    if view.raised == 0:
        raise TributaError(f"IMO {imo_id} raised nothing")
    return view.raised, publisher.transact(
        launcher(contracts).functions.withdraw_proceeds(imo_id), action="withdraw_proceeds"
    )


def claim_vested(contracts: Contracts, publisher: Signer, imo_id: int) -> tuple[int, TxResult, ImoView]:
    """The publisher takes its share vested so far; returns (token base units, tx, the IMO)."""
    view = _publisher_of_success(contracts, publisher, imo_id)
    amount = launcher(contracts).functions.claimable_vested(imo_id).call()
    if amount == 0:
        if view.vested_claimed >= view.publisher_tokens:
            raise TributaError(
                f"all {whole_tokens(view.publisher_tokens)} publisher tokens of IMO {imo_id} are claimed"
            )
        raise TributaError(
            f"nothing of IMO {imo_id} has vested since the last claim (vesting runs "
            f"{view.vesting_duration:,} s from {view.vesting_start})"
        )
    return amount, publisher.transact(launcher(contracts).functions.claim_vested(imo_id), action="claim_vested"), view
