"""kill -9 the oracle at random moments during a run of 200 tasks: nothing lost, nothing paid twice."""

from __future__ import annotations

from bench.crash_bench import run_crash


def test_crash__oracle_killed_repeatedly_during_200_tasks__each_settled_once_or_refunded(tmp_path):
    result = run_crash(tmp_path, tasks=200, kills=6, agents=3, seed=11)

    assert result.lost == 0
    assert result.double_settlements == 0
    assert result.settled + result.refunded == 200
    assert result.books_balance
    assert result.agent_credits_match


def test_crash__worker_killed_alone__its_api_process_exits_and_a_restart_settles(tmp_path):
    import os
    import signal
    import time

    from bench.network import local_network, oracle_healthy

    with local_network(tmp_path) as net:
        net.start_agents(1)
        oracle = net.start_oracle()
        net.wait_agents_ready()
        api_pids = [
            int(p) for p in open(f"/proc/{oracle.process.pid}/task/{oracle.process.pid}/children").read().split()
        ]
        assert len(api_pids) == 1 and oracle_healthy(net.settings)

        os.kill(oracle.process.pid, signal.SIGKILL)  # only the worker, not its process group
        deadline = time.monotonic() + 15
        while os.path.exists(f"/proc/{api_pids[0]}") and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not os.path.exists(f"/proc/{api_pids[0]}"), "the API process outlived its worker"
        assert not oracle_healthy(net.settings)

        net.start_oracle()
        assert net.wait_final(net.post(1), timeout_s=120) > 0
