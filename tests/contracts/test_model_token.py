"""ModelToken: ERC-20 + permit, per-token revenue accrual, claim, burn-to-redeem, accounting, gas."""

from __future__ import annotations

import boa
import pytest
from eth_account import Account
from eth_account.messages import encode_typed_data

from tests.contracts import imo_helpers as ih
from tests.contracts.imo_helpers import ETHER, MAGNITUDE, UNIT

SUPPLY = 1_000_000 * UNIT
REDEEM_BPS = 1_000


@pytest.fixture(scope="module")
def issuer():
    """The custodian (in production: the IMO launcher)."""
    return ih.funded("issuer")


@pytest.fixture(scope="module")
def alice():
    return ih.funded("alice")


@pytest.fixture(scope="module")
def bob():
    return ih.funded("bob")


@pytest.fixture(scope="module")
def carol():
    return ih.funded("carol")


@pytest.fixture(scope="module")
def payer():
    """Sends revenue (in production: TaskEscrow at settlement, or withdraw_for)."""
    return ih.funded("payer", 10**9 * ETHER)


@pytest.fixture(scope="module")
def token(issuer):
    """Not live yet: the whole supply sits with the custodian."""
    return ih.deploy_token(issuer, SUPPLY, REDEEM_BPS)


@pytest.fixture
def held(token, issuer, alice, bob):
    """Live; alice 500k and bob 300k in hand, the custodian keeps 200k for their future owners."""
    token.go_live(sender=issuer)
    token.transfer(alice, 500_000 * UNIT, sender=issuer)
    token.transfer(bob, 300_000 * UNIT, sender=issuer)
    return token


def holders_share(amount: int) -> int:
    return amount - amount * REDEEM_BPS // ih.BPS


def replica_claimable(increments: list[int], balance: int, handovers: int = 1) -> int:
    """The contract's arithmetic for an account that got `balance` from the custodian
    (`handovers` times) and kept it: ((1 + sum of per-share increments) * balance
    - handovers) // 2**128."""
    return ((1 + sum(increments)) * balance - handovers) // MAGNITUDE


def inc(holders_amount: int, supply: int = SUPPLY) -> int:
    return holders_amount * MAGNITUDE // supply


def identity_holds(token) -> bool:
    return token.total_revenue_in() == (
        token.total_claimed() + token.total_redeemed() + token.total_unclaimed() + token.redeem_pool()
    )


def balance_covers_everything(token) -> bool:
    return boa.env.get_balance(token.address) >= token.total_unclaimed() + token.redeem_pool()


# ------------------------------------------------------------------ construction


def test_init__mints_whole_supply_to_custodian(token, issuer):
    assert token.totalSupply() == SUPPLY
    assert token.initial_supply() == SUPPLY
    assert token.balanceOf(issuer) == SUPPLY
    assert token.circulating_supply() == 0
    assert token.custodian() == issuer
    assert token.name() == "Tiny GPT2 Model"
    assert token.symbol() == "TGPT"
    assert token.decimals() == 18
    assert token.model_id() == 7
    assert token.redeem_share_bps() == REDEEM_BPS
    assert token.total_revenue_in() == 0
    assert token.total_claimed() == 0
    assert token.redeem_pool() == 0
    assert token.live() is False


def test_init__emits_mint_and_renounces_minter_and_owner(issuer):
    token = ih.deploy_token(issuer)
    logs = token.get_logs()
    names = [type(e).__name__ for e in logs]
    assert "Transfer" in names and "RoleMinterChanged" in names and "OwnershipTransferred" in names
    mint = next(e for e in logs if type(e).__name__ == "Transfer")
    assert mint.sender == ih.ZERO_ADDRESS and mint.receiver == issuer and mint.value == 10**6 * UNIT
    minter = [e for e in logs if type(e).__name__ == "RoleMinterChanged"][-1]
    assert minter.minter == issuer and minter.status is False
    owner = [e for e in logs if type(e).__name__ == "OwnershipTransferred"][-1]
    assert owner.new_owner == ih.ZERO_ADDRESS


def test_init__exposes_no_way_to_mint(token):
    functions = {f["name"] for f in token.abi if f["type"] == "function"}
    assert not functions & {"mint", "set_minter", "is_minter", "transfer_ownership", "renounce_ownership", "burn_from"}
    assert {
        "permit",
        "nonces",
        "DOMAIN_SEPARATOR",
        "claim",
        "burn",
        "claimable_revenue",
        "redeemable_on_burn",
    } <= functions


