"""`tributa upload`: send content this machine's store holds to the oracle's content API."""

from __future__ import annotations

import click

from tributa.cli import account_option, pass_ctx
from tributa.cli.format import emit_json, json_option
from tributa.errors import TributaError


@click.command("upload")
@click.argument("root")
@click.option(
    "--for",
    "purpose",
    required=True,
    metavar="KIND:ID",
    help="what the chain registers it for, by your account: task:ID (its input), dataset:ID, model:ID",
)
@json_option
@account_option("requester")
@pass_ctx
def upload(ctx, root, purpose, as_json, account_spec) -> None:
    """Upload ROOT (a CID in this machine's store) to the oracle; the roles' commands do this
    themselves, so this is for trying again after a failed upload."""
    if not ctx.store.has(root):
        raise TributaError(f"{root} is not in this machine's store ({ctx.settings.store_dir})")
    result = ctx.upload(ctx.signer(account_spec, "requester"), root, purpose)
    if as_json:
        emit_json({"root": root, "for": purpose, **result})
    if not result["uploaded"]:
        raise SystemExit(1)
