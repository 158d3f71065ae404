"""An agent outlives its oracle: a real Anvil, a `tributa oracle run` process stopped and restarted
under a `tributa agent run` process that is polling, or holding a job it cannot hand in.

The agent backs off while the oracle is away (one log line when its polls start failing, one when
they go through again), retries a result until the oracle is back, drops a job the oracle refuses
(409: its lease expired meanwhile) with one line, and goes on serving later tasks."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import httpx
import pytest

from bench.network import local_network

SETTLED = 2


@pytest.fixture(scope="module")
def net(tmp_path_factory):
    # An offer waits 60 s for its acceptance here, not 15: the in-flight test stops and restarts the
    # oracle before the agent can accept, which on a loaded machine took longer than 15 s.
    oracle_args = ["--no-attribution", "--text-logs", "--accept-window-s", "60"]
    with local_network(tmp_path_factory.mktemp("liveness"), oracle_args) as network:
        # Started with SIGINT ignored, as from a non-interactive shell's `&` (CI's case): the
        # agent must still take Ctrl-C (the last test).
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            network.start_agents(1)
        finally:
            signal.signal(signal.SIGINT, previous)
        network.start_oracle()
        network.wait_agents_ready()
        assert network.wait_final(network.post(1), timeout_s=120) > 0
        yield network


def _agent(net):
    agent = net.agents[0]
    assert agent.alive(), agent.log_tail()
    return agent


def _log(agent) -> str:
    return agent.log_path.read_text(errors="replace")


def _task_state(net, task_id: int) -> str | None:
    try:
        response = httpx.get(f"{net.settings.oracle_url}/v1/tasks/{task_id}", timeout=2)
    except httpx.HTTPError:
        return None
    return response.json()["state"] if response.status_code == 200 else None


def _wait_for(predicate, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def _leased_to_a_stopped_agent(net, agent) -> int:
    """A task leased by the agent's open long-poll while the agent is SIGSTOPped (so the offer
    waits in its socket, unread): the agent holds a job it has not started."""
    os.kill(agent.process.pid, signal.SIGSTOP)
    [task_id] = net.post(1)
    _wait_for(lambda: _task_state(net, task_id) == "running", 30, f"task {task_id} to be leased")
    return task_id


def test_agent__oracle_stopped_while_it_polls__backs_off_then_serves_tasks_after_the_restart(net):
    agent = _agent(net)
    before = _log(agent)
    net.oracle.stop()
    time.sleep(8)  # several failed polls, backing off 0.5, 1, 2, 4 s
    assert agent.alive(), agent.log_tail()

    net.start_oracle()
    elapsed = net.wait_final(net.post(3), timeout_s=120)

    assert _agent(net).alive()
    during = _log(agent)[len(before) :]
    assert during.count("poll failed") == 1, during  # one line for the outage, not one per poll
    assert "polling again after" in during
    assert elapsed < 60


def test_agent__oracle_stopped_while_a_job_is_in_flight__result_retried_until_the_restart_and_it_settles(net):
    agent = _agent(net)
    before = _log(agent)
    task_id = _leased_to_a_stopped_agent(net, agent)
    net.oracle.stop()
    os.kill(agent.process.pid, signal.SIGCONT)  # it runs the job and finds no oracle to take the result
    _wait_for(lambda: "submit failed" in _log(agent)[len(before) :], 20, "the agent's first failed submit")

    net.start_oracle()
    net.wait_final([task_id], timeout_s=120)

    assert net.states([task_id])[task_id] == SETTLED
    during = _log(agent)[len(before) :]
    assert "submit went through after" in during, during
    assert net.wait_final(net.post(2), timeout_s=120) > 0  # and it goes on serving
    assert _agent(net).alive()


def test_agent__result_after_its_lease_expired__409_drops_the_job_then_it_leases_the_task_again(net):
    agent = _agent(net)
    net.oracle.stop()
    net.oracle_args = [*net.oracle_args, "--lease-s", "3"]  # an unaccepted lease lasts 3 s
    net.start_oracle()
    assert net.wait_final(net.post(1), timeout_s=120) > 0  # the agent polls the restarted oracle again
    before = _log(agent)
    task_id = _leased_to_a_stopped_agent(net, agent)
    _wait_for(lambda: _task_state(net, task_id) == "open", 30, f"task {task_id}'s lease to expire")
    os.kill(agent.process.pid, signal.SIGCONT)

    net.wait_final([task_id], timeout_s=120)

    assert net.states([task_id])[task_id] == SETTLED  # the only agent, taking its own expired task again
    during = _log(agent)[len(before) :]
    assert during.count("dropped: oracle refused (409)") == 1, during
    assert net.wait_final(net.post(2), timeout_s=120) > 0
    assert _agent(net).alive()


def test_agent__ctrl_c__finishes_prints_its_summary_and_exits_130(net):
    # Last in this module: it stops the module's agent.
    agent = _agent(net)
    os.kill(agent.process.pid, signal.SIGINT)
    try:
        status = agent.process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.kill(agent.process.pid, signal.SIGUSR1)  # every thread's stack into its log (tributa.cli.main)
        time.sleep(2)
        raise AssertionError(f"the agent did not exit within 60 s of SIGINT:\n{_log(agent)[-6000:]}") from None
    assert status == 130
    summary = [line for line in _log(agent).splitlines() if "agent interrupted after" in line]
    assert len(summary) == 1 and " jobs (" in summary[0] and " done, " in summary[0], _log(agent)[-2000:]
    assert "Traceback" not in _log(agent)
