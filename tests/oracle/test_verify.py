"""Verdicts from agents' answers: majority, ties, re-execution, spot-check draws."""

from __future__ import annotations

from oracle.db import Job, JobState, Task
from oracle.verify import decide, spot_check_selected


def _task(k: int) -> Task:
    return Task(task_id=7, k=k, input_digest="0x" + "00" * 32)


def _job(i: int, agent: str, digest: str | None, state: str = JobState.SUBMITTED) -> Job:
    return Job(
        id=i, task_id=7, agent=agent, state=state, result_digest=digest, result_cid=f"cid-{digest}", signature="0x"
    )


def _store(output: bytes) -> tuple[str, str]:
    return f"cid-{output.decode()}", output.decode()


def test_decide__two_of_three_agree__pays_majority_slashes_minority():
    jobs = [_job(1, "A", "x"), _job(2, "B", "y"), _job(3, "C", "x")]

    verdict = decide(_task(3), jobs, None, _store)

    assert verdict.result_digest == "x" and verdict.source == "majority"
    assert [j.agent for j in verdict.paid] == ["A", "C"]
    assert verdict.slashed == ["B"]


def test_decide__agent_took_job_and_never_answered__is_slashed():
    jobs = [_job(1, "A", "x"), _job(2, "B", None, JobState.EXPIRED), _job(3, "C", "x"), _job(4, "D", "x")]

    verdict = decide(_task(3), jobs, None, _store)

    assert verdict.slashed == ["B"]
    assert [j.agent for j in verdict.paid] == ["A", "C", "D"]


def test_decide__tie_without_reexecution__has_no_result():
    verdict = decide(_task(2), [_job(1, "A", "x"), _job(2, "B", "y")], None, _store)

    assert verdict.result_digest is None and verdict.source == "no_majority"


def test_decide__tie_with_reexecution__oracle_run_decides():
    verdict = decide(_task(2), [_job(1, "A", "x"), _job(2, "B", "y")], lambda task: b"y", _store)

    assert verdict.source == "reexecution" and verdict.result_digest == "y"
    assert [j.agent for j in verdict.paid] == ["B"] and verdict.slashed == ["A"]


def test_decide__spot_check_disagrees_with_single_agent__agent_slashed_oracle_result_settles():
    verdict = decide(_task(1), [_job(1, "A", "wrong")], lambda task: b"right", _store, spot_check=True)

    assert verdict.result_digest == "right" and verdict.result_cid == "cid-right"
    assert verdict.paid == [] and verdict.slashed == ["A"]


def test_decide__spot_check_agrees__agent_paid():
    verdict = decide(_task(1), [_job(1, "A", "ok")], lambda task: b"ok", _store, spot_check=True)

    assert verdict.source == "spot_check" and [j.agent for j in verdict.paid] == ["A"] and verdict.slashed == []


def test_decide__nobody_answered__has_no_result():
    verdict = decide(_task(1), [_job(1, "A", None, JobState.EXPIRED)], None, _store)

    assert verdict.result_digest is None


def test_spot_check_selected__fraction__draws_close_to_it_and_deterministically():
    seed = b"seed"
    draws = [spot_check_selected(i, 0.25, seed) for i in range(4000)]

    assert 0.22 < sum(draws) / len(draws) < 0.28
    assert draws == [spot_check_selected(i, 0.25, seed) for i in range(4000)]
    assert not any(spot_check_selected(i, 0.0, seed) for i in range(100))
    assert all(spot_check_selected(i, 1.0, seed) for i in range(100))
