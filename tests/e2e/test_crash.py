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
