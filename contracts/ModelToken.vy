# pragma version ~=0.4.3
"""
@title Tributa ModelToken: the token of one model's Initial Model Offering
@custom:contract-name ModelToken
@license GNU Affero General Public License v3.0 only
@notice An ERC-20 (with EIP-2612 `permit`, from snekmate) whose holders receive
        the model's revenue pro rata. Every wei of ETH sent to the token (task
        fees that TaskEscrow forwards with `withdraw_for(token)`, or any direct
        transfer) is split at arrival:
          - `redeem_share_bps` of it goes to the redeem pool, paid out to holders
            who `burn` tokens, pro rata to the circulating supply;
          - the rest is shared among the holders of the circulating supply in
            proportion to their balances at that moment, to be pulled with `claim`.
        The supply is fixed: it is minted once, at construction, to the
        `custodian` (the IMO launcher), and can only shrink by burning.

        Revenue uses a magnified revenue-per-share accumulator with one signed
        correction per account (O(1) per transfer, burn, claim and revenue-in,
        whatever the number of holders). Transfers never move accrued revenue:
        a seller keeps what accrued before the sale, the buyer earns from then on.

        Accounting identity, exact in wei at every moment:
          total_revenue_in == total_claimed + total_redeemed + total_unclaimed()
                              + redeem_pool() + dust()
        `total_unclaimed()` is what holders can still claim in aggregate; each
        account's `claimable_revenue` is rounded down, so the sum over accounts
        falls short of it by less than 1 wei per account (those fractions stay
        with their accounts and become claimable as more revenue arrives).
        `dust()` is the truncation of the per-share division at arrival (below
        1 wei per revenue-in while the circulating supply is under 2**128) and
        is never claimable.

        Deviations from ERC-7641 (https://eips.ethereum.org/EIPS/eip-7641):
          - no snapshots: revenue is credited continuously at arrival through
            the accumulator, so nothing expires and `claim()` takes no snapshot
            id; `claimable_revenue(account)` takes no snapshot id either;
          - snake_case names (`claimable_revenue`, `redeemable_on_burn`) and
            `claim()` / `burn()` return the wei paid;
          - revenue is ETH only, received by `__default__`;
          - tokens held by the custodian (unsold, vesting, or not yet claimed
            by IMO buyers) are not circulating: they earn no revenue and do not
            count in the redeem pool's pro-rata; a custodian `burn` pays nothing;
            nothing can be transferred to the custodian;
          - revenue arriving while nothing circulates reverts
            ("token: no circulating supply"), so it stays with the sender.
@custom:security - Pull payments only; `claim` and `burn` are `@nonreentrant`
                   and update all state before sending ETH.
                 - A revenue-in that would push the accumulator past the bound
                   that keeps every product inside int256 reverts
                   ("token: revenue overflows accumulator") instead of bricking
                   transfers later; with a sane supply this needs absurd sums.
                 - ETH forced into the contract (SELFDESTRUCT, coinbase) is not
                   revenue and is not accounted; it stays in the contract.
                 - The snekmate `mint`, `burn_from`, minter and ownership
                   functions are not exported; ownership and the minter role
                   are renounced at construction.
"""


from ethereum.ercs import IERC20
implements: IERC20

from ethereum.ercs import IERC20Detailed
implements: IERC20Detailed

from ..interfaces import IModelToken
implements: IModelToken

from snekmate.auth import ownable
initializes: ownable

from snekmate.tokens import erc20
initializes: erc20[ownable := ownable]


exports: (
    erc20.name,
    erc20.symbol,
    erc20.decimals,
    erc20.totalSupply,
    erc20.balanceOf,
    erc20.allowance,
    erc20.approve,
    erc20.permit,
    erc20.nonces,
    erc20.DOMAIN_SEPARATOR,
    erc20.eip712Domain,
)


# @dev Fixed-point scale of the revenue-per-share accumulator.
MAGNITUDE: public(constant(uint256)) = 2**128

# @dev Basis points denominator.
BPS: constant(uint256) = 10_000

# @dev Largest supply a token may have (5.19e33 base units, i.e. about 5.19e15
# whole tokens at 18 decimals).
MAX_SUPPLY: public(constant(uint256)) = 2**112

# @dev Largest cumulative revenue (wei) the accounting accepts.
MAX_TOTAL_REVENUE: constant(uint256) = 2**126

# @dev Largest value of any int256-converted product below.
_INT_BOUND: constant(uint256) = 2**255 - 1

