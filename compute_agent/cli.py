"""`tributa agent …`: run a compute agent, or show its on-chain registration."""

from __future__ import annotations

import logging
import signal
from pathlib import Path

import click

from tributa.cli import account_option, node_wait_option, pass_ctx
from tributa.cli.format import emit_json, eth, json_option, parse_eth, wei


@click.group()
def agent() -> None:
    """Compute agents: stake, poll for jobs, run models, return signed results."""


@agent.command("run")
@click.option(
    "--model-dir",
    "model_dirs",
    multiple=True,
    type=click.Path(path_type=Path),
    help="a model or adapter folder this agent serves (repeatable; default: the demo models)",
)
@click.option("--stake", default=None, help="ETH to stake on first registration (default: the minimum)")
@click.option(
    "--capacity",
    type=click.IntRange(1, 1000),
    default=1,
    show_default=True,
    help="jobs leased and run at once: what the engine gets to batch",
)
@click.option("--max-jobs", type=int, default=None, help="stop after this many jobs")
@click.option("--metrics-port", type=int, default=None, help="serve Prometheus metrics on this local port")
@click.option(
    "--no-sandbox",
    is_flag=True,
    help="run the serving workers without bubblewrap, seccomp or a memory limit (trusted models only)",
)
@click.option(
    "--max-batch",
    type=click.IntRange(1, 1024),
    default=32,
    show_default=True,
    help="the most jobs the engine runs in one batch",
)
@click.option(
    "--worker-memory-mb",
    type=click.IntRange(512, 2**20),
    default=16384,
    show_default=True,
    help="address-space limit of each sandboxed CPU worker (RLIMIT_AS)",
)
@click.option(
    "--job-timeout-s",
    type=click.FloatRange(0.1, 86400),
    default=600.0,
    show_default=True,
    help="wall-clock limit of a job: past it the worker is killed and restarted, the job is tried once more "
    "alone, then reported as failed (the oracle offers it to another agent)",
)
@click.option(
    "--adapter-cache",
    type=click.IntRange(1, 1024),
    default=8,
    show_default=True,
    help="LoRA adapters a worker keeps loaded (least recently used go first)",
)
@click.option(
    "--dtype",
    type=click.Choice(["auto", "float32", "bfloat16", "float16"]),
    default="auto",
    show_default=True,
    help="weights dtype of the engine's workers (auto: float32 on CPU, bfloat16 or float16 on a GPU)",
)
@click.option(
    "--threads",
    type=click.IntRange(1, 256),
    default=None,
    help="torch threads of each serving worker (default: torch's, one per core)",
)
@click.option(
    "--device",
    default="cpu",
    show_default=True,
    help="where jobs run: cpu, cuda or cuda:N; registered on-chain as the device class",
)
@click.option(
    "--committee/--no-committee",
    default=True,
    show_default=True,
    help="join the AIOracle committee roster of each served model (drawn to re-execute challenged requests)",
)
@click.option("--json-logs/--text-logs", default=True)
@node_wait_option
@account_option("agent")
@pass_ctx
def run(
    ctx,
    model_dirs,
    stake,
    capacity,
    max_jobs,
    metrics_port,
    no_sandbox,
    max_batch,
    worker_memory_mb,
    job_timeout_s,
    adapter_cache,
    dtype,
    threads,
    device,
    committee,
    json_logs,
    node_wait_s,
    account_spec,
) -> None:
    """Register (or refresh the registration), then poll and run jobs until interrupted."""
    from compute_agent.bootstrap import ServingOptions, build_agent, resolve_device
    from tributa.logs import setup_logging

    resolve_device(device)  # a bad choice fails before any set-up
    setup_logging(json_logs=json_logs)
    ctx.wait_for_chain(node_wait_s, logging.getLogger("tributa.agent"))
    stake_wei = parse_eth(stake) if stake is not None else None
    signer = ctx.signer(account_spec, "agent")
    agent_ = build_agent(
        ctx.settings,
        ctx.contracts,
        signer,
        ctx.store,
        list(model_dirs),
        capacity,
        stake_wei,
        progress=click.echo,
        sandbox=not no_sandbox,
        threads=threads,
        device=device,
        serving=ServingOptions(
            max_batch, adapter_cache, None if dtype == "auto" else dtype, worker_memory_mb, job_timeout_s
        ),
        committee=committee,
    )
    if metrics_port is not None:
        from prometheus_client import start_http_server

        start_http_server(metrics_port, addr="127.0.0.1", registry=agent_.metrics.registry)
        click.echo(f"metrics on http://127.0.0.1:{metrics_port}/metrics")
    click.echo(f"agent {signer.address} polling {ctx.settings.oracle_url}")
    interrupted = None  # the signal that stopped the agent, if one did
    # Ctrl-C and a service manager's SIGTERM alike. SIGINT explicitly too: started from a
    # non-interactive shell's `&`, a process inherits SIGINT ignored, and Python then leaves it so.
    previous = {signum: signal.signal(signum, _raise_interrupt) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        agent_.run(max_jobs=max_jobs)
    except KeyboardInterrupt as exc:  # jobs in flight finished (or were cut by a second signal)
        interrupted = exc.args[0] if exc.args else signal.SIGINT
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        close = getattr(agent_.executor, "close", None)
        if close:
            close()
    outcomes = agent_.outcomes
    done = sum(o.ok for o in outcomes)
    slashed = len(agent_.slash_watcher.seen) if agent_.slash_watcher else 0
    click.echo(
        f"agent {'interrupted' if interrupted else 'stopped'} after {len(outcomes)} jobs "
        f"({done} done, {len(outcomes) - done} failed{f', slashed {slashed} times' if slashed else ''})"
    )
    if interrupted:
        raise SystemExit(128 + interrupted)  # the shell's convention: 130 for Ctrl-C, 143 for SIGTERM


def _raise_interrupt(signum, frame) -> None:
    raise KeyboardInterrupt(signum)


@agent.command("status")
@click.argument("address", required=False)
@json_option
@account_option("agent")
@pass_ctx
def status(ctx, address, as_json, account_spec) -> None:
    """An agent's stake, unbonding, served models, credited fees and slashes (from the chain), and
    its online state, jobs and agreement rate (from the oracle)."""
    from tributa.chain.accounts import checksum

    address = checksum(address) if address else ctx.signer(account_spec, "agent").address
    escrow = ctx.contracts.escrow.functions
    stake, unbonding, unbond_at, device, capacity, registered = escrow.agent(address).call()
    if not registered:
        if as_json:
            emit_json({"address": address, "registered": False})
        else:
            click.echo(f"{address} is not a registered agent")
        return
    models = list(escrow.agent_models(address).call())
    credited = escrow.balance_of(address).call()
    slashes = ctx.contracts.escrow.events.AgentSlashed.get_logs(
        from_block=ctx.contracts.deployment.block_number, argument_filters={"agent": address}
    )
    slashed_wei = sum(e["args"]["amount"] for e in slashes)
    seen, unseen = _oracle_view(ctx, address)
    if as_json:
        emit_json(
            {
                "address": address,
                "registered": True,
                "stake_wei": wei(stake),
                "unbonding_wei": wei(unbonding),
                "unbond_release_at": unbond_at if unbonding else None,
                "device": "gpu" if device else "cpu",
                "capacity": capacity,
                "models": models,
                "credited_wei": wei(credited),
                "slashes": len(slashes),
                "slashed_wei": wei(slashed_wei),
                "oracle": seen,
                **({"oracle_error": unseen} if unseen else {}),
            }
        )
        return
    click.echo(
        f"agent {address}: stake {eth(stake)}, unbonding {eth(unbonding)}"
        + (f" (release at {unbond_at})" if unbonding else "")
    )
    click.echo(f"  device {'gpu' if device else 'cpu'}, capacity {capacity}, models {models}")
    click.echo(f"  credited fees {eth(credited)}; slashed {len(slashes)} times ({eth(slashed_wei)})")
    if seen is None:
        click.echo(f"  the oracle: {unseen}")
        return
    rate = f"{100 * seen['agreement_rate']:.1f}% of {seen['judged']} judged" if seen["judged"] else "none judged yet"
    jobs = ", ".join(f"{n} {state}" for state, n in seen["jobs"].items()) or "none"
    click.echo(
        f"  {'online' if seen['online'] else 'offline'} at the oracle "
        f"(last poll {_ago(seen['last_poll_at'])}); jobs: {jobs}; agreement {rate}"
    )


def _oracle_view(ctx, address: str) -> tuple[dict | None, str | None]:
    """The oracle's GET /v1/agents/{address}, or why it could not be read."""
    import httpx

    url = f"{ctx.settings.oracle_url.rstrip('/')}/v1/agents/{address}"
    try:
        response = httpx.get(url, timeout=5)
        response.raise_for_status()
        return response.json(), None
    except (httpx.HTTPError, ValueError) as exc:
        return (
            None,
            f"not reachable at {ctx.settings.oracle_url} ({type(exc).__name__}): online state and agreement unknown",
        )


def _ago(timestamp: float | None) -> str:
    import time

    return "never" if timestamp is None else f"{max(0.0, time.time() - timestamp):.0f} s ago"


@agent.group("stake")
def stake() -> None:
    """The agent's bonded stake in the escrow."""


@stake.command("add")
@click.option("--eth", "amount", required=True, help="ETH to add to the bonded stake")
@account_option("agent")
@pass_ctx
def stake_add(ctx, amount, account_spec) -> None:
    """Add to your bonded stake."""
    from tributa.staking import add_stake, read_stake

    signer = ctx.signer(account_spec, "agent")
    tx = add_stake(ctx.contracts, signer, parse_eth(amount))
    click.echo(
        f"stake of {signer.address} is now {eth(read_stake(ctx.contracts, signer.address).bonded)} (tx {tx.tx_hash})"
    )


@agent.command("unbond")
@click.option("--eth", "amount", default=None, help="ETH to unbond (default: all the bonded stake)")
@account_option("agent")
@pass_ctx
def unbond(ctx, amount, account_spec) -> None:
    """Start unbonding stake; `agent withdraw-stake` pays it after the escrow's delay."""
    from tributa.cli.format import utc_time
    from tributa.staking import request_unbond

    signer = ctx.signer(account_spec, "agent")
    wei, release_at, tx = request_unbond(ctx.contracts, signer, None if amount is None else parse_eth(amount))
    click.echo(
        f"unbonding {eth(wei)}: withdraw it with `tributa agent withdraw-stake` from {utc_time(release_at)} (tx {tx.tx_hash})"
    )


@agent.command("withdraw-stake")
@account_option("agent")
@pass_ctx
def withdraw_stake(ctx, account_spec) -> None:
    """Withdraw stake whose unbonding delay has passed."""
    from tributa.staking import withdraw_stake as withdraw

    signer = ctx.signer(account_spec, "agent")
    wei, tx = withdraw(ctx.contracts, signer)
    click.echo(f"withdrew {eth(wei)} of stake to {signer.address} (tx {tx.tx_hash})")
