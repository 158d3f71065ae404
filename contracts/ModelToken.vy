# pragma version ~=0.4.3
"""
@title Tributa ModelToken: the token of one model's Initial Model Offering
@custom:contract-name ModelToken
@license GNU Affero General Public License v3.0 only
@notice An ERC-20 (with EIP-2612 `permit`, from snekmate) whose holders receive
        the model's revenue pro rata. Every wei of ETH sent to the token (the
        model fee TaskEscrow delivers at settlement, `withdraw_for(token)`, or
        any direct transfer) is split at arrival:
          - `redeem_share_bps` of it goes to the redeem pool: it accrues to
            every token of the supply alike and is paid to whoever burns the
            token (`burn`);
          - the rest accrues to every token of the supply alike, to be pulled
            by the token's holder with `claim`.
        Accrual is per token of the TOTAL supply. Tokens the custodian (the
        IMO launcher) still holds, bought but not yet claimed or not yet
        vested, accrue like any other and carry what they accrued to their
        future owner when the custodian hands them over. So nobody's share
        depends on when other tokens start to circulate, and a near-empty
        circulating supply cannot blow up the per-share accumulator.

        The supply is minted once, at construction, to the custodian, and can
        only shrink by burning. The token takes revenue only once the
        custodian has made it live (`go_live`, at a successful IMO's
        finalization); before that a revenue-in reverts ("token: not live")
        and the ETH stays with the sender.

        Accounting identity, exact in wei at every moment:
          total_revenue_in == total_claimed + total_redeemed
                              + total_unclaimed() + redeem_pool()
        and sum(claimable_revenue(a)) <= total_unclaimed(),
            sum(redeemable_on_burn(balance of a)) <= redeem_pool().
        The gaps are the truncations of the per-share divisions (less than
        totalSupply / 2**128 wei per revenue-in) and the sub-wei fractions
        each account keeps for later; they are never paid to anyone else.

        Why revenue-in can never revert or overflow once live (the bound):
          Let E < 2**100 bound all ether that exists (about 2**87 wei today),
          so every msg.value and this contract's balance are below E.
          1. Holder revenue: `revenue_per_share` and the per-account
             corrections are kept modulo 2**256 (unsafe_add / unsafe_mul), as
             Uniswap v3 keeps fee growth. Only the per-account value
             `accrued(a) = revenue_per_share * balance(a) + correction(a)`
             is ever interpreted, and its true integer value is the magnified
             revenue accrued by `a` and not claimed yet, so
             0 <= accrued(a) < (E + 1) * 2**128 < 2**229 < 2**256. Arithmetic
             modulo 2**256 therefore returns it exactly, however large the
             accumulator has grown. The increment
             `to_holders * 2**128 // totalSupply` is below 2**228 (checked).
          2. The redeem pool: every existing token has accrued the same
             `redeem_per_share` and none of it has been paid (a burn destroys
             the token it pays for), so
             redeem_per_share * totalSupply <= redeem_pool() * 2**128
                                             < E * 2**128 < 2**228,
             and totalSupply >= 1 (below) keeps redeem_per_share itself there.
          3. totalSupply >= 1 while live: a successful IMO leaves at least one
             token, the custodian burns only before `go_live`, and a holder's
             burn may not take the last base unit ("token: last token").
          4. The cumulative counters add msg.value (< E) once per call: an
             overflow of 2**256 needs more than 2**156 revenue-ins.
          Nothing else in `__default__` can fail: there is no cap to reach.
          tests/stateful/test_model_token_state.py drives revenue, transfers,
          claims and burns down to one base unit in circulation and sends
          revenue after each step; tests/fuzzing/ checks the modular
          arithmetic against exact integers.

        Deviations from ERC-7641 (https://eips.ethereum.org/EIPS/eip-7641):
          - no snapshots: revenue is credited continuously at arrival through
            the accumulator, so nothing expires and `claim()` takes no snapshot
            id; `claimable_revenue(account)` takes no snapshot id either;
          - snake_case names (`claimable_revenue`, `redeemable_on_burn`) and
            `claim()` / `burn()` return the wei paid;
          - revenue is ETH only, received by `__default__`;
          - the redeem pool pays a fixed amount per token (what that token
            accrued), not a share of the pool at burn time;
          - the custodian's tokens accrue for their future owners: the
            custodian itself can neither claim nor redeem, and nothing can be
            transferred to it.
@custom:security - Pull payments only; `claim` and `burn` are `@nonreentrant`
                   and update all state before sending ETH.
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

import interfaces.IModelToken as IModelToken
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


# @dev Fixed-point scale of both per-share accumulators.
MAGNITUDE: public(constant(uint256)) = 2**128

# @dev Basis points denominator.
BPS: constant(uint256) = 10_000

# @dev Largest supply a token may have (5.19e33 base units, i.e. about 5.19e15
# whole tokens at 18 decimals).
MAX_SUPPLY: public(constant(uint256)) = 2**112

# @dev The holder accumulator starts at 1 (1 / 2**128 wei per base unit,
# economically nothing). A hand-over from the custodian writes the receiver's
# correction as -1 (taking back that phantom unit), so every account that ever
# received tokens has a non-zero correction slot and its first claim rewrites
# a non-zero slot (2,900 gas instead of 20,000). See `_move`.
_INITIAL_REVENUE_PER_SHARE: constant(uint256) = 1

# @dev Offset stored in `redeem_per_share` so that its slot is never zero and
# the first revenue-in with a redeem share rewrites a non-zero slot; payouts
# use `redeem_per_share - _REDEEM_BIAS`.
_REDEEM_BIAS: constant(uint256) = 1

# @dev Offset stored in the cumulative revenue counter. 0 means "not live",
# so the live flag costs no slot of its own; from `go_live` on, the counter's
# slot is never zero and even the first revenue-in rewrites a non-zero slot.
_SLOT_BIAS: constant(uint256) = 1

# @dev Offset stored in the cumulative claimed counter, for the same reason.
_CLAIMED_BIAS: constant(uint256) = 1

# @dev EIP-712 version of the permit domain.
_EIP712_VERSION: constant(String[20]) = "1"


# @dev The account that received the whole supply at construction (the IMO
# launcher). Its tokens accrue for their future owners.
custodian: public(immutable(address))

# @dev The DataRegistry model this token belongs to (informational).
model_id: public(immutable(uint256))

# @dev Share of every revenue-in, in basis points, that goes to the redeem pool.
redeem_share_bps: public(immutable(uint256))

# @dev The supply minted at construction.
initial_supply: public(immutable(uint256))


# @dev Cumulative holder revenue per base unit of the total supply, scaled by
# MAGNITUDE, modulo 2**256 (see the bound in the module notes).
revenue_per_share: public(uint256)

# @dev Cumulative redeem-pool revenue per base unit of the total supply,
# scaled by MAGNITUDE, plus _REDEEM_BIAS: what burning one base unit pays
# (bounded, checked; see `redeem_per_share()`).
_redeem_per_share_biased: uint256

# @dev Cumulative ETH (wei) received as revenue, plus _SLOT_BIAS once live
# (0 before `go_live`).
_revenue_in_biased: uint256

# @dev Cumulative ETH (wei) paid out by `claim`, plus _CLAIMED_BIAS.
_claimed_biased: uint256

# @dev Cumulative ETH (wei) paid out of the redeem pool by `burn`.
total_redeemed: public(uint256)

# @dev Per-account correction modulo 2**256, so that the magnified revenue
# accrued (and not yet claimed) by `account` is
# `revenue_per_share * balanceOf[account] + _corrections[account]` mod 2**256.
_corrections: HashMap[address, uint256]


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

    self.revenue_per_share = _INITIAL_REVENUE_PER_SHARE
    self._redeem_per_share_biased = _REDEEM_BIAS
    self._claimed_biased = _CLAIMED_BIAS
    erc20._mint(custodian_, supply_)

    # Nobody mints after construction: drop the deployer's minter role and the
    # ownership that would let anyone grant it again.
    erc20.is_minter[msg.sender] = False
    log erc20.RoleMinterChanged(minter=msg.sender, status=False)
    ownable._transfer_ownership(empty(address))


@external
@payable
def __default__():
    """
    @dev Receives revenue: `redeem_share_bps` of the cumulative revenue goes to
         the redeem pool, the rest to the holders, both per base unit of the
         total supply. O(1) whatever the number of holders. A zero-value call
         changes nothing. Once live it cannot revert (see the bound in the
         module notes).
    @notice Reverts with "token: not live" before the custodian's `go_live`
            (a sale still open or failed), so such ETH stays with the sender.
    """
    if msg.value == 0:
        return
    revenue_biased: uint256 = self._revenue_in_biased
    assert revenue_biased != 0, "token: not live"

    revenue_before: uint256 = revenue_biased - _SLOT_BIAS
    revenue_after: uint256 = revenue_before + msg.value
    # The pool's cut is taken on the cumulative revenue, so rounding never
    # accumulates across many small revenue-ins.
    to_pool: uint256 = self._pool_in(revenue_after) - self._pool_in(revenue_before)
    to_holders: uint256 = msg.value - to_pool
    supply: uint256 = erc20.totalSupply

    if to_holders != 0:
        self.revenue_per_share = unsafe_add(self.revenue_per_share, to_holders * MAGNITUDE // supply)
    if to_pool != 0:
        self._redeem_per_share_biased += to_pool * MAGNITUDE // supply
    self._revenue_in_biased = revenue_after + _SLOT_BIAS
    log IModelToken.RevenueReceived(sender=msg.sender, amount=msg.value, to_redeem_pool=to_pool)


@external
def go_live():
    """
    @dev Opens the token to revenue (custodian only, once), after the
         custodian has burned what will never be sold.
    @notice Reverts with "token: caller is not the custodian" or
            "token: already live".
    """
    assert msg.sender == custodian, "token: caller is not the custodian"
    assert self._revenue_in_biased == 0, "token: already live"
    self._revenue_in_biased = _SLOT_BIAS
    log IModelToken.Live(total_supply=erc20.totalSupply)


@external
def transfer(to: address, amount: uint256) -> bool:
    """
    @dev Moves `amount` tokens from the caller to `to`. Revenue accrued so far
         stays claimable by the caller (tokens handed over by the custodian
         bring theirs along).
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
    @notice Reverts with "token: nothing to claim" when nothing is owed (always
            for the custodian, whose tokens accrue for their future owners).
    @return uint256 The wei paid.
    """
    amount: uint256 = self._claimable(msg.sender)
    assert amount != 0, "token: nothing to claim"
    self._corrections[msg.sender] = unsafe_sub(self._corrections[msg.sender], amount * MAGNITUDE)
    self._claimed_biased += amount
    log IModelToken.RevenueClaimed(account=msg.sender, amount=amount)
    raw_call(msg.sender, b"", value=amount)
    return amount


@external
@nonreentrant
def burn(amount: uint256) -> uint256:
    """
    @dev Burns `amount` of the caller's tokens and pays what they accrued in
         the redeem pool, `amount * redeem_per_share / 2**128`. Holder revenue
         accrued before the burn stays claimable. The custodian burns only
         before the token is live (unsold or failed-sale tokens), for nothing.
    @notice Reverts with "token: zero amount" for 0, "token: last token" when
            the burn would leave no supply at all (revenue would have nowhere
            to go), "token: custodian burn after launch", and
            "erc20: burn amount exceeds balance" beyond the caller's balance.
    @param amount The 32-byte token amount to burn.
    @return uint256 The wei paid out of the redeem pool.
    """
    assert amount != 0, "token: zero amount"
    if msg.sender == custodian:
        assert self._revenue_in_biased == 0, "token: custodian burn after launch"
        erc20._burn(msg.sender, amount)
        log IModelToken.Redeemed(account=msg.sender, amount=amount, payout=0)
        return 0

    payout: uint256 = amount * self._redeem_per_share() // MAGNITUDE
    erc20._burn(msg.sender, amount)
    assert erc20.totalSupply != 0, "token: last token"
    # The burned tokens' accrued holder revenue stays with the caller.
    self._corrections[msg.sender] = unsafe_add(self._corrections[msg.sender], unsafe_mul(self.revenue_per_share, amount))
    if payout != 0:
        self.total_redeemed += payout
    log IModelToken.Redeemed(account=msg.sender, amount=amount, payout=payout)
    if payout != 0:
        raw_call(msg.sender, b"", value=payout)
    return payout


@external
@view
def claimable_revenue(account: address) -> uint256:
    """
    @dev Returns the wei `account` can claim now (rounded down).
    @param account The 20-byte account address.
    @return uint256 The claimable wei (always 0 for the custodian).
    """
    return self._claimable(account)


@external
@view
def accrued_in_custody(amount: uint256) -> uint256:
    """
    @dev Returns the holder revenue (wei, rounded down) that `amount` of the
         custodian's tokens have accrued and will bring to their future owner.
    @param amount The 32-byte token amount (capped at the custodian's balance).
    @return uint256 The accrued wei.
    """
    held: uint256 = min(amount, erc20.balanceOf[custodian])
    return unsafe_mul(unsafe_sub(self.revenue_per_share, _INITIAL_REVENUE_PER_SHARE), held) // MAGNITUDE


@external
@view
def redeemable_on_burn(amount: uint256) -> uint256:
    """
    @dev Returns the wei burning `amount` tokens pays now (rounded down):
         `amount * redeem_per_share / 2**128`, the same for every token.
    @param amount The 32-byte token amount (capped at the total supply).
    @return uint256 The wei the burn would pay.
    """
    return min(amount, erc20.totalSupply) * self._redeem_per_share() // MAGNITUDE


@external
@view
def redeem_pool() -> uint256:
    """
    @dev Returns the wei in the redeem pool (paid in, not redeemed yet).
    @return uint256 The pool balance.
    """
    return self._pool_in(self._revenue_total()) - self.total_redeemed


@external
@view
def total_unclaimed() -> uint256:
    """
    @dev Returns the holder revenue received and not claimed yet, in
         aggregate (custodian-held tokens' share included). At least the sum
         of every `claimable_revenue`.
    @return uint256 The unclaimed holder revenue.
    """
    revenue: uint256 = self._revenue_total()
    return revenue - self._pool_in(revenue) - (self._claimed_biased - _CLAIMED_BIAS)


@external
@view
def total_revenue_in() -> uint256:
    """
    @dev Returns the cumulative ETH (wei) received as revenue.
    @return uint256 The revenue received.
    """
    return self._revenue_total()


@external
@view
def total_claimed() -> uint256:
    """
    @dev Returns the cumulative ETH (wei) paid out by `claim`.
    @return uint256 The revenue claimed.
    """
    return self._claimed_biased - _CLAIMED_BIAS


@external
@view
def circulating_supply() -> uint256:
    """
    @dev Returns the tokens outside the custodian (informational: accrual is
         per token of the total supply).
    @return uint256 totalSupply minus the custodian's balance.
    """
    return erc20.totalSupply - erc20.balanceOf[custodian]


@external
@view
def redeem_per_share() -> uint256:
    """
    @dev Returns the redeem-pool revenue accrued per base unit, scaled by
         2**128: burning `amount` pays `amount * redeem_per_share() / 2**128`.
    @return uint256 The magnified redeem value per base unit.
    """
    return self._redeem_per_share()


@external
@view
def live() -> bool:
    """
    @dev Returns whether the token takes revenue (after `go_live`).
    @return bool True once live.
    """
    return self._revenue_in_biased != 0


@internal
def _move(owner: address, to: address, amount: uint256):
    """
    @dev Transfers tokens and moves the corrections so that neither side's
         accrued revenue changes, except that tokens leaving the custodian
         bring what they accrued in custody (the custodian's correction is
         always 0, so its accrual is exactly `revenue_per_share * balance`).
    @param owner The 20-byte owner address.
    @param to The 20-byte receiver address.
    @param amount The 32-byte token amount.
    """
    assert to != custodian, "token: transfer to custodian"
    erc20._transfer(owner, to, amount)
    if amount == 0:
        return
    if owner == custodian:
        # -1 takes back one phantom unit of the accumulator's initial value
        # (see _INITIAL_REVENUE_PER_SHARE): these tokens bring at least
        # `amount` such units, so the receiver's accrual stays >= 0.
        self._corrections[to] = unsafe_sub(self._corrections[to], 1)
        return
    delta: uint256 = unsafe_mul(self.revenue_per_share, amount)
    self._corrections[owner] = unsafe_add(self._corrections[owner], delta)
    self._corrections[to] = unsafe_sub(self._corrections[to], delta)


@internal
@view
def _claimable(account: address) -> uint256:
    """
    @dev Magnified accrued revenue of `account` (exact modulo 2**256, see the
         bound), scaled down and rounded down.
    @param account The 20-byte account address.
    @return uint256 The claimable wei.
    """
    if account == custodian:
        return 0
    accrued: uint256 = unsafe_add(
        unsafe_mul(self.revenue_per_share, erc20.balanceOf[account]), self._corrections[account]
    )
    return accrued // MAGNITUDE


@internal
@view
def _redeem_per_share() -> uint256:
    """
    @dev Returns the unbiased redeem value per base unit (magnified).
    @return uint256 The magnified redeem value per base unit.
    """
    return self._redeem_per_share_biased - _REDEEM_BIAS


@internal
@view
def _revenue_total() -> uint256:
    """
    @dev Returns the cumulative revenue in wei (0 before live).
    @return uint256 The revenue received.
    """
    biased: uint256 = self._revenue_in_biased
    if biased == 0:
        return 0
    return biased - _SLOT_BIAS


@internal
@view
def _pool_in(revenue: uint256) -> uint256:
    """
    @dev Returns the redeem pool's cut of a cumulative revenue.
    @param revenue The cumulative revenue in wei.
    @return uint256 The pool's cumulative cut in wei.
    """
    return revenue * redeem_share_bps // BPS
