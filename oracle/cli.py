"""`tributa oracle …`: run the oracle, or summarise its state."""

from __future__ import annotations

import logging
import math
from dataclasses import replace
from decimal import Decimal
from pathlib import Path

import click

from oracle.jobs import ACCEPT_WINDOW_S
from oracle.tx.policy import MIN_BUMP_BPS, TxPolicy
from tributa.cli import account_option, node_wait_option, pass_ctx
from tributa.cli.format import emit_json, json_option
from tributa.errors import TributaError

_TX_DEFAULTS = TxPolicy()
# A bump above 100% is likelier a basis-point figure (1250) typed as a percentage than a wish.
_MAX_BUMP_PCT = 100


def _bump_bps(ctx: click.Context, param: click.Parameter, pct: float) -> int:
    """--tx-bump-pct as basis points, refused outside [12.5, 100]."""
    if not MIN_BUMP_BPS / 100 <= pct <= _MAX_BUMP_PCT:
        raise click.BadParameter(
            f"{pct:g} is not between {MIN_BUMP_BPS / 100:g} and {_MAX_BUMP_PCT}: a replacement must raise the fees "
            f"by at least {MIN_BUMP_BPS / 100:g}% or nodes may refuse it (geth wants 10%)",
            ctx,
            param,
        )
    return round(pct * 100)


def _finite(ctx: click.Context, param: click.Parameter, value: float | None) -> float | None:
    """Refuses nan and inf, which click's float ranges let through."""
    if value is not None and not math.isfinite(value):
        raise click.BadParameter(f"{value} is not a number of seconds or gwei", ctx, param)
    return value


def _gwei_as_wei(ctx: click.Context, param: click.Parameter, gwei: float | None) -> int | None:
    """--tx-fee-cap-gwei in wei, refused unless at least 1 wei."""
    if _finite(ctx, param, gwei) is None:
        return None
    wei = int(Decimal(str(gwei)) * 10**9)
    if wei < 1:
        raise click.BadParameter(f"{gwei:g} gwei is less than 1 wei: give a positive fee cap", ctx, param)
    return wei


@click.group()
def oracle() -> None:
    """The oracle: ingests tasks, serves jobs, verifies, attributes and settles."""


