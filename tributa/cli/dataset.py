"""`tributa dataset …` and `tributa royalties …`: data creators and their contributors."""

from __future__ import annotations

from pathlib import Path

import click

from tributa.cli import account_option, pass_ctx, upload_option
from tributa.cli.format import emit_json, eth, json_option, progress_bar, quiet_option, wei
from tributa.datasets import DatasetInfo, list_datasets, parse_contributors, read_dataset, register_dataset
from tributa.errors import TributaError


@click.group()
def dataset() -> None:
    """Datasets: content, contributors and their shares, terms."""


@dataset.command("register")
@click.argument("path", type=click.Path(path_type=Path))
@click.option(
    "--contributor", "contributors", multiple=True, required=True, help="ADDR=BPS, summing to 10000 (repeatable)"
)
@click.option("--terms", default="CC-BY-4.0; royalties per Tributa attribution", show_default=True)
@click.option("--name", default=None, help="a name for the metadata (default: the file or folder name)")
@click.option("--no-index", is_flag=True, help="skip building the attribution index here (the oracle builds it)")
@upload_option
@quiet_option
@account_option("creator")
@pass_ctx
def register(ctx, path, contributors, terms, name, no_index, upload, quiet, account_spec) -> None:
    """Check PATH (UTF-8 text), store it, index it for attribution, and register it.

    Registration takes two transactions: a commitment that hides the content's
    digest, then, a block later, the reveal. Nobody who sees the reveal can
    take the dataset: the commitment is bound to your account."""
    addrs, shares = parse_contributors(contributors)
    signer = ctx.signer(account_spec, "creator")
    index = None
    if not no_index:

        def index(content_cid: str, text: str) -> int:
            # The tokenizer and embedder load only now, after register_dataset has checked the
            # file (an empty or non-UTF-8 one is refused in a moment, not after the models load).
            click.echo(f"indexing {len(text):,} characters for attribution…", err=True)
            return _attribution_indexes(ctx.settings).build(content_cid, text).token_count

    registered = register_dataset(
        ctx.contracts,
        signer,
        ctx.store,
        path,
        addrs,
        shares,
        terms,
        name,
        index,
        progress_bar(f"adding {path}", quiet),
        on_step=lambda message: click.echo(message, err=True),
    )
    click.echo(f"dataset {registered.dataset_id} registered: {registered.content_cid}")
    click.echo(f"  {len(addrs)} contributors, {registered.tokens_indexed:,} tokens indexed")
    click.echo(f"  commit tx {registered.commit_tx.tx_hash}, reveal tx {registered.tx.tx_hash}")
    # The oracle indexes the dataset for attribution once its content arrives.
    for root in (registered.content_cid, registered.metadata_cid) if upload else ():
        ctx.upload(signer, root, f"dataset:{registered.dataset_id}")


# The oracle's attribution indexes (oracle/attribution), named in pyproject.toml: the oracle
# package sits above this one, so it is found by entry point, not imported.
INDEXES_ENTRY_POINT = "tributa.attribution_indexes"


def _attribution_indexes(settings):
    from importlib.metadata import entry_points

    found = list(entry_points(group=INDEXES_ENTRY_POINT))
    if not found:
        raise TributaError("the attribution indexes are not installed (run `make setup`), or pass --no-index")
    return found[0].load()(settings)


def _dataset_doc(d: DatasetInfo) -> dict:
    """A dataset as --json prints it (`dataset list`, `dataset show`)."""
    from tributa.store import cid as cidlib

    return {
        "dataset_id": d.dataset_id,
        "content_cid": d.content_cid,
        "metadata_cid": str(cidlib.digest_to_cid(d.metadata_digest)),
        "owner": d.owner,
        "version": d.version,
        "contributor_count": d.contributor_count,
        "terms": d.terms,
        "active": d.active,
    }


@dataset.command("list")
@json_option
@pass_ctx
def list_cmd(ctx, as_json) -> None:
    """Every registered dataset."""
    datasets = list_datasets(ctx.contracts)
    if as_json:
        emit_json({"datasets": [_dataset_doc(d) for d in datasets]})
        return
    if not datasets:
        click.echo("no datasets registered")
    for d in datasets:
        status = "active" if d.active else "inactive"
        click.echo(
            f"{d.dataset_id:>3}  {d.content_cid}  {status:<8} v{d.version}  {d.contributor_count} contributors  owner {d.owner}"
        )


