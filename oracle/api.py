"""The job API agents poll (FastAPI). Bad requests get a 4xx with a reason, never a 500."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Callable

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from oracle.auth import RequestAuthenticator
from oracle.db import Database, Task
from oracle.jobs import JobBook, JobError, Submission, parse_lease_signature
from tributa.errors import TributaError
from tributa.metrics import OracleMetrics

log = logging.getLogger("tributa.oracle.api")

MAX_BODY_BYTES = 8 * 1024 * 1024
MAX_WAIT_S = 25.0
# The most jobs one poll may ask for (the agent's free capacity bounds it further).
MAX_JOBS_PER_POLL = 1000


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def _max_jobs(value) -> int:
    """The poll body's max_jobs: an integer 1..MAX_JOBS_PER_POLL (a bool is not one)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise JobError(422, f"max_jobs must be an integer from 1 to {MAX_JOBS_PER_POLL}, not {json.dumps(value)[:40]}")
    if not 1 <= value <= MAX_JOBS_PER_POLL:
        raise JobError(422, f"max_jobs must be from 1 to {MAX_JOBS_PER_POLL}, not {value}")
    return value


_OFFER_SCHEMA = {
    "type": "object",
    "description": "A leased job (oracle.jobs.JobOffer).",
    "required": ["job_id", "task_id", "model_id", "input_cid", "input_digest", "deadline", "lease_expires_at"],
    "properties": {
        "job_id": {"type": "integer"},
        "task_id": {"type": "integer"},
        "model_id": {"type": "integer"},
        "input_cid": {"type": "string"},
        "input_digest": {"type": "string"},
        "deadline": {"type": "integer"},
        "lease_expires_at": {"type": "integer"},
        "input_envelope_b64": {"type": ["string", "null"]},
        "input_b64": {"type": ["string", "null"]},
    },
}
# The poll handler reads its (signed) body itself, so FastAPI cannot infer these.
POLL_OPENAPI = {
    "requestBody": {
        "required": False,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "wait_s": {"type": "number", "minimum": 0, "maximum": MAX_WAIT_S,
                                   "description": "How long to wait for work (clamped to 0..25 s)."},
                        "max_jobs": {"type": "integer", "minimum": 1, "maximum": MAX_JOBS_PER_POLL,
                                     "description": "Lease up to this many jobs (bounded by free capacity); "
                                                    "the answer is then {\"jobs\": [...]}."},
                    },
                }
            }
        },
    }
}
POLL_RESPONSES = {
    200: {
        "description": "One offer; with max_jobs, {\"jobs\": [offer, ...]} holding at least one.",
        "content": {"application/json": {"schema": {"oneOf": [
            _OFFER_SCHEMA,
            {"type": "object", "required": ["jobs"],
             "properties": {"jobs": {"type": "array", "minItems": 1, "items": _OFFER_SCHEMA}}},
        ]}}},
    },
    204: {"description": "No job arrived within wait_s."},
}