@pytest.mark.parametrize(
    "supply, custodian_is_zero, redeem_bps, reason",
    [
        (0, False, 0, "token: zero supply"),
        (2**112 + 1, False, 0, "token: supply too large"),
        (UNIT, True, 0, "token: zero custodian"),
        (UNIT, False, 10_001, "token: redeem share above 100%"),
    ],
)
def test_init__bad_parameters__revert(issuer, supply, custodian_is_zero, redeem_bps, reason):
    custodian = ih.ZERO_ADDRESS if custodian_is_zero else issuer
    with boa.reverts(reason):
        ih.partial("ModelToken").deploy("Name", "SYM", supply, custodian, redeem_bps, 1)


def test_init__max_supply_and_full_redeem_share__are_accepted(issuer):
    token = ih.deploy_token(issuer, supply=2**112, redeem_share_bps=10_000)
    assert token.totalSupply() == 2**112


# ------------------------------------------------------------------ going live


def test_go_live__opens_the_token_to_revenue_and_emits(token, issuer, payer):
    token.go_live(sender=issuer)
    [event] = ih.events(token, "Live")
    assert event.total_supply == SUPPLY
    assert token.live() is True
    ih.send_revenue(token, payer, ETHER)
    assert token.total_revenue_in() == ETHER


def test_go_live__by_anyone_but_the_custodian__reverts(token, alice):
    with boa.reverts("token: caller is not the custodian"):
        token.go_live(sender=alice)


def test_go_live__twice__reverts(token, issuer):
    token.go_live(sender=issuer)
    with boa.reverts("token: already live"):
        token.go_live(sender=issuer)


def test_revenue_in__before_live__reverts_and_the_eth_stays_with_the_sender(token, payer):
    before = boa.env.get_balance(payer)
    ih.send_revenue_reverts(token, payer, ETHER, "token: not live")
    assert boa.env.get_balance(payer) == before
    assert boa.env.get_balance(token.address) == 0


# ------------------------------------------------------------------ revenue in


def test_revenue_in__zero_value__changes_nothing(held, payer):
    computation = ih.send_revenue(held, payer, 0)
    assert held.total_revenue_in() == 0
    assert held.revenue_per_share() == 1
    assert held.get_logs(computation) == []


