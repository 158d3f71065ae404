"""`tributa oracle …`: run the oracle, or summarise its state."""

from __future__ import annotations

import logging
from pathlib import Path

import click

from tributa.cli import account_option, node_wait_option, pass_ctx
from tributa.cli.format import emit_json, json_option
from tributa.errors import TributaError


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
    agent_fee_bps,
    no_attribution,
    model_dirs,
    spot_check_fraction,
    max_upload_mb,
    upload_quota_mb,
    ui_token,
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
        agent_fee_bps=agent_fee_bps,
        spot_check_fraction=spot_check_fraction,
        upload_limits=UploadLimits(max_upload_mb * 2**20, upload_quota_mb * 2**20),
        ui_token=ui_token or None,
    )

    def serve() -> None:  # in the supervised child: a worker killed by a signal starts afresh
        try:
            build_oracle(
                ctx.settings, ctx.contracts, ctx.store, signer, options, not no_attribution, list(model_dirs)
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