def create_app(
    db: Database,
    book: JobBook,
    auth: RequestAuthenticator,
    store,
    directory,
    chain_time: Callable[[], int],
    info: dict,
    metrics: OracleMetrics,
) -> FastAPI:
    app = FastAPI(title="Tributa oracle job API", version="1")

    async def authenticated(request: Request) -> tuple[str, dict]:
        body = await request.body()
        if len(body) > MAX_BODY_BYTES:
            raise JobError(413, f"body over {MAX_BODY_BYTES} bytes")
        path = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        agent = await run_in_threadpool(auth.verify, request.headers, request.method, path, body)
        try:
            parsed = json.loads(body) if body else {}
        except ValueError:
            raise JobError(400, "body is not JSON") from None
        if not isinstance(parsed, dict):
            raise JobError(400, "body must be a JSON object")
        return agent, parsed

    @app.exception_handler(JobError)  # AuthError too: it is a JobError
    async def _job_error(_: Request, exc: JobError):
        return _error(exc.status, exc.message)

    @app.exception_handler(TributaError)
    async def _tributa_error(_: Request, exc: TributaError):
        return _error(400, str(exc))

    @app.get("/metrics")
    def prometheus() -> Response:
        """Prometheus exposition: tasks by state, latency, gas, slashes, RPC errors."""
        return Response(metrics.render(), media_type="text/plain; version=0.0.4")

    @app.get("/v1/health")
    def health() -> dict:
        return {"ok": True, **info}

    @app.post("/v1/jobs/poll", openapi_extra=POLL_OPENAPI, responses=POLL_RESPONSES)
    async def poll(request: Request):
        """Long-poll for work: waits up to wait_s (≤ 25) for a task this agent can run.

        Body `{"wait_s": 20}` answers one offer object (as it always has); `{"wait_s": 20,
        "max_jobs": N}` (1 ≤ N ≤ 1000) answers `{"jobs": [offer, ...]}` with 1 to
        min(N, free capacity) offers, as soon as at least one is available. 204: none in time."""
        agent, body = await authenticated(request)
        try:
            wait_s = min(MAX_WAIT_S, max(0.0, float(body.get("wait_s", 0))))
        except (TypeError, ValueError):
            raise JobError(422, "wait_s must be a number") from None
        batch = "max_jobs" in body
        max_jobs = _max_jobs(body["max_jobs"]) if batch else 1
        models = await run_in_threadpool(directory.models, agent)
        capacity = await run_in_threadpool(directory.capacity, agent)
        short = await run_in_threadpool(getattr(directory, "stake_shortfall", lambda _: None), agent)
        if short is not None:
            raise JobError(403, short)
        if not models:
            raise JobError(409, f"agent {agent} serves no registered model; update its registration")
        give_up = time.monotonic() + wait_s
        while True:
            offers = await run_in_threadpool(book.lease_many, agent, models, chain_time(), capacity, max_jobs)
            if offers:
                metrics.leases.inc(len(offers))
                if batch:
                    return {"jobs": [offer.to_json() for offer in offers]}
                return offers[0].to_json()
            if time.monotonic() >= give_up:
                return Response(status_code=204)
            await asyncio.sleep(0.05)

    @app.post("/v1/jobs/{job_id}/accept")
    async def accept(job_id: int, request: Request):
        """The agent's signed lease acceptance, {"lease_signature": "0x…"}: EIP-712
        Lease(task_id, lease_expires_at) in the escrow's domain. Required before the lease runs
        its full length; it is also the only evidence on which the agent can be slashed for silence."""
        agent, body = await authenticated(request)
        signature = parse_lease_signature(body)
        expires_at = await run_in_threadpool(book.accept, agent, job_id, signature)
        return {"accepted": True, "lease_expires_at": expires_at}

    @app.post("/v1/jobs/{job_id}/result")
    async def submit(job_id: int, request: Request):
        agent, body = await authenticated(request)
        sub = Submission.from_json(body)
        result_cid = await run_in_threadpool(book.submit, agent, job_id, sub)
        return {"accepted": True, "result_cid": result_cid}

    @app.post("/v1/jobs/{job_id}/error")
    async def report_error(job_id: int, request: Request):
        agent, body = await authenticated(request)
        kind = body.get("kind")
        message = body.get("error")
        if kind not in ("input", "runtime") or not isinstance(message, str) or not message:
            raise JobError(422, 'error body needs kind ("input" or "runtime") and a non-empty error message')
        await run_in_threadpool(book.report_error, agent, job_id, kind, message)
        return {"recorded": True}

    @app.get("/v1/content/{cid}")
    def content(cid: str):
        """A read-only gateway to the oracle's content store; agents re-check the CID."""
        from tributa.store.errors import CidError, NotFound

        try:
            return Response(store.get_bytes(cid), media_type="application/octet-stream")
        except CidError as exc:
            raise JobError(400, str(exc)) from None
        except NotFound:
            raise JobError(404, f"{cid} is not in the oracle's store") from None

    @app.get("/v1/tasks/{task_id}")
    def task(task_id: int):
        with db.session() as s:
            t = s.get(Task, task_id)
            if t is None:
                raise JobError(404, f"task {task_id} is unknown to this oracle")
            return {
                "task_id": t.task_id,
                "state": t.state,
                "reason": t.reason,
                "model_id": t.model_id,
                "result_cid": t.result_cid,
                "private": t.private,
                "result_ciphertext_cid": t.result_ciphertext_cid,
                "attribution_cid": t.attribution_cid,
                "settle_tx": t.settle_tx,
            }

    return app
