"""What only the oracle knows, for the dashboard: its view of a task and an agent, its health,
its metrics and its content store.

Both modes ask the same questions, shaped as the oracle's HTTP API answers them: the oracle's
own process answers from its database and store (oracle/dashboard.py), `tributa dashboard`
over HTTP (HttpOracle, here). Everything else the dashboard shows comes from the chain.
"""

from __future__ import annotations

from typing import Protocol

import httpx

from tributa.errors import TributaError
from tributa.store.cid import Cid


class OracleAway(TributaError):
    """The oracle could not be asked (down, unreachable, or it answered with an error)."""


class ContentSource(Protocol):
    """A block source (tributa.store.dag.BlockSource) that also reads whole files: the oracle's
    store, or its content API."""

    def read(self, cid: Cid) -> bytes: ...

    def get_bytes(self, cid: str) -> bytes: ...


class OracleSource(Protocol):
    where: str  # "this oracle" or "the oracle at URL", for the page header

    @property
    def content(self) -> ContentSource:
        """The oracle's store, or its content API."""

    def task(self, task_id: int) -> dict | None:
        """GET /v1/tasks/{id}; None: unknown to the oracle."""

    def agent(self, address: str) -> dict | None:
        """GET /v1/agents/{address}: online, jobs by state, agreement."""

    def answers(self, address: str) -> list[dict]:
        """GET /v1/agents/{address}/answers: the agent's judged answers, oldest first."""

    def status(self) -> dict:
        """GET /v1/status: ingestion cursor, pending transactions, tasks by state."""

    def metrics(self) -> str:
        """GET /metrics: Prometheus text."""


class HttpOracle:
    """The oracle's HTTP API, as `tributa dashboard` reads it; content through its content API
    (every block re-hashed against its CID, tributa/content_api.py)."""

    def __init__(self, url: str, contracts, timeout_s: float = 5.0) -> None:
        from tributa.content_api import ContentApi

        self.base = url.rstrip("/")
        self.where = f"the oracle at {self.base}"
        self.http = httpx.Client(timeout=timeout_s)
        self.content = ContentApi(self.base, contracts.chain_id, contracts.escrow.address, timeout_s=timeout_s)

    def close(self) -> None:
        self.http.close()
        self.content.close()

    def _get(self, path: str, missing_ok: bool = False):
        try:
            response = self.http.get(self.base + path)
        except httpx.HTTPError as exc:
            raise OracleAway(f"{self.where} is unreachable ({type(exc).__name__})") from None
        if missing_ok and response.status_code == 404:
            return None
        if response.status_code >= 400:
            raise OracleAway(f"{self.where} answered {response.status_code} to {path}")
        return response

    def task(self, task_id: int) -> dict | None:
        response = self._get(f"/v1/tasks/{task_id}", missing_ok=True)
        return None if response is None else response.json()

    def agent(self, address: str) -> dict | None:
        response = self._get(f"/v1/agents/{address}", missing_ok=True)
        return None if response is None else response.json()

    def answers(self, address: str) -> list[dict]:
        return self._get(f"/v1/agents/{address}/answers").json()["answers"]

    def status(self) -> dict:
        return self._get("/v1/status").json()

    def metrics(self) -> str:
        return self._get("/metrics").text