# @dev The accumulator starts at 1 (1 / 2**128 wei per base unit, economically
# nothing, and cancelled by the corrections) so that every account that ever
# received tokens has a non-zero correction slot. Claims and transfers then
# rewrite a non-zero slot, which costs 2,900 gas instead of 20,000.
_INITIAL_REVENUE_PER_SHARE: constant(uint256) = 1

# @dev Offset stored in the cumulative counters written by revenue-in and
# claim, so that their slots are never zero and even the first revenue-in and
# the first claim rewrite a non-zero slot (2,900 gas instead of 20,000).
_SLOT_BIAS: constant(uint256) = 1

# @dev EIP-712 version of the permit domain.
_EIP712_VERSION: constant(String[20]) = "1"


# @dev The account that received the whole supply at construction (the IMO
# launcher). Its balance is not circulating.
custodian: public(immutable(address))

# @dev The DataRegistry model this token belongs to (informational).
model_id: public(immutable(uint256))

# @dev Share of every revenue-in, in basis points, that goes to the redeem pool.
redeem_share_bps: public(immutable(uint256))

# @dev The supply minted at construction.
initial_supply: public(immutable(uint256))

# @dev Largest accumulator value that keeps `revenue_per_share * balance`
# inside int256 for any balance (balances never exceed `initial_supply`).
_MAX_REVENUE_PER_SHARE: immutable(uint256)


# @dev Cumulative revenue per circulating base unit, scaled by MAGNITUDE
# (starts at `_INITIAL_REVENUE_PER_SHARE`).
revenue_per_share: public(uint256)

# @dev totalSupply minus the custodian's balance.
circulating_supply: public(uint256)

# @dev Cumulative ETH (wei) received as revenue, plus _SLOT_BIAS.
_revenue_in_biased: uint256

# @dev Cumulative ETH (wei) paid out by `claim`, plus _SLOT_BIAS.
_claimed_biased: uint256

# @dev Cumulative ETH (wei) paid out of the redeem pool by `burn`.
total_redeemed: public(uint256)

# @dev Sum over accounts of the corrections, plus MAGNITUDE * total_claimed.
# `revenue_per_share * circulating_supply + _distribution_offset` is then the
# magnified revenue ever credited to holders (claimed or not).
_distribution_offset: int256

# @dev Per-account correction, so that the magnified revenue accrued (and not
# yet claimed) by `account` is
# `revenue_per_share * balanceOf[account] + _corrections[account]`.
_corrections: HashMap[address, int256]


event RevenueReceived:
    sender: indexed(address)
    amount: uint256
    to_redeem_pool: uint256

event RevenueClaimed:
    account: indexed(address)
    amount: uint256

event Redeemed:
    account: indexed(address)
    amount: uint256
    payout: uint256


@deploy
@payable
def __init__(
    name_: String[25],
    symbol_: String[5],
    supply_: uint256,
    custodian_: address,
    redeem_share_bps_: uint256,
    model_id_: uint256,
):
    """
    @dev Mints the whole fixed supply to `custodian_` and renounces the snekmate
         owner and minter roles, so no one can ever mint again. Deployed by the
         IMO launcher with `create_from_blueprint`.
    @param name_ The token name (at most 25 characters), also the EIP-712
           domain name of `permit`.
    @param symbol_ The token symbol (at most 5 characters).
    @param supply_ The fixed supply in base units (18 decimals), 1..MAX_SUPPLY.
    @param custodian_ The initial holder of the whole supply (the launcher).
    @param redeem_share_bps_ Share of revenue, in basis points (0..10000), that
           goes to the redeem pool.
    @param model_id_ The DataRegistry model id this token belongs to.
    """
    assert supply_ != 0, "token: zero supply"
    assert supply_ <= MAX_SUPPLY, "token: supply too large"
    assert custodian_ != empty(address), "token: zero custodian"
    assert redeem_share_bps_ <= BPS, "token: redeem share above 100%"

    ownable.__init__()
    erc20.__init__(name_, symbol_, 18, name_, _EIP712_VERSION)

    custodian = custodian_
    model_id = model_id_
    redeem_share_bps = redeem_share_bps_
    initial_supply = supply_
    _MAX_REVENUE_PER_SHARE = _INT_BOUND // supply_

    self.revenue_per_share = _INITIAL_REVENUE_PER_SHARE
    self._revenue_in_biased = _SLOT_BIAS
    self._claimed_biased = _SLOT_BIAS
    erc20._mint(custodian_, supply_)

    # Nobody mints after construction: drop the deployer's minter role and the
    # ownership that would let anyone grant it again.
    erc20.is_minter[msg.sender] = False
    log erc20.RoleMinterChanged(minter=msg.sender, status=False)
    ownable._transfer_ownership(empty(address))


