"""`tributa imo …`: Initial Model Offerings — tokens whose holders share a model's revenue."""

from __future__ import annotations

import click

from tributa import imo as imo_lib
from tributa.cli import account_option, pass_ctx
from tributa.cli.format import emit_json, eth, json_option, parse_eth, utc_time, wei


@click.group()
def imo() -> None:
    """Launch, buy and claim model tokens (ERC-20 + ERC-7641-style revenue share)."""


@imo.command("launch")
@click.option("--model", "model_id", type=int, required=True)
@click.option("--name", required=True, help="token name (≤ 25 characters)")
@click.option("--symbol", required=True, help="token symbol (≤ 5 characters)")
@click.option("--supply", type=click.IntRange(1), required=True, help="whole tokens minted")
@click.option("--price", required=True, help="ETH per whole token")
@click.option("--soft-cap", required=True, help="ETH; below it at the end, every buyer is refunded")
@click.option("--hard-cap", required=True, help="ETH; the most the sale takes")
@click.option("--duration-s", type=click.IntRange(60), default=7 * 24 * 3600, show_default=True)
@click.option("--publisher-share-bps", type=click.IntRange(0, 9999), default=2000, show_default=True)
@click.option("--vesting-s", type=click.IntRange(0), default=180 * 24 * 3600, show_default=True)
@click.option(
    "--redeem-share-bps",
    type=click.IntRange(0, 10_000),
    default=0,
    show_default=True,
    help="share of revenue set aside for holders who burn",
)
@account_option("publisher")
@pass_ctx
def launch(
    ctx,
    model_id,
    name,
    symbol,
    supply,
    price,
    soft_cap,
    hard_cap,
    duration_s,
    publisher_share_bps,
    vesting_s,
    redeem_share_bps,
    account_spec,
) -> None:
    """Open a fixed-price sale of MODEL's token (only its registered publisher)."""
    signer = ctx.signer(account_spec, "publisher")
    imo_id, token, tx = imo_lib.launch(
        ctx.contracts,
        signer,
        model_id,
        name,
        symbol,
        supply,
        parse_eth(price),
        parse_eth(soft_cap),
        parse_eth(hard_cap),
        duration_s,
        publisher_share_bps,
        vesting_s,
        redeem_share_bps,
    )
    click.echo(f"IMO {imo_id} launched for model {model_id}: token {symbol} at {token} (gas {tx.gas_used})")


@imo.command("buy")
@click.argument("imo_id", type=int)
@click.option("--eth", "amount", required=True, help="ETH to spend")
@account_option("buyer")
@pass_ctx
def buy(ctx, imo_id, amount, account_spec) -> None:
    """Buy IMO_ID's token at its fixed price (beyond the hard cap, the excess is credited back)."""
    signer = ctx.signer(account_spec, "buyer")
    tokens, tx = imo_lib.buy(ctx.contracts, signer, imo_id, parse_eth(amount))
    click.echo(f"bought {_tokens(tokens)} tokens of IMO {imo_id} (gas {tx.gas_used})")


@imo.command("finalize")
@click.argument("imo_id", type=int)
@account_option("buyer")
@pass_ctx
def finalize(ctx, imo_id, account_spec) -> None:
    """Close the sale once it ended or sold out (anyone may)."""
    imo_lib.finalize(ctx.contracts, ctx.signer(account_spec, "buyer"), imo_id)
    click.echo(f"IMO {imo_id} is now {imo_lib.read_imo(ctx.contracts, imo_id).state}")


