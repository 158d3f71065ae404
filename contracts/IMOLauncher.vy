# pragma version ~=0.4.3
"""
@title Tributa IMOLauncher: Initial Model Offerings
@custom:contract-name IMOLauncher
@license GNU Affero General Public License v3.0 only
@notice A model's registered publisher launches a fixed-price, capped sale of a
        new ModelToken (created from a blueprint, whole supply minted to this
        launcher). After the sale:
          - below the soft cap the IMO fails: every token is burned and every
            buyer gets back exactly the wei it paid (`refund`);
          - otherwise it succeeds: unsold tokens are burned, the token goes
            live, buyers pull their tokens (`claim_tokens`), the publisher
            pulls the proceeds (`withdraw_proceeds`) and its share of the
            supply, which vests linearly from finalization (`claim_vested`),
            and the model's fee receiver in the DataRegistry becomes the token
            for good, so every later task on the model pays the token's
            holders.

        Decisions:
          - Price: `price` is wei per whole token (10**18 base units); a buy of
            `v` wei gets `v * 10**18 // price` base units and the sub-unit
            remainder stays in `raised` (it is refunded too if the IMO fails).
          - Hard cap: a buy that would go over it is partially filled up to the
            cap; the excess is credited to `excess_of(buyer)` and pulled with
            `withdraw_excess()`. A buy when less than one base unit's worth is
            left reverts ("imo: hard cap reached"), and that sale can be
            finalized at once.
          - Custody: bought tokens stay with the launcher until the IMO is
            finalized, so a failed sale refunds exactly and nobody trades a
            token whose sale may still fail. The launcher is the token's
            custodian: tokens it holds (not yet claimed, vesting) accrue
            revenue for their future owners, who get it along with them.
          - A sale that would leave no token at all (no buyer and no
            publisher share) fails even with a zero soft cap, so the fee
            receiver is never locked to a token nobody holds.
          - Unsold tokens are burned at finalization (the whole supply when the
            IMO fails), so no token is ever stuck in the launcher.
          - One live IMO per model, across launchers: `launch` calls the
            registry's `begin_imo`, which binds the model's IMO to this
            launcher, and `finalize` calls `end_imo`, which only this launcher
            may call even after the registry switched to another launcher. A
            model whose IMO is active or succeeded cannot launch another (that
            would redirect the holders' fees); after a failed IMO the publisher
            may launch again.
@custom:security - Pull payments only; every function that moves ETH or tokens
                   is `@nonreentrant` and updates state first.
                 - Every wei has a way out: ACTIVE funds become proceeds or
                   refunds at `finalize` (callable by anyone once the sale is
                   over), excess credits are always withdrawable.
                 - `launch` needs the registry owner's authorisation of this
                   launcher (`registry.set_imo_launcher`); `finalize` does not,
                   so switching launchers never freezes a sale's ETH.
"""


import interfaces.IDataRegistry as IDataRegistry
import interfaces.IModelToken as IModelToken

import interfaces.IIMOLauncher as IIMOLauncher
implements: IIMOLauncher


# @dev IMO states.
STATE_ACTIVE: public(constant(uint8)) = 1
STATE_SUCCEEDED: public(constant(uint8)) = 2
STATE_FAILED: public(constant(uint8)) = 3

# @dev Base units per whole token (18 decimals); `price` is wei per UNIT.
UNIT: constant(uint256) = 10**18

# @dev Basis points denominator.
BPS: constant(uint256) = 10_000

# @dev Bounds on launch parameters.
MAX_SUPPLY: public(constant(uint256)) = 2**112
MAX_HARD_CAP: public(constant(uint256)) = 2**128
MAX_SALE_DURATION: public(constant(uint256)) = 365 * 86_400
MAX_VESTING_DURATION: public(constant(uint256)) = 10 * 365 * 86_400
MAX_PUBLISHER_SHARE_BPS: public(constant(uint256)) = 9_000
MAX_REDEEM_SHARE_BPS: public(constant(uint256)) = 5_000

# @dev Redeem share used when `launch` is called without one: every wei of
# revenue goes to the holders' claims.
DEFAULT_REDEEM_SHARE_BPS: public(constant(uint256)) = 0


# @dev The DataRegistry whose models are offered.
registry: public(immutable(address))

# @dev The ERC-5202 blueprint of ModelToken.
model_token_blueprint: public(immutable(address))


# @dev Number of IMOs launched; ids run from 1 to imo_count.
imo_count: public(uint256)

