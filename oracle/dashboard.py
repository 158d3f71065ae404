"""The dashboard in the oracle's own process: /ui on the job API's app (tributa/dashboard/), with
what only the oracle knows read from its database and store in-process.

It adds two read-only JSON views the job API lacked, which `tributa dashboard` reads over HTTP:
GET /v1/status (ingestion cursor, pending transactions, tasks by state) and
GET /v1/agents/{address}/answers (an agent's judged answers, for its agreement over time).
"""

from __future__ import annotations

import inspect
import json
import logging
from dataclasses import dataclass

from fastapi import FastAPI
from sqlalchemy import func, select
from starlette.routing import Route
from web3 import Web3

from oracle.db import AgentSeen, Database, SentTx, TxAttempt, TxState, now
from oracle.ingest import CURSOR_NAME
from oracle.jobs import RequestRefused, judged_answers
from oracle.status import task_counts
from tributa.dashboard.sources import OracleAway

log = logging.getLogger("tributa.oracle.dashboard")

ANSWERS_SHOWN = 200
PENDING_SHOWN = 50


def oracle_status(db: Database, info: dict, online_within_s: float) -> dict:
    with db.session() as s:
        pending = (
            s.execute(
                select(SentTx)
                .where(SentTx.state == TxState.PENDING)
                .order_by(SentTx.nonce, SentTx.id)
                .limit(PENDING_SHOWN)
            )
            .scalars()
            .all()
        )
        attempts = (
            dict(
                s.execute(
                    select(TxAttempt.tx_id, func.count())
                    .where(TxAttempt.tx_id.in_([p.id for p in pending]))
                    .group_by(TxAttempt.tx_id)
                ).all()
            )
            if pending
            else {}
        )
        newest = {
            p.id: s.execute(
                select(TxAttempt.tx_hash).where(TxAttempt.tx_id == p.id).order_by(TxAttempt.id.desc()).limit(1)
            ).scalar()
            for p in pending
        }
        online = s.execute(
            select(func.count()).select_from(AgentSeen).where(AgentSeen.last_poll_at > now() - online_within_s)
        ).scalar()
        pending_total = s.execute(
            select(func.count()).select_from(SentTx).where(SentTx.state == TxState.PENDING)
        ).scalar()
    return {
        "oracle": info.get("oracle"),
        "chain_id": info.get("chain_id"),
        "ingested_block": db.cursor(CURSOR_NAME),
        "tasks_by_state": dict(sorted(task_counts(db).items())),
        "agents_online": online,
        "pending_total": pending_total,
        "pending_txs": [
            {
                "nonce": p.nonce,
                "purpose": p.purpose,
                "task_ids": _task_ids(p.task_ids),
                "tx_hash": newest.get(p.id),
                "attempts": attempts.get(p.id, 0),
                "created_at": p.created_at,
            }
            for p in pending
        ],
    }


def _task_ids(text: str) -> list[int]:
    try:
        return [int(t) for t in json.loads(text or "[]")]
    except (ValueError, TypeError):
        return []


def agent_answers(db: Database, address: str) -> dict:
    if not Web3.is_address(address):
        raise RequestRefused(400, f"{address[:60]!r} is not an address (0x + 40 hex)")
    agent = Web3.to_checksum_address(address)
    with db.session() as s:
        answers = judged_answers(s, agent, ANSWERS_SHOWN)
    return {
        "address": agent,
        "answers": [{"task_id": t, "at": at, "agreed": agreed} for t, at, agreed in reversed(answers)],
    }


class InProcessOracle:
    """The OracleSource (tributa/dashboard/sources.py) inside the oracle's job API process.

    /v1/tasks and /v1/agents are answered by the job API's own handlers, called directly: one
    definition of what they say, whichever way the dashboard asks."""

    where = "this oracle"

    def __init__(self, app: FastAPI, db: Database, store, metrics, info: dict, online_within_s: float) -> None:
        self.db, self.content, self._metrics, self._info = db, store, metrics, info
        self._online_within_s = online_within_s
        self._task = _endpoint(app, "/v1/tasks/{task_id}")
        self._agent = _endpoint(app, "/v1/agents/{address}")

    def _call(self, fn, *args):
        try:
            return fn(*args)
        except RequestRefused as exc:
            if exc.status in (400, 404):
                return None
            raise OracleAway(exc.message) from None
        except Exception as exc:  # the database away, or full: the page says so, the rest still renders  # noqa: BLE001
            raise OracleAway(f"the oracle's database could not be read ({type(exc).__name__})") from None

    def task(self, task_id: int) -> dict | None:
        return self._call(self._task, task_id)

    def agent(self, address: str) -> dict | None:
        return self._call(self._agent, address)

    def answers(self, address: str) -> list[dict]:
        return (self._call(agent_answers, self.db, address) or {"answers": []})["answers"]

    def status(self) -> dict:
        return self._call(oracle_status, self.db, self._info, self._online_within_s)

    def metrics(self) -> str:
        return self._metrics.render().decode()


def _endpoint(app: FastAPI, path: str):
    for route in app.routes:
        if isinstance(route, Route) and route.path == path and "GET" in (route.methods or ()):
            if inspect.iscoroutinefunction(route.endpoint):
                raise TypeError(f"the job API's {path} handler became async; call it through the event loop")
            return route.endpoint
    raise LookupError(f"the job API serves no GET {path}")


@dataclass(frozen=True)
class OracleUi:
    """What the job API process needs to serve the dashboard: the chain, and where it is bound."""

    contracts: object
    host: str
    token: str | None = None

    def mount(self, app: FastAPI, db: Database, store, metrics, info: dict) -> None:
        from oracle.api import ONLINE_WITHIN_S
        from tributa.dashboard.data import Dashboard
        from tributa.dashboard.web import Access, install

        source = InProcessOracle(app, db, store, metrics, info, ONLINE_WITHIN_S)

        @app.get("/v1/status")
        def status() -> dict:
            """The oracle's health: ingestion cursor, pending transactions (oldest nonce first), tasks by state."""
            return oracle_status(db, info, ONLINE_WITHIN_S)

        @app.get("/v1/agents/{address}/answers")
        def answers(address: str) -> dict:
            """The agent's last judged answers (task, settled at, agreed), oldest first."""
            return agent_answers(db, address)

        access = Access(self.host, self.token)
        install(app, Dashboard(self.contracts, source), access)
        if access.token is None and not access.open:
            log.warning(
                "the dashboard at /ui is locked: the job API is bound to %s, beyond loopback, and no --ui-token "
                "(TRIBUTA_UI_TOKEN) is set",
                self.host,
            )
