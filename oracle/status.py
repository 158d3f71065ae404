"""A human summary of the oracle's state (for `tributa oracle status`)."""

from __future__ import annotations

import time

from sqlalchemy import func, select

from oracle.db import AgentSeen, Database, Job, Task
from oracle.ingest import CURSOR_NAME


def task_counts(db: Database) -> dict[str, int]:
    with db.session() as s:
        return dict(s.execute(select(Task.state, func.count()).group_by(Task.state)).all())


def summarise(db: Database) -> list[str]:
    by_state = task_counts(db)
    with db.session() as s:
        jobs = dict(s.execute(select(Job.state, func.count()).group_by(Job.state)).all())
        agents = s.execute(select(AgentSeen).order_by(AgentSeen.last_poll_at.desc()).limit(10)).scalars().all()
    cursor = db.cursor(CURSOR_NAME)
    lines = [f"ingested up to block {cursor if cursor is not None else '-'}"]
    total = sum(by_state.values())
    lines.append(
        f"tasks: {total}"
        + ("" if not total else " (" + ", ".join(f"{k} {v}" for k, v in sorted(by_state.items())) + ")")
    )
    lines.append("jobs: " + (", ".join(f"{k} {v}" for k, v in sorted(jobs.items())) or "none"))
    for agent in agents:
        lines.append(f"agent {agent.agent}: last poll {time.time() - agent.last_poll_at:.0f}s ago")
    return lines