def test_revenue_in__accrues_per_token_of_the_total_supply(held, payer, alice, bob, issuer):
    ih.send_revenue(held, payer, 8 * ETHER)
    h = holders_share(8 * ETHER)  # 7.2 ETH over 1M tokens, custody included
    assert held.claimable_revenue(alice) == replica_claimable([inc(h)], 500_000 * UNIT)
    assert held.claimable_revenue(bob) == replica_claimable([inc(h)], 300_000 * UNIT)
    assert abs(held.claimable_revenue(alice) - 36 * ETHER // 10) <= 1
    assert abs(held.claimable_revenue(bob) - 216 * ETHER // 100) <= 1
    assert held.claimable_revenue(issuer) == 0  # custody accrues for the future owners
    assert abs(held.accrued_in_custody(200_000 * UNIT) - 144 * ETHER // 100) <= 1
    assert held.total_revenue_in() == 8 * ETHER
    assert boa.env.get_balance(held.address) == 8 * ETHER


def test_revenue_in__puts_redeem_share_in_pool_and_emits(held, payer):
    computation = ih.send_revenue(held, payer, 8 * ETHER)
    assert held.redeem_pool() == 8 * ETHER // 10
    [event] = [e for e in held.get_logs(computation) if type(e).__name__ == "RevenueReceived"]
    assert event.sender == payer and event.amount == 8 * ETHER and event.to_redeem_pool == 8 * ETHER // 10


def test_revenue_in__pool_cut_is_taken_on_cumulative_revenue(held, payer):
    for _ in range(15):
        ih.send_revenue(held, payer, 7)  # 10% of 7 wei rounds down each time
    assert held.redeem_pool() == 105 * REDEEM_BPS // ih.BPS  # 10, not 15 * 0
    assert identity_holds(held)


def test_revenue_in__custody_handover__brings_revenue_accrued_in_custody(held, payer, bob, issuer):
    ih.send_revenue(held, payer, 10 * ETHER)
    carried = held.accrued_in_custody(200_000 * UNIT)
    bob_before = held.claimable_revenue(bob)
    held.transfer(bob, 200_000 * UNIT, sender=issuer)  # e.g. a late claim_tokens
    assert held.claimable_revenue(bob) in (bob_before + carried, bob_before + carried + 1)
    ih.send_revenue(held, payer, 10 * ETHER)
    h = holders_share(10 * ETHER)
    assert held.claimable_revenue(bob) == ((1 + 2 * inc(h)) * 500_000 * UNIT - 2) // MAGNITUDE


def test_revenue_in__all_to_pool__leaves_holder_accumulator_unchanged(issuer, alice, payer):
    token = ih.deploy_token(issuer, redeem_share_bps=10_000)
    token.go_live(sender=issuer)
    token.transfer(alice, UNIT, sender=issuer)
    ih.send_revenue(token, payer, ETHER)
    assert token.redeem_pool() == ETHER
    assert token.claimable_revenue(alice) == 0
    assert token.revenue_per_share() == 1


def test_revenue_in__freeze_by_recycled_donations_to_one_base_unit__fails(issuer, alice, payer):
    """The review's high finding: the attacker holds the only circulating base unit, then
    donates and claims back over and over until the accumulator would overflow. Accrual per
    token of the total supply, kept modulo 2**256, leaves every later revenue-in working."""
    token = ih.deploy_token(issuer, supply=1, redeem_share_bps=0)  # one base unit in all
    token.go_live(sender=issuer)
    token.transfer(alice, 1, sender=issuer)
    boa.env.set_balance(alice, 10**6 * ETHER)
    for _ in range(40):
        ih.send_revenue(token, alice, 10**5 * ETHER)
        assert token.claim(sender=alice) == 10**5 * ETHER
    ih.send_revenue(token, payer, 27)
    ih.send_revenue(token, payer, 10**4 * ETHER)
    assert token.claimable_revenue(alice) == 10**4 * ETHER + 27
    assert identity_holds(token) and balance_covers_everything(token)


def test_revenue_in__after_the_accumulator_wraps_past_2_256__credits_exactly(issuer, alice, bob, payer):
    token = ih.deploy_token(issuer, supply=2, redeem_share_bps=0)
    token.go_live(sender=issuer)
    token.transfer(alice, 2, sender=issuer)
    # Jump the accumulator to just below 2**256, as if ~2**128 wei had gone through per
    # base unit; bob then buys from alice and starts from an exact zero.
    boa.env.set_storage(token.address, token._storage.revenue_per_share.slot, 2**256 - 3)
    token.transfer(bob, 1, sender=alice)
    assert token.claimable_revenue(bob) == 0
    ih.send_revenue(token, payer, 10 * ETHER + 1)
    assert token.revenue_per_share() < 2**256 - 3  # wrapped
    assert token.claimable_revenue(bob) == 5 * ETHER
    assert token.claim(sender=bob) == 5 * ETHER
    ih.send_revenue(token, payer, 4 * ETHER)
    assert token.claimable_revenue(bob) == 2 * ETHER


def test_revenue_in__huge_single_revenue_on_a_tiny_supply__is_credited_exactly(issuer, alice, payer):
    token = ih.deploy_token(issuer, supply=3, redeem_share_bps=5_000)
    token.go_live(sender=issuer)
    token.transfer(alice, 1, sender=issuer)
    ih.send_revenue(token, payer, 10**8 * ETHER)  # more ether than the payer could ever borrow
    assert token.claimable_revenue(alice) == (1 + (5 * 10**7 * ETHER) * MAGNITUDE // 3 - 1) // MAGNITUDE
    assert token.redeemable_on_burn(1) == (5 * 10**7 * ETHER) * MAGNITUDE // 3 // MAGNITUDE
    assert identity_holds(token) and balance_covers_everything(token)


# ------------------------------------------------------------------ transfers


def test_transfer__keeps_accrued_revenue_with_the_seller(held, payer, alice, bob):
    ih.send_revenue(held, payer, 8 * ETHER)
    alice_before = held.claimable_revenue(alice)
    bob_before = held.claimable_revenue(bob)
    held.transfer(bob, 500_000 * UNIT, sender=alice)
    assert held.balanceOf(alice) == 0
    assert held.claimable_revenue(alice) == alice_before
    assert held.claimable_revenue(bob) == bob_before


def test_transfer__buyer_earns_only_revenue_after_the_transfer(held, payer, alice, carol):
    ih.send_revenue(held, payer, 8 * ETHER)
    held.transfer(carol, 100_000 * UNIT, sender=alice)
    assert held.claimable_revenue(carol) == 0
    ih.send_revenue(held, payer, 8 * ETHER)
    h = holders_share(8 * ETHER)
    assert held.claimable_revenue(carol) == inc(h) * 100_000 * UNIT // MAGNITUDE


def test_transfer__emits_transfer(held, alice, carol):
    assert held.transfer(carol, 5 * UNIT, sender=alice) is True
    [event] = ih.events(held, "Transfer")
    assert (event.sender, event.receiver, event.value) == (alice, carol, 5 * UNIT)


def test_transfer__from_custodian__starts_circulating(token, issuer, alice):
    token.transfer(alice, 123 * UNIT, sender=issuer)
    assert token.circulating_supply() == 123 * UNIT
    assert token.balanceOf(alice) == 123 * UNIT
    assert token.balanceOf(issuer) == SUPPLY - 123 * UNIT


def test_transfer__to_custodian__reverts(held, alice, issuer):
    with boa.reverts("token: transfer to custodian"):
        held.transfer(issuer, UNIT, sender=alice)


def test_transfer__more_than_balance__reverts(held, carol, alice):
    with boa.reverts("erc20: transfer amount exceeds balance"):
        held.transfer(alice, 1, sender=carol)


def test_transfer__to_zero_address__reverts(held, alice):
    with boa.reverts("erc20: transfer to the zero address"):
        held.transfer(ih.ZERO_ADDRESS, 1, sender=alice)


def test_transfer__to_self__keeps_balance_and_revenue(held, payer, alice):
    ih.send_revenue(held, payer, ETHER)
    before = held.claimable_revenue(alice)
    held.transfer(alice, 100 * UNIT, sender=alice)
    assert held.balanceOf(alice) == 500_000 * UNIT
    assert held.claimable_revenue(alice) == before


def test_transfer__zero_amount__changes_nothing(held, payer, alice, carol):
    ih.send_revenue(held, payer, ETHER)
    before = held.claimable_revenue(alice)
    held.transfer(carol, 0, sender=alice)
    assert held.balanceOf(carol) == 0
    assert held.claimable_revenue(alice) == before
    assert held.claimable_revenue(carol) == 0


def test_approve__sets_allowance_and_emits(held, alice, bob):
    assert held.approve(bob, 7 * UNIT, sender=alice) is True
    [event] = ih.events(held, "Approval")
    assert (event.owner, event.spender, event.value) == (alice, bob, 7 * UNIT)
    assert held.allowance(alice, bob) == 7 * UNIT


def test_transfer_from__spends_allowance_and_keeps_revenue_with_owner(held, payer, alice, bob, carol):
    ih.send_revenue(held, payer, 8 * ETHER)
    alice_before = held.claimable_revenue(alice)
    held.approve(bob, 10 * UNIT, sender=alice)
    assert held.transferFrom(alice, carol, 4 * UNIT, sender=bob) is True
    assert held.allowance(alice, bob) == 6 * UNIT
    assert held.balanceOf(carol) == 4 * UNIT
    assert held.claimable_revenue(alice) == alice_before
    assert held.claimable_revenue(carol) == 0


def test_transfer_from__beyond_allowance__reverts(held, alice, bob, carol):
    held.approve(bob, UNIT, sender=alice)
    with boa.reverts("erc20: insufficient allowance"):
        held.transferFrom(alice, carol, UNIT + 1, sender=bob)


def test_transfer_from__infinite_allowance__is_not_decreased(held, alice, bob, carol):
    held.approve(bob, 2**256 - 1, sender=alice)
    held.transferFrom(alice, carol, UNIT, sender=bob)
    assert held.allowance(alice, bob) == 2**256 - 1


def test_transfer_from__to_custodian__reverts(held, alice, bob, issuer):
    held.approve(bob, UNIT, sender=alice)
    with boa.reverts("token: transfer to custodian"):
        held.transferFrom(alice, issuer, UNIT, sender=bob)


def test_transfer_from__custodian_with_allowance__starts_circulating(token, issuer, bob, carol):
    token.approve(bob, 10 * UNIT, sender=issuer)
    token.transferFrom(issuer, carol, 10 * UNIT, sender=bob)
    assert token.circulating_supply() == 10 * UNIT


# ------------------------------------------------------------------ permit


def _permit_signature(token, owner_acct, spender, value, nonce, deadline):
    message = {
        "types": {
            "EIP712Domain": [
                {"name": "name", "type": "string"},
                {"name": "version", "type": "string"},
                {"name": "chainId", "type": "uint256"},
                {"name": "verifyingContract", "type": "address"},
            ],
            "Permit": [
                {"name": "owner", "type": "address"},
                {"name": "spender", "type": "address"},
                {"name": "value", "type": "uint256"},
                {"name": "nonce", "type": "uint256"},
                {"name": "deadline", "type": "uint256"},
            ],
        },
        "primaryType": "Permit",
        "domain": {
            "name": token.name(),
            "version": "1",
            "chainId": boa.env.evm.patch.chain_id,
            "verifyingContract": str(token.address),
        },
        "message": {
            "owner": owner_acct.address,
            "spender": str(spender),
            "value": value,
            "nonce": nonce,
            "deadline": deadline,
        },
    }
    signed = Account.sign_message(encode_typed_data(full_message=message), owner_acct.key)
    return signed.v, signed.r.to_bytes(32, "big"), signed.s.to_bytes(32, "big")


def test_permit__valid_signature__sets_allowance_and_bumps_nonce(token, bob):
    owner = Account.create()
    deadline = boa.env.timestamp + 3_600
    v, r, s = _permit_signature(token, owner, bob, 5 * UNIT, 0, deadline)
    token.permit(owner.address, bob, 5 * UNIT, deadline, v, r, s, sender=bob)
    assert token.allowance(owner.address, bob) == 5 * UNIT
    assert token.nonces(owner.address) == 1


def test_permit__replayed_signature__reverts(token, bob):
    owner = Account.create()
    deadline = boa.env.timestamp + 3_600
    v, r, s = _permit_signature(token, owner, bob, UNIT, 0, deadline)
    token.permit(owner.address, bob, UNIT, deadline, v, r, s)
    with boa.reverts("erc20: invalid signature"):
        token.permit(owner.address, bob, UNIT, deadline, v, r, s)


def test_permit__expired_deadline__reverts(token, bob):
    owner = Account.create()
    deadline = boa.env.timestamp - 1
    v, r, s = _permit_signature(token, owner, bob, UNIT, 0, deadline)
    with boa.reverts("erc20: expired deadline"):
        token.permit(owner.address, bob, UNIT, deadline, v, r, s)


def test_permit__signature_for_another_value__reverts(token, bob):
    owner = Account.create()
    deadline = boa.env.timestamp + 3_600
    v, r, s = _permit_signature(token, owner, bob, UNIT, 0, deadline)
    with boa.reverts("erc20: invalid signature"):
        token.permit(owner.address, bob, 2 * UNIT, deadline, v, r, s)


# ------------------------------------------------------------------ claim


# ------------------------------------------------------------------ claim


def test_claim__pays_accrued_revenue_and_emits(held, payer, alice):
    ih.send_revenue(held, payer, 8 * ETHER)
    owed = held.claimable_revenue(alice)
    before = boa.env.get_balance(alice)
    assert held.claim(sender=alice) == owed
    [event] = ih.events(held, "RevenueClaimed")
    assert (event.account, event.amount) == (alice, owed)
    assert boa.env.get_balance(alice) == before + owed
    assert held.claimable_revenue(alice) == 0
    assert held.total_claimed() == owed
    assert identity_holds(held)


def test_claim__with_nothing_owed__reverts(held, alice):
    with boa.reverts("token: nothing to claim"):
        held.claim(sender=alice)


def test_claim__twice__second_reverts(held, payer, alice):
    ih.send_revenue(held, payer, ETHER)
    held.claim(sender=alice)
    with boa.reverts("token: nothing to claim"):
        held.claim(sender=alice)


def test_claim__by_custodian_taking_future_owners_revenue__fails(held, payer, issuer):
    ih.send_revenue(held, payer, ETHER)
    assert held.accrued_in_custody(200_000 * UNIT) > 0
    with boa.reverts("token: nothing to claim"):
        held.claim(sender=issuer)


def test_claim__by_non_holder__reverts(held, payer, carol):
    ih.send_revenue(held, payer, ETHER)
    with boa.reverts("token: nothing to claim"):
        held.claim(sender=carol)


def test_claim__after_selling_everything__pays_revenue_accrued_before_the_sale(held, payer, alice, carol):
    ih.send_revenue(held, payer, 8 * ETHER)
    owed = held.claimable_revenue(alice)
    held.transfer(carol, 500_000 * UNIT, sender=alice)
    ih.send_revenue(held, payer, 8 * ETHER)  # alice's old tokens now earn for carol
    assert held.claim(sender=alice) == owed
    h = holders_share(8 * ETHER)
    assert held.claim(sender=carol) == inc(h) * 500_000 * UNIT // MAGNITUDE


def test_claim__then_more_revenue__pays_only_the_new_part(held, payer, alice):
    ih.send_revenue(held, payer, 8 * ETHER)
    first = held.claim(sender=alice)
    ih.send_revenue(held, payer, 8 * ETHER)
    second = held.claim(sender=alice)
    h = holders_share(8 * ETHER)
    assert first + second == replica_claimable([inc(h)] * 2, 500_000 * UNIT)


# ------------------------------------------------------------------ burn / redeem


def test_burn__pays_what_the_burned_tokens_accrued_in_the_pool(held, payer, bob):
    ih.send_revenue(held, payer, 8 * ETHER)  # pool 0.8 ETH over 1M tokens
    expected = 100_000 * UNIT * held.redeem_per_share() // MAGNITUDE
    assert held.redeemable_on_burn(100_000 * UNIT) == expected
    assert abs(expected - 8 * ETHER // 100) <= 1
    before = boa.env.get_balance(bob)
    assert held.burn(100_000 * UNIT, sender=bob) == expected
    [event] = ih.events(held, "Redeemed")
    assert (event.account, event.amount, event.payout) == (bob, 100_000 * UNIT, expected)
    assert boa.env.get_balance(bob) == before + expected
    assert held.redeem_pool() == 8 * ETHER // 10 - expected
    assert held.total_redeemed() == expected
    assert held.totalSupply() == SUPPLY - 100_000 * UNIT
    assert identity_holds(held)


def test_burn__dilution_by_tokens_that_start_circulating_later__fails(held, payer, bob, issuer):
    """The review's medium finding 2: tokens handed over later (vesting, late claims)
    took pool money that arrived before they circulated. Now every token's redeem value
    is what it accrued, so a handover changes nobody else's payout."""
    ih.send_revenue(held, payer, 8 * ETHER)
    bob_value = held.redeemable_on_burn(300_000 * UNIT)
    held.transfer(bob, 0, sender=issuer)
    late = boa.env.generate_address("late")
    held.transfer(late, 200_000 * UNIT, sender=issuer)  # the custody share starts circulating
    assert held.redeemable_on_burn(300_000 * UNIT) == bob_value
    assert held.burn(300_000 * UNIT, sender=bob) == bob_value
    # the late tokens get what they themselves accrued, not the part of bob's
    assert held.burn(200_000 * UNIT, sender=late) == 200_000 * UNIT * held.redeem_per_share() // MAGNITUDE
    assert balance_covers_everything(held) and identity_holds(held)


def test_burn__keeps_revenue_accrued_before_the_burn_claimable(held, payer, bob):
    ih.send_revenue(held, payer, 8 * ETHER)
    owed = held.claimable_revenue(bob)
    held.burn(300_000 * UNIT, sender=bob)
    assert held.balanceOf(bob) == 0
    assert held.claimable_revenue(bob) == owed
    assert held.claim(sender=bob) == owed


def test_burn__shrinks_the_base_for_later_revenue(held, payer, alice, bob):
    held.burn(300_000 * UNIT, sender=bob)  # 700k tokens remain: alice 500k, custody 200k
    ih.send_revenue(held, payer, 7 * ETHER)
    h = holders_share(7 * ETHER)
    assert held.claimable_revenue(alice) == replica_claimable([inc(h, 700_000 * UNIT)], 500_000 * UNIT)
    assert abs(held.claimable_revenue(alice) - 45 * ETHER // 10) <= 1
    assert held.claimable_revenue(bob) == 0


def test_burn__of_the_last_base_unit__fails(issuer, alice, payer):
    """A supply burned to zero would leave revenue nowhere to go (and the model's fee
    receiver locked to it), so the last base unit stays."""
    token = ih.deploy_token(issuer, supply=10, redeem_share_bps=5_000)
    token.go_live(sender=issuer)
    token.transfer(alice, 10, sender=issuer)
    ih.send_revenue(token, payer, 1_000)
    token.burn(9, sender=alice)
    with boa.reverts("token: last token"):
        token.burn(1, sender=alice)
    ih.send_revenue(token, payer, 1_000)  # still takes revenue, all of it for the last unit
    assert token.claimable_revenue(alice) + token.redeemable_on_burn(1) >= 1_000 + 500 - 2
    assert balance_covers_everything(token) and identity_holds(token)


def test_burn__by_the_holders__drains_the_pool_to_under_a_wei_per_token(held, payer, alice, bob, issuer):
    ih.send_revenue(held, payer, 8 * ETHER + 7)
    held.transfer(bob, 200_000 * UNIT, sender=issuer)
    held.burn(500_000 * UNIT, sender=bob)
    held.burn(500_000 * UNIT - 1, sender=alice)
    assert held.redeem_pool() <= 3
    held.claim(sender=alice)
    held.claim(sender=bob)
    assert boa.env.get_balance(held.address) == held.total_unclaimed() + held.redeem_pool()
    assert held.total_unclaimed() <= 3
    assert identity_holds(held)


def test_burn__with_empty_pool__pays_nothing_and_burns(held, alice):
    assert held.burn(UNIT, sender=alice) == 0
    [event] = ih.events(held, "Redeemed")
    assert event.payout == 0
    assert held.balanceOf(alice) == 500_000 * UNIT - UNIT


def test_burn__zero_amount__reverts(held, alice):
    with boa.reverts("token: zero amount"):
        held.burn(0, sender=alice)


def test_burn__more_than_balance__reverts(held, payer, carol):
    ih.send_revenue(held, payer, ETHER)
    with boa.reverts("erc20: burn amount exceeds balance"):
        held.burn(1, sender=carol)


def test_burn__by_custodian_before_live__pays_nothing(token, issuer):
    assert token.burn(200_000 * UNIT, sender=issuer) == 0
    [event] = ih.events(token, "Redeemed")
    assert (event.account, event.amount, event.payout) == (issuer, 200_000 * UNIT, 0)
    assert token.totalSupply() == 800_000 * UNIT


def test_burn__by_custodian_after_live_erasing_future_owners_revenue__fails(held, payer, issuer):
    ih.send_revenue(held, payer, 8 * ETHER)
    with boa.reverts("token: custodian burn after launch"):
        held.burn(200_000 * UNIT, sender=issuer)


def test_redeemable_on_burn__before_any_revenue__is_zero(token):
    assert token.redeemable_on_burn(UNIT) == 0


def test_redeemable_on_burn__is_capped_at_the_total_supply(held, payer):
    ih.send_revenue(held, payer, 8 * ETHER)
    assert held.redeemable_on_burn(10**9 * UNIT) == held.redeemable_on_burn(SUPPLY) <= held.redeem_pool()


# ------------------------------------------------------------------ accounting


def test_accounting__indivisible_revenue__is_never_claimable_by_anyone(issuer, alice, bob, payer):
    token = ih.deploy_token(issuer, supply=3, redeem_share_bps=0)
    token.go_live(sender=issuer)
    token.transfer(alice, 1, sender=issuer)
    token.transfer(bob, 2, sender=issuer)
    ih.send_revenue(token, payer, 1)
    # 1 wei over 3 units: less than 1 wei per account, nothing claimable yet
    assert token.claimable_revenue(alice) == token.claimable_revenue(bob) == 0
    assert token.total_unclaimed() == 1
    ih.send_revenue(token, payer, 2)
    assert token.claimable_revenue(alice) == 0  # (2**128 - 1) / 2**128 wei: stays pending
    assert token.claimable_revenue(bob) == 1
    ih.send_revenue(token, payer, 3)  # exactly 1 wei per unit
    assert token.claimable_revenue(alice) == 1
    assert token.claimable_revenue(bob) == 3
    assert token.total_unclaimed() == 6
    assert identity_holds(token)


def test_total_unclaimed__bounds_the_sum_of_claimables(held, payer, alice, bob, carol, issuer):
    for amount in (10**18 + 1, 333, 7 * 10**17 + 5):
        ih.send_revenue(held, payer, amount)
        held.transfer(carol, 12_345, sender=alice)
    total = sum(held.claimable_revenue(a) for a in (alice, bob, carol)) + held.accrued_in_custody(200_000 * UNIT)
    assert total <= held.total_unclaimed() < total + 5
    assert identity_holds(held)


def test_accounting__every_wei_is_claimed_redeemed_pooled_or_unclaimed(held, payer, alice, bob, carol, issuer):
    ih.send_revenue(held, payer, 3 * ETHER + 11)
    held.transfer(carol, 77_777 * UNIT, sender=alice)
    held.claim(sender=bob)
    held.transfer(carol, 1_000 * UNIT, sender=issuer)
    ih.send_revenue(held, payer, ETHER + 3)
    held.burn(10_000 * UNIT, sender=carol)
    held.claim(sender=alice)
    assert identity_holds(held)
    assert boa.env.get_balance(held.address) == held.total_revenue_in() - held.total_claimed() - held.total_redeemed()


# ------------------------------------------------------------------ gas (full-tx figures)
#
# Measured in a fresh boa Env (see imo_helpers.gas_env) so that each call can be
# priced as a separate transaction: cold slots, EIP-2200 original values, the
# intrinsic 21,000 + calldata, and the capped refund.


@pytest.fixture
def gas_report():
    figures: dict[str, int] = {}
    yield figures
    for name, gas in figures.items():
        print(f"GAS {name}: {gas}")


@pytest.fixture
def gas_world():
    with ih.gas_env():
        issuer, alice, bob, payer = (ih.funded(n, 10**6 * ETHER) for n in ("issuer", "alice", "bob", "payer"))
        token = ih.deploy_token(issuer, SUPPLY, REDEEM_BPS)
        token.go_live(sender=issuer)
        token.transfer(alice, 500_000 * UNIT, sender=issuer)
        token.transfer(bob, 300_000 * UNIT, sender=issuer)
        yield token, issuer, alice, bob, payer


@pytest.mark.ignore_isolation  # gas_env commits state; it runs in its own Env
def test_gas__transfer_with_accrued_revenue_on_both_sides__is_at_most_60k(gas_world, gas_report):
    token, _, alice, bob, payer = gas_world
    ih.send_revenue(token, payer, ETHER)
    token.claim(sender=bob)
    ih.send_revenue(token, payer, ETHER)
    assert token.claimable_revenue(alice) > 0 and token.claimable_revenue(bob) > 0
    gas, _ = ih.tx_gas(token, "transfer", bob, 1_000 * UNIT, sender=alice)
    gas_report["model_token_transfer_with_revenue"] = gas
    assert gas <= 60_000


@pytest.mark.ignore_isolation  # gas_env commits state; it runs in its own Env
def test_gas__first_claim__is_at_most_50k(gas_world, gas_report):
    token, _, alice, _, payer = gas_world
    ih.send_revenue(token, payer, ETHER)
    gas, paid = ih.tx_gas(token, "claim", sender=alice)
    assert paid > 0
    gas_report["model_token_first_claim"] = gas
    assert gas <= 50_000


@pytest.mark.ignore_isolation  # gas_env commits state; it runs in its own Env
def test_gas__repeat_claim__is_at_most_50k(gas_world, gas_report):
    token, _, alice, _, payer = gas_world
    ih.send_revenue(token, payer, ETHER)
    token.claim(sender=alice)
    ih.send_revenue(token, payer, ETHER)
    gas, _ = ih.tx_gas(token, "claim", sender=alice)
    gas_report["model_token_claim"] = gas
    assert gas <= 50_000


@pytest.mark.ignore_isolation  # gas_env commits state; it runs in its own Env
@pytest.mark.parametrize("redeem_bps, limit", [(0, 40_000), (REDEEM_BPS, 46_000)])
def test_gas__revenue_in__is_bounded_and_the_same_for_1_and_1000_holders(gas_report, redeem_bps, limit):
    with ih.gas_env():
        issuer, payer = ih.funded("issuer"), ih.funded("payer", 10**6 * ETHER)
        one = ih.deploy_token(issuer, redeem_share_bps=redeem_bps)
        one.go_live(sender=issuer)
        one.transfer(boa.env.generate_address(), UNIT, sender=issuer)
        many = ih.deploy_token(issuer, redeem_share_bps=redeem_bps)
        many.go_live(sender=issuer)
        for _ in range(1_000):
            many.transfer(boa.env.generate_address(), UNIT, sender=issuer)
        gas_one_first = ih.revenue_in_gas(one, payer, ETHER)
        gas_many_first = ih.revenue_in_gas(many, payer, ETHER)
        gas_one = ih.revenue_in_gas(one, payer, ETHER)
        gas_many = ih.revenue_in_gas(many, payer, ETHER)
    gas_report[f"model_token_revenue_in_1_holder_redeem_{redeem_bps}"] = gas_one
    gas_report[f"model_token_revenue_in_1000_holders_redeem_{redeem_bps}"] = gas_many
    gas_report[f"model_token_first_revenue_in_redeem_{redeem_bps}"] = gas_one_first
    assert gas_one == gas_many and gas_one_first == gas_many_first
    assert max(gas_one, gas_one_first) <= limit