# @dev The latest IMO of a model (0 if none).
imo_of_model: public(HashMap[uint256, uint256])

# @dev Wei paid above a hard cap, withdrawable by the buyer.
excess_of: public(HashMap[address, uint256])

_imos: HashMap[uint256, IIMOLauncher.IMO]
_purchases: HashMap[uint256, HashMap[address, IIMOLauncher.Purchase]]


@deploy
def __init__(registry_: address, model_token_blueprint_: address):
    """
    @dev Sets the registry and the ModelToken blueprint.
    @param registry_ The DataRegistry address.
    @param model_token_blueprint_ The ModelToken blueprint address (ERC-5202).
    """
    assert registry_ != empty(address), "imo: zero registry"
    assert model_token_blueprint_ != empty(address), "imo: zero blueprint"
    registry = registry_
    model_token_blueprint = model_token_blueprint_


@external
@nonreentrant
def launch(
    model_id: uint256,
    name: String[25],
    symbol: String[5],
    supply: uint256,
    price: uint256,
    soft_cap: uint256,
    hard_cap: uint256,
    sale_end: uint256,
    publisher_share_bps: uint256,
    vesting_duration: uint256,
    redeem_share_bps: uint256 = DEFAULT_REDEEM_SHARE_BPS,
) -> uint256:
    """
    @dev Creates the model's token and opens its sale. Only the model's
         registered publisher may launch, once per model unless the previous
         IMO failed.
    @param model_id The DataRegistry model id.
    @param name The token name (1 to 25 characters).
    @param symbol The token symbol (1 to 5 characters).
    @param supply The total supply in base units (18 decimals).
    @param price Wei per whole token (10**18 base units).
    @param soft_cap Wei to raise for the IMO to succeed (may be 0).
    @param hard_cap Most wei the sale accepts; its tokens must fit in the sale.
    @param sale_end Timestamp at which the sale closes (within 365 days).
    @param publisher_share_bps Share of the supply (at most 90%) that vests to
           the publisher; the rest is for sale.
    @param vesting_duration Seconds over which the publisher's share vests
           linearly from finalization (0: at once; at most 10 years).
    @param redeem_share_bps Share of the token's revenue that goes to its redeem
           pool (at most 50%; default 0).
    @return uint256 The new IMO id.
    """
    publisher: address = staticcall IDataRegistry(registry).model_publisher(model_id)
    assert publisher != empty(address), "imo: unknown model"
    assert publisher == msg.sender, "imo: not the model's publisher"
    active: bool = False
    fee: uint256 = 0
    receiver: address = empty(address)
    active, fee, receiver = staticcall IDataRegistry(registry).model_pricing(model_id)
    assert active, "imo: model inactive"
    # Checked here for a clear reason; `begin_imo` below enforces it.
    assert staticcall IDataRegistry(registry).imo_launcher() == self, "imo: launcher not authorised by registry"
    previous: uint256 = self.imo_of_model[model_id]
    if previous != 0:
        assert self._imos[previous].state == STATE_FAILED, "imo: model already has an imo"

    assert len(name) != 0, "imo: empty name"
    assert len(symbol) != 0, "imo: empty symbol"
    assert supply != 0, "imo: zero supply"
    assert supply <= MAX_SUPPLY, "imo: supply too large"
    assert price != 0, "imo: zero price"
    assert hard_cap != 0, "imo: zero hard cap"
    assert hard_cap <= MAX_HARD_CAP, "imo: hard cap too large"
    assert soft_cap <= hard_cap, "imo: soft cap above hard cap"
    assert sale_end > block.timestamp, "imo: sale end in the past"
    assert sale_end <= block.timestamp + MAX_SALE_DURATION, "imo: sale too long"
    assert publisher_share_bps <= MAX_PUBLISHER_SHARE_BPS, "imo: publisher share too high"
    assert vesting_duration <= MAX_VESTING_DURATION, "imo: vesting too long"
    assert redeem_share_bps <= MAX_REDEEM_SHARE_BPS, "imo: redeem share too high"

    publisher_tokens: uint256 = supply * publisher_share_bps // BPS
    tokens_for_sale: uint256 = supply - publisher_tokens
    hard_cap_tokens: uint256 = hard_cap * UNIT // price
    assert hard_cap_tokens != 0, "imo: hard cap buys no tokens"
    assert hard_cap_tokens <= tokens_for_sale, "imo: hard cap exceeds tokens for sale"

    # Binds the model's IMO to this launcher (refused while another IMO of the
    # model is in progress anywhere, or once its receiver is locked).
    extcall IDataRegistry(registry).begin_imo(model_id)
    token: address = create_from_blueprint(
        model_token_blueprint, name, symbol, supply, self, redeem_share_bps, model_id
    )

    imo_id: uint256 = self.imo_count + 1
    self.imo_count = imo_id
    self.imo_of_model[model_id] = imo_id
    self._imos[imo_id] = IIMOLauncher.IMO(
        model_id=model_id,
        token=token,
        publisher=msg.sender,
        price=price,
        soft_cap=soft_cap,
        hard_cap=hard_cap,
        sale_end=sale_end,
        raised=0,
        sold=0,
        tokens_for_sale=tokens_for_sale,
        publisher_tokens=publisher_tokens,
        vesting_start=0,
        vesting_duration=vesting_duration,
        vested_claimed=0,
        refunded=0,
        proceeds_withdrawn=False,
        state=STATE_ACTIVE,
    )
    log IIMOLauncher.Launched(
        imo_id=imo_id,
        model_id=model_id,
        publisher=msg.sender,
        token=token,
        supply=supply,
        price=price,
        soft_cap=soft_cap,
        hard_cap=hard_cap,
        sale_end=sale_end,
        publisher_tokens=publisher_tokens,
        vesting_duration=vesting_duration,
        redeem_share_bps=redeem_share_bps,
    )
    return imo_id


