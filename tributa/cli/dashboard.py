"""`tributa dashboard`: the oracle's /ui pages served on their own, for any deployment, from the
chain and the oracle's HTTP API alone (tributa/dashboard/)."""

from __future__ import annotations

from pathlib import Path

import click

from tributa.cli import CliContext, pass_ctx
from tributa.errors import TributaError


@click.command("dashboard")
@click.option(
    "--rpc-url", envvar="TRIBUTA_RPC_URL", default=None, help="the chain's JSON-RPC URL (as `tributa --rpc-url`)"
)
@click.option(
    "--deployments",
    "deployments_dir",
    envvar="TRIBUTA_DEPLOYMENTS",
    type=click.Path(path_type=Path),
    default=None,
    help="the folder holding the deployment's <chain id>.json",
)
@click.option(
    "--oracle-url",
    envvar="TRIBUTA_ORACLE_URL",
    default=None,
    help="the oracle's API: task and agent state, health, metrics and content (default http://127.0.0.1:8700)",
)
@click.option("--host", default="127.0.0.1", show_default=True, help="address to serve on")
@click.option("--port", type=click.IntRange(1, 65535), default=8710, show_default=True)
@click.option(
    "--ui-token",
    envvar="TRIBUTA_UI_TOKEN",
    default=None,
    help="access token; required with a --host beyond loopback (prefer the env var: a flag shows in ps)",
)
@pass_ctx
def dashboard(ctx, rpc_url, deployments_dir, oracle_url, host, port, ui_token) -> None:
    """Serve the read-only dashboard (tasks, agents, datasets, models and IMOs, the oracle's health)."""
    import uvicorn

    from tributa.dashboard.data import Dashboard
    from tributa.dashboard.sources import HttpOracle
    from tributa.dashboard.web import Access, standalone_app

    access = Access(host, ui_token or None)
    if access.token is None and not access.open:
        raise TributaError(
            f"--host {host} is beyond loopback: give the dashboard a token (--ui-token or TRIBUTA_UI_TOKEN)"
        )
    ctx = CliContext(
        ctx.settings.with_overrides(rpc_url=rpc_url, deployments_dir=deployments_dir, oracle_url=oracle_url)
    )
    oracle = HttpOracle(ctx.settings.oracle_url, ctx.contracts)
    app = standalone_app(Dashboard(ctx.contracts, oracle), access)
    click.echo(
        f"dashboard of chain {ctx.contracts.chain_id} (oracle {ctx.settings.oracle_url}) on http://{host}:{port}/ui"
        + (" (token required)" if access.token else "")
    )
    try:
        uvicorn.run(app, host=host, port=port, log_level="warning")
    finally:
        oracle.close()
