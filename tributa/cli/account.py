"""`tributa account …`: credited balances in the escrow, and withdrawing them."""

from __future__ import annotations

import click

from tributa.chain.accounts import checksum
from tributa.cli import account_option, pass_ctx
from tributa.cli.format import emit_json, eth, json_option
from tributa.errors import TributaError


@click.group()
def account() -> None:
    """Balances credited by the escrow (fees, refunds) and withdrawals (pull payments)."""


@account.command("balance")
@click.argument("address", required=False)
@account_option("requester")
@pass_ctx
def balance(ctx, address, account_spec) -> None:
    """Credited escrow balance and wallet balance of ADDRESS (default: your account)."""
    if address is None:
        address = ctx.signer(account_spec, "requester").address
    address = checksum(address)
    credited = ctx.contracts.escrow.functions.balance_of(address).call()
    wallet = ctx.contracts.w3.eth.get_balance(address)
    click.echo(f"{address}: credited {eth(credited)}, wallet {eth(wallet)}")


@account.command("withdraw")
@account_option("requester")
@pass_ctx
def withdraw(ctx, account_spec) -> None:
    """Withdraw your whole credited balance from the escrow."""
    signer = ctx.signer(account_spec, "requester")
    credited = ctx.contracts.escrow.functions.balance_of(signer.address).call()
    if credited == 0:
        raise TributaError(f"{signer.address} has nothing to withdraw")
    result = signer.transact(ctx.contracts.escrow.functions.withdraw(), action="withdraw")
    click.echo(f"withdrew {eth(credited)} to {signer.address} (tx {result.tx_hash})")


@account.command("history")
@click.argument("address", required=False)
@json_option
@account_option("requester")
@pass_ctx
def history(ctx, address, as_json, account_spec) -> None:
    """ADDRESS's tasks, payouts, refunds, claims and slashes, from the contracts' events (default:
    your account), oldest first."""
    from tributa.history import account_history

    address = checksum(address) if address else ctx.signer(account_spec, "requester").address
    entries = account_history(ctx.contracts, address)
    if as_json:
        emit_json({"address": address, "entries": [e.to_json() for e in entries]})
        return
    if not entries:
        click.echo(f"{address}: no tasks, payouts, claims or slashes on this deployment")
        return
    click.echo(f"{address}: {len(entries)} events")
    for e in entries:
        task = f" task {e.task_id}" if e.task_id is not None else ""
        click.echo(f"  block {e.block:>8}  {e.kind:<16}{task:<10} {eth(e.amount_wei):>22}  {e.detail}")
