"""Faults while tasks flow, on a real stack: Anvil (`--state`, so a stopped node comes back with
its chain), a `tributa oracle run` process and `tributa agent run` processes on the project's tiny
GPT-2. `chaos_round` runs tasks while it, in turn:

- restarts the oracle;
- stops Anvil and brings it back from its state file;
- SIGSTOPs an agent past its lease (its late result is refused, and it carries on);
- fills the data dir, a small tmpfs, to the last byte, then frees it;
- makes the data dir immutable (`chattr -R +i`), then writable again.

Every task must end settled or refunded exactly once, the escrow must balance, and every
process must be alive at the end. tests/e2e/test_chaos.py asserts it; `make bench` records it.
The last two faults need root (mount, chattr); without it they are skipped, and said so.
"""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import create_engine, func, select

from bench.crash_bench import Audit, audit
from bench.network import AGENT_ACCOUNTS, Network
from oracle.db import Job, JobState, database_url
from tributa.chain.accounts import dev_account
from tributa.chain.contracts import load_contracts
from tributa.chain.tx import Signer
from tributa.devnet import AnvilNode, anvil_binary, ape_deploy, port_in_use, settings_for
from tributa.errors import ConfigError
from tributa.publish import register_model
from tributa.store import open_store

STOPPED_AGENT = dev_account(AGENT_ACCOUNTS[0]).address  # net.agents[0]'s account
LEASE_S = "5"  # an unaccepted lease (the tiny model answers in ms, so none is accepted) lasts 5 s
DATA_TMPFS_MB = 64  # the data dir's size when it is a tmpfs: the model, the store and the database fit
FAULT_S = 6.0  # how long the disk stays full, or immutable: several oracle passes and agent polls


class StatefulAnvil(AnvilNode):
    """Anvil with `--state FILE`: it dumps its chain (blocks included) on SIGTERM and loads it on
    start, so a restart keeps every block hash the oracle has ingested."""

    def __init__(self, state_path: Path, log_path: Path) -> None:
        super().__init__(log_path=log_path)
        self.state_path = state_path

    def start(self, timeout_s: float = 30.0) -> StatefulAnvil:
        if port_in_use(self.port):
            raise ConfigError(f"port {self.port} is already in use")
        cmd = [
            anvil_binary(),
            "--port",
            str(self.port),
            "--host",
            "127.0.0.1",
            "--accounts",
            "20",
            "--balance",
            "10000",
            "--state",
            str(self.state_path),
        ]
        with open(self.log_path, "ab") as out:
            self.process = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout_s
        while not port_in_use(self.port):
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise ConfigError(f"anvil did not start (code {self.process.poll()})")
            time.sleep(0.05)
        return self


# -- the faults that need root: a tmpfs to fill, the immutable flag --------------------------------


def mount_tmpfs(path: Path, size_mb: int) -> str | None:
    """Mount a `size_mb` tmpfs at `path`; None when mounted, else why not (not root, no mount)."""
    path.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size_mb}m,mode=0700", "tmpfs", str(path)], capture_output=True, text=True
    )
    return None if done.returncode == 0 else f"cannot mount a tmpfs: {done.stderr.strip() or done.returncode}"


def unmount(path: Path) -> None:
    subprocess.run(["umount", "-l", str(path)], capture_output=True)


def set_immutable(path: Path, on: bool) -> None:
    subprocess.run(["chattr", "-R", "+i" if on else "-i", str(path)], check=True, capture_output=True)


def immutable_supported(folder: Path) -> str | None:
    """None when `chattr +i` works on `folder`'s filesystem for this user, else why not."""
    probe = folder / ".chattr-probe"
    probe.write_bytes(b"")
    try:
        done = subprocess.run(["chattr", "+i", str(probe)], capture_output=True, text=True)
        if done.returncode != 0:
            return f"chattr +i is refused here: {done.stderr.strip() or done.returncode}"
        subprocess.run(["chattr", "-i", str(probe)], check=True, capture_output=True)
        return None
    except FileNotFoundError:
        return "chattr is not installed"
    finally:
        probe.unlink(missing_ok=True)


def fill(folder: Path) -> Path:
    """Write a file in `folder` until its filesystem has no byte left; the file, to delete later."""
    filler = folder / "filler"
    with open(filler, "wb", buffering=0) as out:
        for chunk in (b"\0" * (1 << 20), b"\0" * 4096, b"\0"):  # to the last page, then the last byte
            try:
                while True:
                    out.write(chunk)
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
    return filler


# -- the network ----------------------------------------------------------------------------------