@dataset.command("show")
@click.argument("dataset_id", type=int)
@json_option
@pass_ctx
def show(ctx, dataset_id, as_json) -> None:
    """A dataset's content, owner, terms, contributors and royalties credited."""
    from tributa.royalties import contributor_sets

    d = read_dataset(ctx.contracts, dataset_id)
    contributors, shares = contributor_sets(ctx.contracts).get((d.dataset_id, d.version), ([], []))
    revenue = ctx.contracts.vault.functions.revenue(d.dataset_id, d.version).call()
    if as_json:
        emit_json(
            {
                **_dataset_doc(d),
                "contributors": [
                    {"address": a, "shares_bps": bps} for a, bps in zip(contributors, shares, strict=False)
                ],
                "revenue_wei": wei(revenue),
            }
        )
        return
    click.echo(f"dataset {d.dataset_id}: {d.content_cid} ({'active' if d.active else 'inactive'})")
    click.echo(f"  owner {d.owner}, version {d.version}, terms: {d.terms}")
    for account, bps in zip(contributors, shares, strict=False):
        click.echo(f"  {account}  {bps / 100:6.2f}%")
    click.echo(f"  royalties credited to this version: {eth(revenue)}")


@dataset.command("transfer")
@click.argument("dataset_id", type=int)
@click.argument("new_owner")
@account_option("creator")
@pass_ctx
def transfer(ctx, dataset_id, new_owner, account_spec) -> None:
    """Offer DATASET_ID to NEW_OWNER, who takes it with `tributa dataset accept`."""
    from tributa.chain.accounts import checksum

    d = read_dataset(ctx.contracts, dataset_id)
    signer = ctx.signer(account_spec, "creator")
    if d.owner != signer.address:
        raise TributaError(f"dataset {dataset_id} is owned by {d.owner}, not by {signer.address}")
    new_owner = checksum(new_owner)
    result = signer.transact(
        ctx.contracts.registry.functions.transfer_dataset(dataset_id, new_owner), action="transfer_dataset"
    )
    click.echo(
        f"dataset {dataset_id} offered to {new_owner} (it takes it with `tributa dataset accept {dataset_id}`), tx {result.tx_hash}"
    )


@dataset.command("accept")
@click.argument("dataset_id", type=int)
@account_option("creator")
@pass_ctx
def accept(ctx, dataset_id, account_spec) -> None:
    """Take ownership of DATASET_ID after its owner offered it to you."""
    read_dataset(ctx.contracts, dataset_id)
    signer = ctx.signer(account_spec, "creator")
    pending = ctx.contracts.registry.functions.dataset_pending_owner(dataset_id).call()
    if pending != signer.address:
        raise TributaError(f"dataset {dataset_id} is not offered to {signer.address}")
    result = signer.transact(ctx.contracts.registry.functions.accept_dataset(dataset_id), action="accept_dataset")
    click.echo(f"dataset {dataset_id} is now owned by {signer.address}, tx {result.tx_hash}")


@click.group()
def royalties() -> None:
    """Royalties owed to data contributors (pull payments from the RoyaltyVault)."""


@royalties.command("show")
@click.argument("address", required=False)
@json_option
@account_option("creator")
@pass_ctx
def royalties_show(ctx, address, as_json, account_spec) -> None:
    """What ADDRESS (default: your account) can claim, per dataset version."""
    from tributa.chain.accounts import checksum
    from tributa.royalties import shares_of

    address = checksum(address) if address else ctx.signer(account_spec, "creator").address
    shares = shares_of(ctx.contracts, address)
    total = sum(s.claimable for s in shares)
    if as_json:
        emit_json(
            {
                "address": address,
                "shares": [
                    {
                        "dataset_id": s.dataset_id,
                        "version": s.version,
                        "shares_bps": s.shares_bps,
                        "claimable_wei": wei(s.claimable),
                        "claimed_wei": wei(s.claimed),
                    }
                    for s in shares
                ],
                "total_claimable_wei": wei(total),
            }
        )
        return
    if not shares:
        click.echo(f"{address} contributes to no registered dataset")
        return
    for s in shares:
        click.echo(
            f"dataset {s.dataset_id} v{s.version}: share {s.shares_bps / 100:.2f}%, claimable {eth(s.claimable)}, claimed {eth(s.claimed)}"
        )
    click.echo(f"total claimable: {eth(total)}")


@royalties.command("claim")
@click.option(
    "--for",
    "for_address",
    default=None,
    help="claim for this contributor: the wei goes to it, you pay the gas (it may hold no ETH)",
)
@account_option("creator")
@pass_ctx
def royalties_claim(ctx, for_address, account_spec) -> None:
    """Claim everything owed to your account (or to --for ADDRESS), across datasets and tasks."""
    from tributa.chain.accounts import checksum
    from tributa.errors import InsufficientFunds
    from tributa.royalties import claim_all

    account = checksum(for_address) if for_address else None
    signer = ctx.signer(account_spec, "creator")
    try:
        total, results = claim_all(ctx.contracts, signer, account)
    except InsufficientFunds as exc:
        raise TributaError(
            f"{exc}, or let any funded account pay the gas: `tributa royalties claim --for {account or signer.address}`"
        ) from None
    click.echo(
        f"claimed {eth(total)} to {account or signer.address} in {len(results)} transaction(s)"
        + (f", gas paid by {signer.address}" if account and account != signer.address else "")
    )
