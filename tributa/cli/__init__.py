"""The `tributa` command line. Every error is one line on stderr and a non-zero exit."""

from __future__ import annotations

import faulthandler
import signal
import sys
from functools import cached_property
from pathlib import Path

import click

from tributa.config import Settings
from tributa.errors import TributaError


class CliContext:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    @cached_property
    def contracts(self):
        from tributa.chain.contracts import load_contracts

        return load_contracts(self.settings)

    def wait_for_chain(self, wait_s: float, log) -> None:
        """Bind the contracts once the node answers, waiting up to `wait_s` for it (services)."""
        from tributa.chain.connection import wait_for_node
        from tributa.chain.contracts import load_contracts

        if wait_s > 0 and "contracts" not in self.__dict__:
            self.__dict__["contracts"] = load_contracts(
                self.settings, wait_for_node(self.settings.rpc_url, wait_s, log)
            )

    @cached_property
    def store(self):
        from tributa.store import open_store

        return open_store(self.settings.store_dir)

    def signer(self, account_spec: str | None, default_role: str):
        from tributa.chain.accounts import load_account
        from tributa.chain.tx import Signer

        contracts = self.contracts
        return Signer(contracts.w3, load_account(account_spec, contracts.chain_id, default_role))

    def content_api(self, account=None):
        """The oracle's content API (TRIBUTA_ORACLE_URL), signing with `account` when given."""
        from tributa.content_api import ContentApi

        return ContentApi(self.settings.oracle_url, self.contracts.chain_id, self.contracts.escrow.address, account)

    def upload(self, signer, root: str, purpose: str) -> dict:
        """Upload `root` from this machine's store to the oracle, for `purpose` (task:N, dataset:N,
        model:N), saying so on stderr. Returns {"uploaded": bool, ...}; a failure is a warning,
        since what was registered on-chain stands: the command to try again is printed."""
        from tributa.content_api import ContentApiError

        shown = sys.stderr.isatty()  # progress for a person; a script's stderr stays for errors
        if shown:
            click.echo(f"uploading {root} to the oracle at {self.settings.oracle_url} ({purpose})…", err=True)
        try:
            with self.content_api(signer.account) as api:
                answer = api.upload(self.store, root, purpose)
        except (ContentApiError, TributaError) as exc:
            click.echo(f"warning: {exc}; try again with `tributa upload {root} --for {purpose}`", err=True)
            return {"uploaded": False, "upload_error": str(exc)}
        if shown and answer.get("bytes") is None:
            click.echo("  the oracle already holds it", err=True)
        elif shown:
            click.echo(
                f"  uploaded {answer['bytes']:,} bytes in {answer['blocks']} blocks; "
                f"quota {answer['quota_used_bytes']:,} of {answer['quota_bytes']:,} bytes used",
                err=True,
            )
        return {"uploaded": True, **answer}


pass_ctx = click.make_pass_decorator(CliContext)

# Roles on their own machines send what they register to the oracle; --no-upload where the
# oracle reads this machine's store itself (one data dir) or a shared Kubo node holds it.
upload_option = click.option(
    "--upload/--no-upload",
    "upload",
    default=True,
    show_default=True,
    help="send the content to the oracle's content API (TRIBUTA_ORACLE_URL)",
)

# For the long-running services: started before their node (a reboot), they wait for it.
node_wait_option = click.option(
    "--node-wait-s",
    type=click.FloatRange(0),
    default=300.0,
    show_default=True,
    help="how long to wait for the chain node to answer at start (0: fail at once)",
)


def account_option(role: str):
    return click.option(
        "--account",
        "account_spec",
        default=None,
        help=f"env:VAR, keyfile:PATH or dev:ROLE (default: TRIBUTA_PRIVATE_KEY, or dev:{role} on a local chain)",
    )


class OneLineErrors(click.Group):
    """Turns TributaError (and anything from a contract) into `error: …`, exit 1."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except TributaError as exc:
            raise click.ClickException(str(exc)) from None


@click.group(cls=OneLineErrors)
@click.option(
    "--rpc-url", envvar="TRIBUTA_RPC_URL", default=None, help="Ethereum JSON-RPC URL (default http://127.0.0.1:8545)"
)
@click.option(
    "--data-dir",
    envvar="TRIBUTA_DATA_DIR",
    type=click.Path(path_type=Path),
    default=None,
    help="state and content store (default .tributa)",
)
@click.option(
    "--deployments", "deployments_dir", envvar="TRIBUTA_DEPLOYMENTS", type=click.Path(path_type=Path), default=None
)
@click.option(
    "--oracle-url",
    envvar="TRIBUTA_ORACLE_URL",
    default=None,
    help="the oracle's job API (default http://127.0.0.1:8700)",
)
@click.version_option(package_name="tributa", message="tributa %(version)s")
@click.pass_context
def cli(ctx: click.Context, rpc_url, data_dir, deployments_dir, oracle_url) -> None:
    """Tributa: pay the compute, models and data behind every AI answer."""
    settings = Settings().with_overrides(
        rpc_url=rpc_url, data_dir=data_dir, deployments_dir=deployments_dir, oracle_url=oracle_url
    )
    ctx.obj = CliContext(settings)


# The services' command groups (`tributa oracle`, `tributa agent`) live in their own packages
# (oracle/cli.py, compute_agent/cli.py), above this one: pyproject.toml names them as entry points.
COMMAND_ENTRY_POINTS = "tributa.commands"


def _mount() -> None:
    from importlib.metadata import entry_points

    from tributa.cli import account, content, dashboard, dataset, imo, model, task, verify
    from tributa.store.cli import store

    groups = [
        task.task,
        model.model,
        dataset.dataset,
        dataset.royalties,
        imo.imo,
        account.account,
        store,
        content.upload,
        dashboard.dashboard,
        verify.verify,
    ]
    services = sorted(entry_points(group=COMMAND_ENTRY_POINTS), key=lambda ep: ep.name)
    if not services:
        raise SystemExit(
            "tributa: the oracle and agent commands are not installed: run `make setup` "
            "(pip install -e . registers them)"
        )
    for group in groups + [ep.load() for ep in services]:
        cli.add_command(group)


_mount()


def main() -> None:
    # `kill -USR1 PID` prints every thread's stack to stderr: how a stuck oracle or agent is read.
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    try:
        cli(prog_name="tributa")
    except KeyboardInterrupt:
        sys.exit(130)