@external
@payable
@nonreentrant
def buy(imo_id: uint256) -> uint256:
    """
    @dev Buys tokens at the fixed price with all of `msg.value`, up to the hard
         cap; what would go over the cap is credited to `excess_of(caller)`.
         The tokens stay with the launcher until `claim_tokens` after a
         successful finalization.
    @notice Reverts with "imo: zero value", "imo: unknown imo",
            "imo: sale finalized", "imo: sale ended", "imo: hard cap reached"
            or "imo: value buys no tokens".
    @param imo_id The IMO id.
    @return uint256 The token base units bought.
    """
    assert msg.value != 0, "imo: zero value"
    self._check_exists(imo_id)
    assert self._imos[imo_id].state == STATE_ACTIVE, "imo: sale finalized"
    assert block.timestamp < self._imos[imo_id].sale_end, "imo: sale ended"
    price: uint256 = self._imos[imo_id].price
    raised: uint256 = self._imos[imo_id].raised
    remaining: uint256 = self._imos[imo_id].hard_cap - raised
    assert not self._sold_out(remaining, price), "imo: hard cap reached"

    paid: uint256 = min(msg.value, remaining)
    excess: uint256 = msg.value - paid
    tokens: uint256 = paid * UNIT // price
    assert tokens != 0, "imo: value buys no tokens"

    self._imos[imo_id].raised = raised + paid
    self._imos[imo_id].sold += tokens
    self._purchases[imo_id][msg.sender].paid += paid
    self._purchases[imo_id][msg.sender].tokens += tokens
    if excess != 0:
        self.excess_of[msg.sender] += excess
    log IIMOLauncher.Purchased(imo_id=imo_id, buyer=msg.sender, paid=paid, tokens=tokens, excess=excess)
    return tokens


@external
@nonreentrant
def finalize(imo_id: uint256) -> bool:
    """
    @dev Closes a sale once `sale_end` has passed or the hard cap is reached.
         Anyone may call it, whatever launcher the registry trusts by then.
         Success (raised >= soft cap, or the hard cap reached to within one
         base unit's price, and at least one token left for a buyer or the
         publisher): burns the unsold tokens, makes the token live, starts the
         publisher's vesting and locks the token in as the model's fee
         receiver (`registry.end_imo`). Failure: burns every token and
         releases the model for another launch; buyers then `refund`.
    @notice Reverts with "imo: unknown imo", "imo: already finalized" or
            "imo: sale still open".
    @param imo_id The IMO id.
    @return bool True if the IMO succeeded.
    """
    self._check_exists(imo_id)
    assert self._imos[imo_id].state == STATE_ACTIVE, "imo: already finalized"
    raised: uint256 = self._imos[imo_id].raised
    sold_out: bool = self._sold_out(self._imos[imo_id].hard_cap - raised, self._imos[imo_id].price)
    assert block.timestamp >= self._imos[imo_id].sale_end or sold_out, "imo: sale still open"

    token: address = self._imos[imo_id].token
    sold: uint256 = self._imos[imo_id].sold
    # A sale that cannot take another base unit reached its hard cap (to within
    # one unit's price), so it succeeds even if the soft cap equals the hard cap.
    # A sale must leave a holder: a zero-supply token would lock the model's
    # fee receiver to a token that can never take revenue.
    holders_left: bool = sold + self._imos[imo_id].publisher_tokens != 0
    succeeded: bool = (raised >= self._imos[imo_id].soft_cap or sold_out) and holders_left
    burned: uint256 = 0
    if succeeded:
        self._imos[imo_id].state = STATE_SUCCEEDED
        self._imos[imo_id].vesting_start = block.timestamp
        burned = self._imos[imo_id].tokens_for_sale - sold
    else:
        self._imos[imo_id].state = STATE_FAILED
        burned = staticcall IModelToken(token).totalSupply()
    log IIMOLauncher.Finalized(imo_id=imo_id, succeeded=succeeded, raised=raised, sold=sold, burned=burned)

    if burned != 0:
        extcall IModelToken(token).burn(burned)
    if succeeded:
        extcall IModelToken(token).go_live()
        extcall IDataRegistry(registry).end_imo(self._imos[imo_id].model_id, token)
    else:
        extcall IDataRegistry(registry).end_imo(self._imos[imo_id].model_id, empty(address))
    return succeeded