@oracle.command("run")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=int, default=8700, show_default=True)
@click.option(
    "--db-url", envvar="TRIBUTA_DB_URL", default=None, help="SQLAlchemy URL (default: SQLite in the data dir)"
)
@click.option("--lease-s", type=float, default=120.0, show_default=True, help="seconds an agent holds a job")
@click.option(
    "--accept-window-s",
    type=click.FloatRange(0, min_open=True),
    callback=_finite,
    default=ACCEPT_WINDOW_S,
    show_default=True,
    help="seconds an offered job waits for the agent's signed acceptance before it returns to the pool "
    "(never longer than --lease-s)",
)
@click.option("--agent-fee-bps", type=click.IntRange(0, 10_000), default=5000, show_default=True)
@click.option("--no-attribution", is_flag=True, help="settle without computing attribution")
@click.option(
    "--model-dir",
    "model_dirs",
    multiple=True,
    type=click.Path(path_type=Path),
    help="the oracle's own copy of a model or adapter, for re-execution (repeatable)",
)
@click.option(
    "--spot-check-fraction",
    type=click.FloatRange(0, 1),
    default=0.0,
    show_default=True,
    help="share of k=1 tasks the oracle re-runs itself (needs --model-dir)",
)
@click.option(
    "--max-upload-mb",
    type=click.IntRange(1, 4096),
    default=256,
    show_default=True,
    help="largest content upload (one CAR) the content API takes",
)
@click.option(
    "--upload-quota-mb",
    type=click.IntRange(1, 10**7),
    default=2048,
    show_default=True,
    help="bytes of uploads each account may store",
)
@click.option(
    "--ui-token",
    envvar="TRIBUTA_UI_TOKEN",
    default=None,
    help="the dashboard's (/ui) access token; required with a --host beyond loopback (prefer the env var: "
    "a flag shows in ps)",
)
@click.option(
    "--confirmations",
    type=click.IntRange(0),
    default=None,
    help="blocks a log must be buried under before the oracle acts on it (default: TRIBUTA_CONFIRMATIONS, else 0)",
)
@click.option(
    "--tx-fee-cap-gwei",
    "tx_fee_cap_wei",
    type=click.FloatRange(0, min_open=True),
    callback=_gwei_as_wei,
    default=None,
    help="the highest fee per gas the oracle's transactions may pay (maxFeePerGas, or gasPrice on legacy "
    "chains), in gwei: fee bumps stop there [default: no cap]",
)
@click.option(
    "--tx-bump-pct",
    "tx_bump_bps",
    type=float,
    callback=_bump_bps,
    default=_TX_DEFAULTS.bump_bps / 100,
    show_default=True,
    help=f"how much a fee bump raises a stuck transaction's fees, in percent ({MIN_BUMP_BPS / 100:g} to "
    f"{_MAX_BUMP_PCT})",
)
@click.option(
    "--tx-bump-after-s",
    type=click.FloatRange(0, min_open=True),
    callback=_finite,
    default=_TX_DEFAULTS.bump_after_s,
    show_default=True,
    help="seconds a transaction may go unmined after its last broadcast before its fees are bumped",
)
@click.option(
    "--tx-bump-after-blocks",
    type=click.IntRange(0),
    default=_TX_DEFAULTS.bump_after_blocks,
    show_default=True,
    help="blocks a transaction may go unmined before its fees are bumped, if sooner than --tx-bump-after-s "
    "(0: seconds only)",
)
@click.option("--json-logs/--text-logs", default=True)
@node_wait_option
@account_option("oracle")
@pass_ctx
def run(
    ctx,
    host,
    port,
    db_url,
    lease_s,
    accept_window_s,
    agent_fee_bps,
    no_attribution,
    model_dirs,
    spot_check_fraction,
    max_upload_mb,
    upload_quota_mb,
    ui_token,
    confirmations,
    tx_fee_cap_wei,
    tx_bump_bps,
    tx_bump_after_s,
    tx_bump_after_blocks,
    json_logs,
    node_wait_s,
    account_spec,
) -> None:
    """Run the oracle until interrupted."""
    from oracle.bootstrap import build_oracle, check_oracle_key
    from oracle.content import UploadLimits
    from oracle.service import OracleOptions
    from oracle.supervisor import supervise
    from tributa.logs import setup_logging

    setup_logging(json_logs=json_logs)
    ctx.wait_for_chain(node_wait_s, logging.getLogger("tributa.oracle"))
    signer = ctx.signer(account_spec, "oracle")
    check_oracle_key(ctx.contracts, signer)
    if spot_check_fraction and not model_dirs:
        raise TributaError("--spot-check-fraction needs the models to re-run: give --model-dir")
    options = OracleOptions(
        host=host,
        port=port,
        db_url=db_url,
        lease_s=lease_s,
        accept_window_s=accept_window_s,
        agent_fee_bps=agent_fee_bps,
        spot_check_fraction=spot_check_fraction,
        upload_limits=UploadLimits(max_upload_mb * 2**20, upload_quota_mb * 2**20),
        ui_token=ui_token or None,
        tx_policy=replace(
            _TX_DEFAULTS,
            max_fee_per_gas=tx_fee_cap_wei,
            bump_bps=tx_bump_bps,
            bump_after_s=tx_bump_after_s,
            bump_after_blocks=tx_bump_after_blocks,
        ),
    )
    settings = ctx.settings.with_overrides(confirmations=confirmations)

    def serve() -> None:  # in the supervised child: a worker killed by a signal starts afresh
        try:
            build_oracle(
                settings, ctx.contracts, ctx.store, signer, options, not no_attribution, list(model_dirs)
            ).run()
        except TributaError as exc:  # one line, as the CLI prints it, then the exit code
            click.echo(f"Error: {exc}", err=True)
            raise SystemExit(1) from None

    code = supervise(serve)
    if code:
        raise SystemExit(code)


@oracle.command("status")
@click.option("--db-url", envvar="TRIBUTA_DB_URL", default=None)
@json_option
@pass_ctx
def status(ctx, db_url, as_json) -> None:
    """Tasks by state, the ingestion cursor and recent agents, from the oracle's database."""
    from oracle.db import Database, database_url
    from oracle.status import summarise

    if db_url is None and not (ctx.settings.data_dir / "oracle.sqlite").is_file():  # never make an empty one
        raise TributaError(
            f"no oracle database in {ctx.settings.data_dir}: no oracle has run with this --data-dir "
            "(start one with `tributa oracle run`), or pass --db-url"
        )
    db = Database(database_url(ctx.settings.data_dir, db_url))
    if as_json:
        emit_json(_status_doc(db))
        return
    for line in summarise(db):
        click.echo(line)


def _status_doc(db) -> dict:
    """What `summarise` prints, as fields (read here: oracle.status only renders lines)."""
    from sqlalchemy import func, select
    from web3 import Web3

    from oracle.db import AgentSeen, Job
    from oracle.ingest import CURSOR_NAME
    from oracle.status import task_counts

    by_state = task_counts(db)
    with db.session() as s:
        jobs = dict(s.execute(select(Job.state, func.count()).group_by(Job.state)).all())
        agents = s.execute(select(AgentSeen).order_by(AgentSeen.last_poll_at.desc()).limit(10)).scalars().all()
        seen = [{"address": Web3.to_checksum_address(a.agent), "last_poll_at": a.last_poll_at} for a in agents]
    return {
        "ingested_block": db.cursor(CURSOR_NAME),
        "tasks": {"total": sum(by_state.values()), "by_state": dict(sorted(by_state.items()))},
        "jobs": dict(sorted(jobs.items())),
        "agents": seen,
    }