@imo.command("status")
@click.argument("imo_id", type=int)
@json_option
@pass_ctx
def status(ctx, imo_id, as_json) -> None:
    """Sale progress, holders and revenue to date."""
    view = imo_lib.read_imo(ctx.contracts, imo_id)
    token = imo_lib.token_contract(ctx.contracts, view.token)
    now = ctx.contracts.w3.eth.get_block("latest")["timestamp"]
    symbol = token.functions.symbol().call()
    pending = ctx.contracts.escrow.functions.balance_of(view.token).call()
    revenue = token.functions.total_revenue_in().call()
    custody = token.functions.balanceOf(token.functions.custodian().call()).call()
    accrued = token.functions.accrued_in_custody(custody).call() if custody else 0
    roles = {view.publisher: "publisher", imo_lib.launcher(ctx.contracts).address: "IMO launcher"}
    holders = imo_lib.holders(ctx.contracts, view.token)
    if as_json:
        emit_json(
            {
                "imo_id": imo_id,
                "model_id": view.model_id,
                "state": view.state,
                "sale_ended": now >= view.sale_end,  # an "active" sale past its end awaits `imo finalize`
                "sale_end": view.sale_end,
                "token": view.token,
                "symbol": symbol,
                "publisher": view.publisher,
                "price_wei": wei(view.price),
                "soft_cap_wei": wei(view.soft_cap),
                "hard_cap_wei": wei(view.hard_cap),
                "raised_wei": wei(view.raised),
                "sold_units": wei(view.sold),
                "tokens_for_sale_units": wei(view.tokens_for_sale),
                "publisher_tokens_units": wei(view.publisher_tokens),
                "vested_claimed_units": wei(view.vested_claimed),
                "vesting_start": view.vesting_start,
                "vesting_duration": view.vesting_duration,
                "proceeds_withdrawn": view.proceeds_withdrawn,
                "revenue_wei": wei(revenue),
                "revenue_in_escrow_wei": wei(pending),
                "holders": [
                    {
                        "address": h.address,
                        "role": roles.get(h.address),
                        "balance_units": wei(h.balance),
                        "claimable_wei": wei(h.claimable),
                    }
                    for h in holders
                ],
                "custody_units": wei(custody),
                "custody_accrued_wei": wei(accrued),
            }
        )
        return
    click.echo(f"IMO {imo_id} for model {view.model_id}: {_sale_state(view, now)}; token {symbol} at {view.token}")
    click.echo(
        f"  raised {eth(view.raised)} of soft cap {eth(view.soft_cap)} / hard cap {eth(view.hard_cap)}; "
        f"sold {_tokens(view.sold)} of {_tokens(view.tokens_for_sale)} tokens"
    )
    click.echo(f"  revenue to date {eth(revenue)}" + (f" (+{eth(pending)} waiting in the escrow)" if pending else ""))
    for h in holders:
        label = f" ({roles[h.address]})" if h.address in roles else ""
        click.echo(f"  holder {h.address}{label}: {_tokens(h.balance)} tokens, claimable {eth(h.claimable)}")
    if custody:
        click.echo(
            f"  in custody for buyers and vesting: {_tokens(custody)} tokens, {eth(accrued)} accrued for their owners"
        )


def _sale_state(view: imo_lib.ImoView, now: int) -> str:
    """The state with the sale's end: 'active, ends …', 'ended, not finalized (…)', or the final state."""
    if view.state != "active":
        return f"{view.state} (sale ended {utc_time(view.sale_end)})"
    if now >= view.sale_end:
        return f"ended {utc_time(view.sale_end)}, not finalized (anyone may `tributa imo finalize {view.imo_id}`)"
    return f"active, sale ends {utc_time(view.sale_end)} (in {_duration(view.sale_end - now)})"


def _duration(seconds: int) -> str:
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    return f"{days}d {hours}h" if days else f"{hours}h {rest // 60}m" if hours else f"{rest // 60}m {rest % 60}s"


_tokens = imo_lib.whole_tokens


@imo.command("claim")
@click.argument("imo_id", type=int)
@account_option("buyer")
@pass_ctx
def claim(ctx, imo_id, account_spec) -> None:
    """Collect your bought tokens (after a successful sale) and your share of the model's revenue."""
    signer = ctx.signer(account_spec, "buyer")
    tokens, wei = imo_lib.claim(ctx.contracts, signer, imo_id)
    click.echo(f"claimed {_tokens(tokens)} tokens and {eth(wei)} of revenue to {signer.address}")


@imo.command("refund")
@click.argument("imo_id", type=int)
@account_option("buyer")
@pass_ctx
def refund(ctx, imo_id, account_spec) -> None:
    """Get your ETH back from a sale that missed its soft cap."""
    signer = ctx.signer(account_spec, "buyer")
    signer.transact(imo_lib.launcher(ctx.contracts).functions.refund(imo_id), action="refund")
    click.echo(f"refunded your purchase in IMO {imo_id}")


@imo.command("withdraw-excess")
@account_option("buyer")
@pass_ctx
def withdraw_excess(ctx, account_spec) -> None:
    """Take back what you sent above a sale's hard cap (credited at `imo buy`)."""
    signer = ctx.signer(account_spec, "buyer")
    wei, tx = imo_lib.withdraw_excess(ctx.contracts, signer)
    click.echo(f"withdrew {eth(wei)} of excess to {signer.address} (tx {tx.tx_hash})")


@imo.command("withdraw-proceeds")
@click.argument("imo_id", type=int)
@account_option("publisher")
@pass_ctx
def withdraw_proceeds(ctx, imo_id, account_spec) -> None:
    """Publisher: take what a successful sale raised."""
    signer = ctx.signer(account_spec, "publisher")
    wei, tx = imo_lib.withdraw_proceeds(ctx.contracts, signer, imo_id)
    click.echo(f"withdrew the {eth(wei)} IMO {imo_id} raised to {signer.address} (tx {tx.tx_hash})")


@imo.command("claim-vested")
@click.argument("imo_id", type=int)
@account_option("publisher")
@pass_ctx
def claim_vested(ctx, imo_id, account_spec) -> None:
    """Publisher: take the part of your token share vested so far."""
    signer = ctx.signer(account_spec, "publisher")
    amount, tx, view = imo_lib.claim_vested(ctx.contracts, signer, imo_id)
    left = view.publisher_tokens - view.vested_claimed - amount
    click.echo(
        f"claimed {_tokens(amount)} vested tokens of IMO {imo_id} to {signer.address}; "
        f"{_tokens(left)} still vesting (tx {tx.tx_hash})"
    )