@external
@nonreentrant
def refund(imo_id: uint256) -> uint256:
    """
    @dev Pays the caller back exactly the wei it paid into a failed IMO.
    @notice Reverts with "imo: unknown imo", "imo: not failed" or
            "imo: nothing to refund".
    @param imo_id The IMO id.
    @return uint256 The wei refunded.
    """
    self._check_exists(imo_id)
    assert self._imos[imo_id].state == STATE_FAILED, "imo: not failed"
    amount: uint256 = self._purchases[imo_id][msg.sender].paid
    assert amount != 0 and not self._purchases[imo_id][msg.sender].refunded, "imo: nothing to refund"
    self._purchases[imo_id][msg.sender].refunded = True
    self._imos[imo_id].refunded += amount
    log IIMOLauncher.Refunded(imo_id=imo_id, buyer=msg.sender, amount=amount)
    raw_call(msg.sender, b"", value=amount)
    return amount


@external
@nonreentrant
def claim_tokens(imo_id: uint256) -> uint256:
    """
    @dev Transfers the caller's bought tokens after a successful IMO, with
         the revenue they accrued in custody since the token went live.
    @notice Reverts with "imo: unknown imo", "imo: not succeeded" or
            "imo: nothing to claim".
    @param imo_id The IMO id.
    @return uint256 The token base units transferred.
    """
    self._check_exists(imo_id)
    assert self._imos[imo_id].state == STATE_SUCCEEDED, "imo: not succeeded"
    amount: uint256 = self._purchases[imo_id][msg.sender].tokens
    assert amount != 0 and not self._purchases[imo_id][msg.sender].tokens_claimed, "imo: nothing to claim"
    self._purchases[imo_id][msg.sender].tokens_claimed = True
    log IIMOLauncher.TokensClaimed(imo_id=imo_id, buyer=msg.sender, amount=amount)
    assert extcall IModelToken(self._imos[imo_id].token).transfer(msg.sender, amount)
    return amount


@external
@nonreentrant
def withdraw_proceeds(imo_id: uint256) -> uint256:
    """
    @dev Pays the publisher everything a successful IMO raised.
    @notice Reverts with "imo: unknown imo", "imo: not the publisher",
            "imo: not succeeded", "imo: proceeds already withdrawn" or
            "imo: no proceeds".
    @param imo_id The IMO id.
    @return uint256 The wei paid.
    """
    self._check_exists(imo_id)
    assert msg.sender == self._imos[imo_id].publisher, "imo: not the publisher"
    assert self._imos[imo_id].state == STATE_SUCCEEDED, "imo: not succeeded"
    assert not self._imos[imo_id].proceeds_withdrawn, "imo: proceeds already withdrawn"
    amount: uint256 = self._imos[imo_id].raised
    assert amount != 0, "imo: no proceeds"
    self._imos[imo_id].proceeds_withdrawn = True
    log IIMOLauncher.ProceedsWithdrawn(imo_id=imo_id, publisher=msg.sender, amount=amount)
    raw_call(msg.sender, b"", value=amount)
    return amount