@payable
@external
def __default__():
    """
    @dev Receives revenue. `redeem_share_bps` of the cumulative revenue goes to
         the redeem pool; the rest is credited to the circulating supply pro rata
         to balances now. O(1) whatever the number of holders. A zero-value call
         changes nothing.
    @notice Reverts with "token: no circulating supply" while every token is
            still with the custodian (or burned), so such ETH stays with the
            sender (TaskEscrow keeps it credited).
    """
    if msg.value == 0:
        return
    circulating: uint256 = self.circulating_supply
    assert circulating != 0, "token: no circulating supply"

    revenue_before: uint256 = self._revenue_in_biased - _SLOT_BIAS
    revenue_after: uint256 = revenue_before + msg.value
    assert revenue_after <= MAX_TOTAL_REVENUE, "token: revenue overflows accumulator"
    # The pool's cut is taken on the cumulative revenue, so rounding never
    # accumulates across many small revenue-ins.
    to_pool: uint256 = self._pool_in(revenue_after) - self._pool_in(revenue_before)
    to_holders: uint256 = msg.value - to_pool

    if to_holders != 0:
        per_share: uint256 = self.revenue_per_share + to_holders * MAGNITUDE // circulating
        assert per_share <= _MAX_REVENUE_PER_SHARE, "token: revenue overflows accumulator"
        self.revenue_per_share = per_share
    self._revenue_in_biased = revenue_after + _SLOT_BIAS
    log RevenueReceived(sender=msg.sender, amount=msg.value, to_redeem_pool=to_pool)


@external
def transfer(to: address, amount: uint256) -> bool:
    """
    @dev Moves `amount` tokens from the caller to `to`. Revenue accrued so far
         stays claimable by the caller.
    @notice Reverts with "token: transfer to custodian" when `to` is the
            custodian, and with the snekmate erc20 reasons otherwise.
    @param to The 20-byte receiver address.
    @param amount The 32-byte token amount to be transferred.
    @return bool Always True (failures revert).
    """
    self._move(msg.sender, to, amount)
    return True


@external
def transferFrom(owner: address, to: address, amount: uint256) -> bool:
    """
    @dev Moves `amount` tokens from `owner` to `to` using the caller's
         allowance (an allowance of max uint256 is never decreased).
    @param owner The 20-byte owner address.
    @param to The 20-byte receiver address.
    @param amount The 32-byte token amount to be transferred.
    @return bool Always True (failures revert).
    """
    erc20._spend_allowance(owner, msg.sender, amount)
    self._move(owner, to, amount)
    return True


@external
@nonreentrant
def claim() -> uint256:
    """
    @dev Pays the caller all the revenue accrued to it (pull).
    @notice Reverts with "token: nothing to claim" when nothing is owed.
    @return uint256 The wei paid.
    """
    amount: uint256 = self._claimable(msg.sender)
    assert amount != 0, "token: nothing to claim"
    self._corrections[msg.sender] -= convert(amount * MAGNITUDE, int256)
    self._claimed_biased += amount
    log RevenueClaimed(account=msg.sender, amount=amount)
    raw_call(msg.sender, b"", value=amount)
    return amount


@external
@nonreentrant
def burn(amount: uint256) -> uint256:
    """
    @dev Burns `amount` of the caller's tokens and pays it
         `redeem_pool * amount / circulating_supply` from the redeem pool.
         Revenue accrued before the burn stays claimable. A custodian burn
         (unsold or failed-sale tokens) pays nothing and leaves the circulating
         supply unchanged.
    @notice Reverts with "token: zero amount" for 0, and with "erc20: burn
            amount exceeds balance" beyond the caller's balance.
    @param amount The 32-byte token amount to burn.
    @return uint256 The wei paid out of the redeem pool.
    """
    assert amount != 0, "token: zero amount"
    if msg.sender == custodian:
        erc20._burn(msg.sender, amount)
        log Redeemed(account=msg.sender, amount=amount, payout=0)
        return 0

    circulating: uint256 = self.circulating_supply
    payout: uint256 = self._redeem_pool() * amount // circulating if circulating != 0 else 0
    erc20._burn(msg.sender, amount)

    delta: int256 = convert(self.revenue_per_share * amount, int256)
    self._corrections[msg.sender] += delta
    self._distribution_offset += delta
    self.circulating_supply = circulating - amount
    if payout != 0:
        self.total_redeemed += payout
    log Redeemed(account=msg.sender, amount=amount, payout=payout)
    if payout != 0:
        raw_call(msg.sender, b"", value=payout)
    return payout


