"""`tributa verify …`: check AIOracle's results with your own models (tributa/watch.py)."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import click

from tributa.cli import account_option, pass_ctx
from tributa.cli.format import parse_eth
from tributa.errors import TributaError


@click.group("verify")
def verify() -> None:
    """Re-execute results posted on-chain and challenge the wrong ones."""


@verify.command("watch")
@click.option(
    "--model-dir",
    "model_dirs",
    multiple=True,
    required=True,
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="a folder of a registered model or adapter to re-execute with (repeatable)",
)
@click.option("--bond", default=None, help="ETH staked on each challenge (default: AIOracle's challenge_bond)")
@click.option("--report-only", is_flag=True, help="never challenge: print each verdict")
@click.option("--challenge-cids", is_flag=True, help="also challenge outputs posted as a CID whose digest differs")
@click.option(
    "--from-block", type=click.IntRange(0), default=None, help="first block to read (default: the deployment's)"
)
@click.option("--interval-s", type=click.FloatRange(0.1), default=2.0, show_default=True, help="seconds between polls")
@click.option("--once", is_flag=True, help="check what is posted so far, then exit")
@click.option(
    "--no-sandbox", is_flag=True, help="run the models in this process instead of bubblewrap (trusted models only)"
)
@click.option("--json", "as_json", is_flag=True, help="one JSON object per verdict")
@account_option("requester")
@pass_ctx
def watch(
    ctx, model_dirs, bond, report_only, challenge_cids, from_block, interval_s, once, no_sandbox, as_json, account_spec
) -> None:
    """Re-execute each provisional AIOracle result during its challenge window and challenge it
    (with the bond) when the acceptance rule rejects it. Exit 0; Ctrl-C stops."""
    from tributa.watch import Watcher

    signer = None if report_only else ctx.signer(account_spec, "requester")
    watcher = Watcher(
        ctx.contracts,
        signer,
        ctx.store,
        list(model_dirs),
        _executor(no_sandbox),
        bond_wei=parse_eth(bond) if bond is not None else None,
        challenge_cids=challenge_cids,
        from_block=from_block,
        progress=lambda msg: click.echo(msg, err=True),
    )
    logging.getLogger("tributa").setLevel(logging.WARNING)
    click.echo(f"watching AIOracle {ctx.contracts.ai_oracle.address} on chain {ctx.contracts.chain_id}", err=True)
    try:
        while True:
            for check in watcher.poll_once():
                if as_json:
                    click.echo(
                        json.dumps(
                            {
                                "request_id": check.request_id,
                                "verdict": check.verdict,
                                "note": check.note,
                                "tx": check.tx_hash,
                            }
                        )
                    )
                else:
                    click.echo(
                        f"request {check.request_id}: {check.verdict}" + (f" ({check.note})" if check.note else "")
                    )
            if once:
                return
            time.sleep(interval_s)
    except KeyboardInterrupt:
        return


def _executor(no_sandbox: bool):
    """The agents' own bwrap workers by default, so an honest result's bytes are the same here."""
    if no_sandbox:
        from tributa.runtime.executor import Executor

        return Executor()
    from tributa.runtime import bwrap
    from tributa.runtime.sandbox import SandboxedExecutor

    if bwrap.bwrap_path() is None:
        raise TributaError(
            "re-execution runs models in bubblewrap, which is not installed: apt-get install bubblewrap "
            "(or --no-sandbox for trusted models)"
        )
    return SandboxedExecutor()