@external
@nonreentrant
def claim_vested(imo_id: uint256) -> uint256:
    """
    @dev Transfers to the publisher the part of its share vested so far and not
         yet claimed (linear from finalization over `vesting_duration`).
    @notice Reverts with "imo: unknown imo", "imo: not the publisher",
            "imo: not succeeded" or "imo: nothing vested".
    @param imo_id The IMO id.
    @return uint256 The token base units transferred.
    """
    self._check_exists(imo_id)
    assert msg.sender == self._imos[imo_id].publisher, "imo: not the publisher"
    assert self._imos[imo_id].state == STATE_SUCCEEDED, "imo: not succeeded"
    claimed: uint256 = self._imos[imo_id].vested_claimed
    amount: uint256 = self._vested(imo_id) - claimed
    assert amount != 0, "imo: nothing vested"
    self._imos[imo_id].vested_claimed = claimed + amount
    log IIMOLauncher.VestedClaimed(imo_id=imo_id, publisher=msg.sender, amount=amount)
    assert extcall IModelToken(self._imos[imo_id].token).transfer(msg.sender, amount)
    return amount


@external
@nonreentrant
def withdraw_excess() -> uint256:
    """
    @dev Pays the caller the wei it sent above hard caps.
    @notice Reverts with "imo: no excess" when nothing is credited.
    @return uint256 The wei paid.
    """
    amount: uint256 = self.excess_of[msg.sender]
    assert amount != 0, "imo: no excess"
    self.excess_of[msg.sender] = 0
    log IIMOLauncher.ExcessWithdrawn(account=msg.sender, amount=amount)
    raw_call(msg.sender, b"", value=amount)
    return amount


@external
@view
def imo(imo_id: uint256) -> IIMOLauncher.IMO:
    """
    @dev Returns an IMO's parameters and progress.
    @notice Reverts with "imo: unknown imo" for an id never launched.
    @param imo_id The IMO id.
    @return IMO The IMO record.
    """
    self._check_exists(imo_id)
    return self._imos[imo_id]


@external
@view
def purchased(imo_id: uint256, buyer: address) -> IIMOLauncher.Purchase:
    """
    @dev Returns what `buyer` paid and bought in an IMO, and whether its tokens
         were claimed or its payment refunded.
    @notice Reverts with "imo: unknown imo" for an id never launched.
    @param imo_id The IMO id.
    @param buyer The 20-byte buyer address.
    @return Purchase The purchase record.
    """
    self._check_exists(imo_id)
    return self._purchases[imo_id][buyer]


@external
@view
def can_finalize(imo_id: uint256) -> bool:
    """
    @dev Returns whether `finalize(imo_id)` would go through now.
    @param imo_id The IMO id.
    @return bool True if the sale is active and over (time or hard cap).
    """
    if self._imos[imo_id].state != STATE_ACTIVE:
        return False
    return block.timestamp >= self._imos[imo_id].sale_end or self._sold_out(
        self._imos[imo_id].hard_cap - self._imos[imo_id].raised, self._imos[imo_id].price
    )


@external
@view
def vested(imo_id: uint256) -> uint256:
    """
    @dev Returns the publisher's tokens vested so far (claimed or not); 0 before
         a successful finalization.
    @param imo_id The IMO id.
    @return uint256 The vested base units.
    """
    return self._vested(imo_id)


@external
@view
def claimable_vested(imo_id: uint256) -> uint256:
    """
    @dev Returns the publisher's vested tokens not claimed yet.
    @param imo_id The IMO id.
    @return uint256 The claimable base units.
    """
    return self._vested(imo_id) - self._imos[imo_id].vested_claimed


@internal
@view
def _check_exists(imo_id: uint256):
    """
    @dev Reverts for an IMO id that was never launched.
    @param imo_id The IMO id.
    """
    assert self._imos[imo_id].state != 0, "imo: unknown imo"


@internal
@pure
def _sold_out(remaining: uint256, price: uint256) -> bool:
    """
    @dev Returns whether `remaining` wei of hard cap cannot buy one base unit.
    @param remaining Wei left under the hard cap.
    @param price Wei per whole token.
    @return bool True if the sale is full.
    """
    return remaining * UNIT < price


@internal
@view
def _vested(imo_id: uint256) -> uint256:
    """
    @dev Linear vesting of the publisher's tokens from finalization.
    @param imo_id The IMO id.
    @return uint256 The vested base units.
    """
    if self._imos[imo_id].state != STATE_SUCCEEDED:
        return 0
    total: uint256 = self._imos[imo_id].publisher_tokens
    duration: uint256 = self._imos[imo_id].vesting_duration
    elapsed: uint256 = block.timestamp - self._imos[imo_id].vesting_start
    if elapsed >= duration:
        return total
    return total * elapsed // duration