@contextmanager
def stateful_network(workdir: Path, data_tmpfs_mb: int | None = DATA_TMPFS_MB):
    """A network whose node keeps its chain across restarts; its data dir (the oracle's, shared
    with the agents and the requester) a tmpfs of `data_tmpfs_mb` when that can be mounted.
    `net.skipped` names the faults this machine cannot inject, with the reason."""
    from tributa.ml.models import ensure_demo_models

    base = ensure_demo_models(progress=lambda msg: None).base_dir
    data_dir = workdir / "data"
    skipped: dict[str, str] = {}
    no_tmpfs = mount_tmpfs(data_dir, data_tmpfs_mb) if data_tmpfs_mb else "not asked for"
    if no_tmpfs:
        skipped["full disk"] = no_tmpfs
    no_chattr = immutable_supported(data_dir)
    if no_chattr:
        skipped["immutable data dir"] = no_chattr
    node = StatefulAnvil(workdir / "anvil-state.json", workdir / "anvil.log").start()
    net = None
    try:
        settings = settings_for(node, data_dir, workdir / "deployments")
        ape_deploy(node.rpc_url, settings.deployments_dir)
        contracts = load_contracts(settings)
        roles = ("deployer", "oracle", "agent", "agent2", "requester", "creator", "publisher", "buyer", "buyer2")
        signers = {r: Signer(contracts.w3, dev_account(r)) for r in roles}
        store = open_store(settings.store_dir)
        model_id = register_model(contracts, signers["publisher"], store, "chaos-gpt2", base, [], None, 10**15).model_id
        net = Network(
            workdir,
            settings,
            contracts,
            store,
            signers,
            model_id,
            base,
            ["--no-attribution", "--text-logs", "--lease-s", LEASE_S],
        )
        net.node = node
        net.skipped = skipped
        yield net
    finally:
        if net is not None:
            net.stop()
        node.stop()
        if not no_chattr:
            set_immutable(data_dir, False)  # whatever a failed run left: else nothing can delete it
        if not no_tmpfs:
            unmount(data_dir)


def wait_for(predicate, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def jobs_of(net: Network, agent: str, state: str) -> int:
    """Jobs of `agent` in `state`, read from the oracle's own database."""
    engine = create_engine(database_url(net.settings.data_dir))
    try:
        with engine.connect() as conn:
            return conn.execute(
                select(func.count()).select_from(Job).where(func.lower(Job.agent) == agent.lower(), Job.state == state)
            ).scalar_one()
    finally:
        engine.dispose()


def node_down(net: Network, seconds: float) -> None:
    net.node.stop()  # SIGTERM: it writes its state file
    assert not port_in_use(net.node.port)
    time.sleep(seconds)
    net.node.start()


def dead_processes(net: Network) -> list[str]:
    return [f"{p.name} died:\n{p.log_tail()}" for p in [net.oracle, *net.agents] if not p.alive()]


@dataclass
class ChaosReport:
    audit: Audit
    agents: int
    agents_alive: int
    oracle_alive: bool
    seconds: float
    faults: list[str] = field(default_factory=list)  # those injected, in order
    skipped: dict[str, str] = field(default_factory=dict)  # those this machine could not, and why


def chaos_round(net: Network) -> ChaosReport:
    """Every fault in turn while tasks flow; then every task's fate and every process's life."""
    started = time.monotonic()
    faults: list[str] = []
    stopped = net.agents[0]
    mark = len(stopped.log_path.read_text(errors="replace"))
    tasks = net.post(6)
    time.sleep(1.0)
    net.oracle.stop()  # a restart with tasks in flight
    net.start_oracle()
    faults.append("oracle restart")
    tasks += net.post(6)
    time.sleep(0.5)
    node_down(net, 8)  # settlements and leases in flight while the node is away
    faults.append("node outage")

    def polling() -> bool:  # back from its backoff: a fresh oracle knows no agent until the node answers
        since = stopped.log_path.read_text(errors="replace")[mark:]
        return "poll failed" not in since or "polling again after" in since

    wait_for(polling, 30, "the agent to poll again")
    time.sleep(1.0)  # inside its next long-poll, not between two
    os.kill(
        stopped.process.pid, signal.SIGSTOP
    )  # past its lease: its jobs expire and go to the other agent, or back to it
    tasks += net.post(6)
    wait_for(
        lambda: jobs_of(net, STOPPED_AGENT, JobState.LEASED) > 0, 20, "the stopped agent's open poll to lease a job"
    )
    wait_for(lambda: jobs_of(net, STOPPED_AGENT, JobState.EXPIRED) > 0, 30, "the stopped agent's lease to expire")
    os.kill(stopped.process.pid, signal.SIGCONT)  # it hands in a result for an expired job: refused, dropped
    faults.append("agent stopped past its lease")
    data_dir = net.settings.data_dir
    if "full disk" not in net.skipped:
        tasks += net.post(4)  # the requester's inputs go to the store first, while there is room
        filler = fill(data_dir)
        time.sleep(FAULT_S)
        filler.unlink()
        faults.append("data dir full")
    if "immutable data dir" not in net.skipped:
        tasks += net.post(4)
        set_immutable(data_dir, True)
        time.sleep(FAULT_S)
        set_immutable(data_dir, False)
        faults.append("data dir immutable")
    tasks += net.post(4)

    net.wait_final(tasks, timeout_s=150)
    time.sleep(1)  # a process that dies of what came last has died by now
    return ChaosReport(
        audit(net.contracts, tasks),
        len(net.agents),
        sum(a.alive() for a in net.agents),
        net.oracle.alive(),
        time.monotonic() - started,
        faults,
        dict(net.skipped),
    )


def run(workdir: Path) -> dict[str, float]:
    with stateful_network(workdir / "chaos") as net:
        net.start_agents(2)
        net.start_oracle()
        net.wait_agents_ready()
        report = chaos_round(net)
    for fault, why in report.skipped.items():
        print(f"chaos_bench: skipped the {fault} fault: {why}")
    return {
        "chaos_tasks": float(report.audit.tasks),
        "chaos_faults_injected": float(len(report.faults)),
        "chaos_agents": float(report.agents),
        "chaos_agents_alive": float(report.agents_alive),
        "chaos_oracle_alive": float(report.oracle_alive),
        "chaos_tasks_lost": float(report.audit.lost),
        "chaos_double_settlements": float(report.audit.double_settlements),
        "chaos_seconds": round(report.seconds, 1),
    }