@view
@external
def claimable_revenue(account: address) -> uint256:
    """
    @dev Returns the wei `account` can claim now (rounded down).
    @param account The 20-byte account address.
    @return uint256 The claimable wei (always 0 for the custodian).
    """
    return self._claimable(account)


@view
@external
def redeemable_on_burn(amount: uint256) -> uint256:
    """
    @dev Returns the wei a (non-custodian) holder would receive for burning
         `amount` now: `redeem_pool * amount / circulating_supply` (rounded
         down, `amount` capped at the circulating supply).
    @param amount The 32-byte token amount.
    @return uint256 The wei the burn would pay.
    """
    circulating: uint256 = self.circulating_supply
    if circulating == 0:
        return 0
    return self._redeem_pool() * min(amount, circulating) // circulating


@view
@external
def redeem_pool() -> uint256:
    """
    @dev Returns the wei in the redeem pool.
    @return uint256 The pool balance.
    """
    return self._redeem_pool()


@view
@external
def total_unclaimed() -> uint256:
    """
    @dev Returns the wei credited to holders and not claimed yet, in aggregate
         (at least the sum of every `claimable_revenue`, and less than that sum
         plus 1 wei per holder).
    @return uint256 The unclaimed holder revenue.
    """
    return self._distributed() - (self._claimed_biased - _SLOT_BIAS)


@view
@external
def dust() -> uint256:
    """
    @dev Returns the wei lost to the truncation of the per-share division at
         revenue-in. It is never claimable and stays in the contract.
    @return uint256 The dust.
    """
    revenue: uint256 = self._revenue_in_biased - _SLOT_BIAS
    return revenue - self._pool_in(revenue) - self._distributed()


@view
@external
def total_revenue_in() -> uint256:
    """
    @dev Returns the cumulative ETH (wei) received as revenue.
    @return uint256 The revenue received.
    """
    return self._revenue_in_biased - _SLOT_BIAS


@view
@external
def total_claimed() -> uint256:
    """
    @dev Returns the cumulative ETH (wei) paid out by `claim`.
    @return uint256 The revenue claimed.
    """
    return self._claimed_biased - _SLOT_BIAS


@internal
def _move(owner: address, to: address, amount: uint256):
    """
    @dev Transfers tokens and moves the accrued-revenue corrections so that
         neither side's accrued revenue changes. Tokens leaving the custodian
         start circulating.
    @param owner The 20-byte owner address.
    @param to The 20-byte receiver address.
    @param amount The 32-byte token amount.
    """
    assert to != custodian, "token: transfer to custodian"
    erc20._transfer(owner, to, amount)
    if amount == 0:
        return
    delta: int256 = convert(self.revenue_per_share * amount, int256)
    if owner == custodian:
        self.circulating_supply += amount
        self._distribution_offset -= delta
    else:
        self._corrections[owner] += delta
    self._corrections[to] -= delta


@view
@internal
def _claimable(account: address) -> uint256:
    """
    @dev Magnified accrued revenue of `account`, scaled down and rounded down.
    @param account The 20-byte account address.
    @return uint256 The claimable wei.
    """
    if account == custodian:
        return 0
    accrued: int256 = (
        convert(self.revenue_per_share * erc20.balanceOf[account], int256) + self._corrections[account]
    )
    return convert(accrued, uint256) // MAGNITUDE


@view
@internal
def _distributed() -> uint256:
    """
    @dev Returns the wei ever credited to holders (claimed or not), rounded down.
    @return uint256 The credited wei.
    """
    magnified: int256 = (
        convert(self.revenue_per_share * self.circulating_supply, int256) + self._distribution_offset
    )
    return convert(magnified, uint256) // MAGNITUDE


@view
@internal
def _pool_in(revenue: uint256) -> uint256:
    """
    @dev Returns the redeem pool's cut of a cumulative revenue.
    @param revenue The cumulative revenue in wei.
    @return uint256 The pool's cumulative cut in wei.
    """
    return revenue * redeem_share_bps // BPS


@view
@internal
def _redeem_pool() -> uint256:
    """
    @dev Returns the wei in the redeem pool.
    @return uint256 The pool balance.
    """
    return self._pool_in(self._revenue_in_biased - _SLOT_BIAS) - self.total_redeemed
