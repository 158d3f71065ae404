"""The job API agents poll (FastAPI). Bad requests get a 4xx with a reason, never a 500.

Hostile clients: a body is refused on its Content-Length (413) before it is read and read with a
cap; ids past SQLite's 64-bit range are unknown (404); nesting, huge numbers, lone surrogates and
non-canonical signatures are 4xx; an agent's request rate and concurrent long-polls are bounded
(429 with Retry-After). Outages (the node, the database or its disk, shutdown) answer 503 with
Retry-After, logged once per outage rather than a traceback per request.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from collections.abc import Callable
from typing import Any

import requests
from fastapi import FastAPI, Query, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from sqlalchemy import func, select
from sqlalchemy.exc import DatabaseError, IntegrityError
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect
from web3.exceptions import ProviderConnectionError

from oracle.api_docs import mount_docs
from oracle.auth import RateLimited, RequestAuthenticator, check_contract_signature, retry_after_header
from oracle.content import MAX_UPLOAD_BYTES, UPLOADS_AT_ONCE, ContentBook, parse_purpose
from oracle.db import AgentSeen, Database, Job, JobState, Task, now
from oracle.jobs import JobBook, RequestRefused, Submission, agreement, parse_lease_signature
from oracle.metrics import OracleMetrics
from oracle.outages import Outages, Unavailable, classify_outage
from oracle.rpc import RpcUnavailable
from tributa.chain.eip712 import recover_result_signer
from tributa.errors import TributaError
from tributa.json_input import depth_ok
from tributa.store import cid as cidlib

log = logging.getLogger("tributa.oracle.api")

MAX_BODY_BYTES = 8 * 1024 * 1024
MAX_WAIT_S = 25.0
# The most jobs one poll may ask for (the agent's free capacity bounds it further).
MAX_JOBS_PER_POLL = 1000
# Ids are SQLite/PostgreSQL 64-bit integers: anything past this names nothing (and overflows the driver).
MAX_DB_ID = 2**63 - 1
# How deep a body's arrays/objects may nest (the API's own bodies are one level deep).
MAX_JSON_DEPTH = 32
# A signed body must arrive within this long (a client trickling its body holds a connection).
BODY_READ_TIMEOUT_S = 30.0
# Retry-After (seconds) for the 503 a long-poll gets while the API is stopping.
SHUTDOWN_RETRY_AFTER_S = 2
# The largest block /v1/blocks serves (Kubo's limit on a block it exchanges; adds make <= 256 KiB + framing).
MAX_BLOCK_BYTES = 2 * 1024 * 1024
UPLOAD_PATH = "/v1/uploads"
ONLINE_WITHIN_S = 60.0  # an agent long-polls every few seconds; a minute of silence is offline
UPLOAD_READ_TIMEOUT_S = 600.0  # 256 MiB at under 1 MB/s still arrives
UPLOAD_RETRY_AFTER_S = 5
UPLOAD_MIN_RATE = 256 * 1024  # bytes/s
# Paths whose success says nothing about the database, the store or the node.
_TOUCHES_NOTHING = frozenset({"/v1/health", "/openapi.json", "/docs", "/docs/oauth2-redirect"})
_SIGNED_HEADERS = ("x-tributa-agent", "x-tributa-nonce", "x-tributa-expiry", "x-tributa-signature")


def _error(status: int, message: str, retry_after_s: float | None = None) -> JSONResponse:
    headers = {"Retry-After": retry_after_header(retry_after_s)} if retry_after_s is not None else None
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def _db_id(value: int, what: str) -> int:
    """An id the database can hold; a larger (or negative) one names nothing: 404."""
    if not 0 <= value <= MAX_DB_ID:
        raise RequestRefused(404, f"{what} {value} does not exist (ids are 0..{MAX_DB_ID})")
    return value


def _text(value, what: str, limit: int) -> str:
    """A non-empty string the database can store: UTF-8 encodable (no lone surrogates), no NUL."""
    if not isinstance(value, str) or not value:
        raise RequestRefused(422, f"{what} must be a non-empty string")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise RequestRefused(
            422, f"{what} is not valid Unicode text (it holds a lone surrogate such as \\ud800)"
        ) from None
    if "\x00" in value:
        raise RequestRefused(422, f"{what} must not contain NUL characters")
    return value[:limit]


def _max_jobs(value) -> int:
    """The poll body's max_jobs: an integer 1..MAX_JOBS_PER_POLL (a bool is not one)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise RequestRefused(
            422, f"max_jobs must be an integer from 1 to {MAX_JOBS_PER_POLL}, not {json.dumps(value)[:40]}"
        )
    if not 1 <= value <= MAX_JOBS_PER_POLL:
        raise RequestRefused(422, f"max_jobs must be from 1 to {MAX_JOBS_PER_POLL}, not {str(value)[:40]}")
    return value


def _wait_s(value) -> float:
    """The poll body's wait_s, clamped to 0..MAX_WAIT_S; a non-number, or one no float holds, is 422."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise RequestRefused(422, "wait_s must be a number of seconds")
    try:
        wait = float(value)
    except OverflowError:
        raise RequestRefused(422, f"wait_s is out of range (0 to {MAX_WAIT_S:g} s)") from None
    if not math.isfinite(wait):
        raise RequestRefused(422, "wait_s must be a finite number")
    return min(MAX_WAIT_S, max(0.0, wait))


def parse_body(body: bytes) -> dict:
    """A signed request's JSON object body ({} when empty), or a 400 that says what is wrong."""
    if not body:
        return {}
    if not depth_ok(body, MAX_JSON_DEPTH):
        raise RequestRefused(400, f"body nests too deeply (more than {MAX_JSON_DEPTH} levels)")
    try:
        parsed = json.loads(body)
    except RecursionError:
        raise RequestRefused(400, "body nests too deeply") from None
    except ValueError:  # UnicodeDecodeError too
        raise RequestRefused(400, "body is not JSON") from None
    if not isinstance(parsed, dict):
        raise RequestRefused(400, "body must be a JSON object")
    return parsed


class BodyLimit:
    """ASGI middleware: a request whose Content-Length is over the limit (or not a number) is
    answered before a byte of its body is read; the server then closes the connection."""

    def __init__(self, app, limit: int = MAX_BODY_BYTES, upload_limit: int = MAX_UPLOAD_BYTES) -> None:
        self.app = app
        self.limit = limit
        self.upload_limit = upload_limit  # POST /v1/uploads carries a CAR, not JSON

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            limit = self.upload_limit if scope.get("path") == UPLOAD_PATH else self.limit
            for name, value in scope["headers"]:
                if name == b"content-length":
                    try:
                        length = int(value)
                    except ValueError:
                        length = -1
                    if length < 0:
                        response = _error(400, "Content-Length is not a non-negative integer")
                    elif length > limit:
                        response = _error(413, f"body of {length} bytes is over the {limit}-byte limit")
                    else:
                        break
                    response.headers["connection"] = "close"
                    await response(scope, receive, send)
                    return
        await self.app(scope, receive, send)


async def read_capped(request: Request, limit: int = MAX_BODY_BYTES, timeout_s: float = BODY_READ_TIMEOUT_S) -> bytes:
    """The request body, read as a stream and refused (413) the moment it passes `limit` bytes,
    or (408) when it has not all arrived within `timeout_s`."""
    chunks: list[bytes] = []
    size = 0

    async def read() -> None:
        nonlocal size
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise RequestRefused(413, f"body over {limit} bytes")
            chunks.append(chunk)

    try:
        await asyncio.wait_for(read(), timeout_s)
    except TimeoutError:
        raise RequestRefused(408, f"the body did not arrive within {timeout_s:g} s") from None
    return b"".join(chunks)


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
POLL_OPENAPI: dict[str, Any] = {
    "requestBody": {
        "required": False,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "wait_s": {
                            "type": "number",
                            "minimum": 0,
                            "maximum": MAX_WAIT_S,
                            "description": "How long to wait for work (clamped to 0..25 s).",
                        },
                        "max_jobs": {
                            "type": "integer",
                            "minimum": 1,
                            "maximum": MAX_JOBS_PER_POLL,
                            "description": "Lease up to this many jobs (bounded by free capacity); "
                            'the answer is then {"jobs": [...]}.',
                        },
                    },
                }
            }
        },
    }
}
POLL_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": 'One offer; with max_jobs, {"jobs": [offer, ...]} holding at least one.',
        "content": {
            "application/json": {
                "schema": {
                    "oneOf": [
                        _OFFER_SCHEMA,
                        {
                            "type": "object",
                            "required": ["jobs"],
                            "properties": {"jobs": {"type": "array", "minItems": 1, "items": _OFFER_SCHEMA}},
                        },
                    ]
                }
            }
        },
    },
    204: {"description": "No job arrived within wait_s."},
}

BLOCK_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "The block's bytes, as stored (hash them: their sha2-256 is the CID's digest).",
        "content": {"application/vnd.ipld.raw": {"schema": {"type": "string", "format": "binary"}}},
    },
    400: {"description": "Not a CID."},
    404: {"description": "Not in the oracle's store."},
}

# The signed endpoints' auth headers (oracle/auth.py): declared so a client, or schemathesis,
# knows from the schema alone what to send. The handlers check them (401 when missing).
SIGNED_HEADER_PARAMS = [
    {
        "name": "x-tributa-agent",
        "in": "header",
        "required": True,
        "description": "The agent's address (0x + 40 hex).",
        "schema": {"type": "string"},
    },
    {
        "name": "x-tributa-nonce",
        "in": "header",
        "required": True,
        "description": "A decimal nonce, used once.",
        "schema": {"type": "string"},
    },
    {
        "name": "x-tributa-expiry",
        "in": "header",
        "required": True,
        "description": "Unix time (decimal) the signature expires, at most 300 s ahead.",
        "schema": {"type": "string"},
    },
    {
        "name": "x-tributa-signature",
        "in": "header",
        "required": True,
        "description": "0x + hex of the agent's 65-byte EIP-712 signature over ApiRequest(agent, method, path, "
        "keccak(body), nonce, expiry), low-s and v of 27 or 28.",
        "schema": {"type": "string"},
    },
]
_HEX_SIGNATURE = {"type": "string", "pattern": "^(0x)?[0-9a-fA-F]{130}$"}


def _signed(body_schema: dict | None, required: bool = True) -> dict:
    extra: dict = {"parameters": [dict(p) for p in SIGNED_HEADER_PARAMS]}
    if body_schema is not None:
        extra["requestBody"] = {"required": required, "content": {"application/json": {"schema": body_schema}}}
    return extra


POLL_OPENAPI["parameters"] = [dict(p) for p in SIGNED_HEADER_PARAMS]
ACCEPT_OPENAPI = _signed(
    {
        "type": "object",
        "required": ["lease_signature"],
        "properties": {
            "lease_signature": {**_HEX_SIGNATURE, "description": "EIP-712 Lease(task_id, lease_expires_at)."}
        },
    }
)
RESULT_OPENAPI = _signed(
    {
        "type": "object",
        "required": ["output_b64", "result_digest", "signature"],
        "properties": {
            "output_b64": {"type": "string", "description": "The output, base64 (at most 4 MiB decoded)."},
            "result_digest": {
                "type": "string",
                "pattern": "^(0x)?[0-9a-fA-F]{64}$",
                "description": "The output's CID digest.",
            },
            "signature": {**_HEX_SIGNATURE, "description": "EIP-712 Result(task_id, result_digest)."},
            "lease_signature": {
                "oneOf": [_HEX_SIGNATURE, {"type": "null"}],
                "description": "The lease acceptance, if /accept was not called.",
            },
        },
    }
)
UPLOAD_OPENAPI = {
    "parameters": [dict(p) for p in SIGNED_HEADER_PARAMS],
    # The body is a CARv1 (application/vnd.ipld.car); declared as octet-stream, which every client can send.
    "requestBody": {
        "required": True,
        "description": "A single-root CARv1, as `ipfs dag export` writes.",
        "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
    },
}
UPLOAD_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"description": "Stored: root, bytes, blocks, already_held, quota_used_bytes, quota_bytes."},
    400: {"description": "No or a malformed ?for=."},
    401: {"description": "Unsigned, expired or badly signed."},
    403: {"description": "Not registered for that entry by the signer, or over the account's quota."},
    404: {"description": "No such dataset or model."},
    409: {"description": "A replayed nonce, or a task not ingested yet (retry)."},
    413: {"description": "Over the per-upload limit."},
    422: {"description": "Not a single-root CARv1, a block that is not its CID's, or an incomplete DAG."},
}
ERROR_OPENAPI = _signed(
    {
        "type": "object",
        "required": ["kind", "error"],
        "properties": {
            "kind": {"type": "string", "enum": ["input", "runtime"]},
            "error": {"type": "string", "minLength": 1, "description": "Why (kept to 500 characters)."},
        },
    }
)


def create_app(
    db: Database,
    book: JobBook,
    auth: RequestAuthenticator,
    store,
    directory,
    chain_time: Callable[[], int],
    info: dict,
    metrics: OracleMetrics,
    *,
    stopping: Callable[[], bool] = lambda: False,
    content: ContentBook | None = None,
    ui=None,  # an oracle.dashboard.OracleUi: the read-only dashboard at /ui
) -> FastAPI:
    """The job API. `stopping()` turns true when the server begins to shut down: long-polls then
    end with 503 and Retry-After (the agent retries against the restarted oracle)."""
    app = FastAPI(title="Tributa oracle job API", version="1", docs_url=None, redoc_url=None)
    mount_docs(app)  # Swagger UI from local files: the CDN default is a blank page offline
    content = content if content is not None else ContentBook(db, store, None)
    upload_slots = asyncio.Semaphore(UPLOADS_AT_ONCE)
    uploading: set[str] = set()  # accounts with a body in flight: one each
    app.add_middleware(BodyLimit, upload_limit=content.limits.max_upload_bytes)
    outages = Outages()
    app.state.outages = outages
    limiter = getattr(auth, "limiter", None)
    seen_agents: set[str] = set()  # agents known to have an agents_seen row (bounded below)

    def refuse_when_stopping() -> None:
        if stopping():
            raise Unavailable("api", "the oracle is shutting down; retry shortly", SHUTDOWN_RETRY_AFTER_S)

    async def authenticated(request: Request) -> tuple[str, dict]:
        refuse_when_stopping()
        body = await read_capped(request)
        path = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        agent = await run_in_threadpool(auth.verify, request.headers, request.method, path, body)
        return agent, await run_in_threadpool(parse_body, body)

    def ensure_seen(agent: str) -> None:
        """Create the agent's agents_seen row if it has none, so that concurrent first polls of a
        new agent do not race to insert it (a UNIQUE violation, once a 500)."""
        if agent in seen_agents:
            return
        try:
            with db.session() as s:
                if s.get(AgentSeen, agent) is None:
                    s.add(AgentSeen(agent=agent, last_poll_at=now()))
        except IntegrityError:
            pass  # a concurrent first poll inserted it: what we wanted
        if len(seen_agents) > 100_000:
            seen_agents.clear()
        seen_agents.add(agent)

    @app.middleware("http")
    async def _note_recovery(request: Request, call_next):
        response = await call_next(request)
        # Only a success of a request that used the database, the store or the node ends an
        # outage: a health check or a refused bad id touches none of them, and would end it at once.
        if (
            outages.current
            and 200 <= response.status_code < 300
            and request.url.path not in _TOUCHES_NOTHING
            and not request.url.path.startswith("/docs/")
        ):
            outages.up()
        return response

    @app.exception_handler(RateLimited)
    async def _rate_limited(_: Request, exc: RateLimited):
        return _error(429, exc.message, exc.retry_after_s)

    @app.exception_handler(RequestRefused)  # AuthError too: it is a RequestRefused
    async def _job_error(_: Request, exc: RequestRefused):
        return _error(exc.status, exc.message)

    @app.exception_handler(ClientDisconnect)
    async def _gone(_: Request, _exc: ClientDisconnect):
        return _error(400, "the client disconnected before its body arrived")  # nobody reads it; no traceback

    @app.exception_handler(Unavailable)
    async def _unavailable(_: Request, exc: Unavailable):
        if exc.kind != "api":
            outages.down(exc.kind, exc.message)
        return _error(503, exc.message, exc.retry_after_s)

    async def _outage_or_500(request: Request, exc: Exception):
        outage = classify_outage(exc)
        if outage is None:
            log.exception("job API: unexpected error on %s %s", request.method, request.url.path, exc_info=exc)
            return _error(500, "internal error")
        outages.down(outage.kind, outage.message)
        return _error(503, f"{outage.kind} unavailable: {outage.message}", outage.retry_after_s)

    for exc_type in (DatabaseError, OSError, RpcUnavailable, ProviderConnectionError, requests.RequestException):
        app.add_exception_handler(exc_type, _outage_or_500)

    @app.exception_handler(TributaError)
    async def _tributa_error(request: Request, exc: TributaError):
        outage = classify_outage(exc)
        if outage is not None:
            return await _outage_or_500(request, exc)
        return _error(400, str(exc))

    @app.get("/metrics")
    def prometheus() -> Response:
        """Prometheus exposition: tasks by state, latency, gas, slashes, RPC errors."""
        return Response(metrics.render(), media_type="text/plain; version=0.0.4")

    @app.get("/v1/health")
    async def health() -> dict:  # async: it must answer while the thread pool is busy
        return {"ok": True, **info}

    @app.post("/v1/jobs/poll", openapi_extra=POLL_OPENAPI, responses=POLL_RESPONSES)
    async def poll(request: Request):
        """Long-poll for work: waits up to wait_s (≤ 25) for a task this agent can run.

        Body `{"wait_s": 20}` answers one offer object (as it always has); `{"wait_s": 20,
        "max_jobs": N}` (1 ≤ N ≤ 1000) answers `{"jobs": [offer, ...]}` with 1 to
        min(N, free capacity) offers, as soon as at least one is available. 204: none in time.
        429 with Retry-After: the agent already holds its limit of concurrent long-polls."""
        if limiter is not None:  # cheap, before the signature is checked: see check_poll_room
            limiter.check_poll_room(request.headers.get("x-tributa-agent"))
        agent, body = await authenticated(request)
        wait_s = _wait_s(body.get("wait_s", 0))
        batch = "max_jobs" in body
        max_jobs = _max_jobs(body["max_jobs"]) if batch else 1
        if limiter is None:
            return await _poll(agent, wait_s, batch, max_jobs)
        with limiter.poll_slot(agent):
            return await _poll(agent, wait_s, batch, max_jobs)

    async def _poll(agent: str, wait_s: float, batch: bool, max_jobs: int):
        models = await run_in_threadpool(directory.models, agent)
        capacity = await run_in_threadpool(directory.capacity, agent)
        short = await run_in_threadpool(getattr(directory, "stake_shortfall", lambda _: None), agent)
        if short is not None:
            raise RequestRefused(403, short)
        if not models:
            raise RequestRefused(409, f"agent {agent} serves no registered model; update its registration")
        await run_in_threadpool(ensure_seen, agent)
        give_up = time.monotonic() + wait_s
        while True:
            refuse_when_stopping()
            offers = await run_in_threadpool(book.lease_many, agent, models, chain_time(), capacity, max_jobs)
            if offers:
                metrics.leases.inc(len(offers))
                if batch:
                    return {"jobs": [offer.to_json() for offer in offers]}
                return offers[0].to_json()
            if time.monotonic() >= give_up:
                return Response(status_code=204)
            await asyncio.sleep(0.05)

    @app.post("/v1/jobs/{job_id}/accept", openapi_extra=ACCEPT_OPENAPI)
    async def accept(job_id: int, request: Request):
        """The agent's signed lease acceptance, {"lease_signature": "0x…"}: EIP-712
        Lease(task_id, lease_expires_at) in the escrow's domain. Required before the lease runs
        its full length; it is also the only evidence on which the agent can be slashed for silence."""
        agent, body = await authenticated(request)
        _db_id(job_id, "job")
        signature = parse_lease_signature(body)
        check_contract_signature(signature, "lease_signature would be rejected by the escrow")
        expires_at = await run_in_threadpool(book.accept, agent, job_id, signature)
        return {"accepted": True, "lease_expires_at": expires_at}

    def precheck_submit(agent: str, job_id: int, sub: Submission) -> None:
        """Everything a submit can be refused for, checked before anything is stored: the job is
        the agent's and leased, the result signature is the agent's, the digest is the output's."""
        with db.session() as s:
            job = s.get(Job, job_id)
            if job is None:
                raise RequestRefused(404, f"job {job_id} does not exist")
            if job.agent != agent:
                raise RequestRefused(403, f"job {job_id} is not leased to {agent}")
            if job.state != JobState.LEASED:
                raise RequestRefused(409, f"job {job_id} is {job.state}, not leased")
            task_id = job.task_id
        signer = recover_result_signer(book.chain_id, book.escrow_address, task_id, sub.result_digest, sub.signature)
        if signer.lower() != agent.lower():
            raise RequestRefused(401, "the result signature does not recover to the submitting agent")
        result_cid = store.cid_of(sub.output)
        if cidlib.cid_to_digest(result_cid) != sub.result_digest:
            raise RequestRefused(422, f"result_digest does not match the output (its CID is {result_cid})")

    @app.post("/v1/jobs/{job_id}/result", openapi_extra=RESULT_OPENAPI)
    async def submit(job_id: int, request: Request):
        """The agent's result: output, its digest and the agent's EIP-712 Result signature. A
        signature the escrow would reject (high s, v not 27/28) is refused, as is anything that
        would be refused later: nothing is stored for a refused submit."""
        agent, body = await authenticated(request)
        _db_id(job_id, "job")
        sub = Submission.from_json(body)
        check_contract_signature(sub.signature, "result signature would be rejected by the escrow")
        if sub.lease_signature is not None:
            check_contract_signature(sub.lease_signature, "lease_signature would be rejected by the escrow")
        await run_in_threadpool(precheck_submit, agent, job_id, sub)
        result_cid = await run_in_threadpool(book.submit, agent, job_id, sub)
        return {"accepted": True, "result_cid": result_cid}

    @app.post("/v1/jobs/{job_id}/error", openapi_extra=ERROR_OPENAPI)
    async def report_error(job_id: int, request: Request):
        """The agent could not run the job: kind "input" (the task fails) or "runtime" (requeued)."""
        agent, body = await authenticated(request)
        _db_id(job_id, "job")
        kind = body.get("kind")
        if kind not in ("input", "runtime"):
            raise RequestRefused(422, 'error body needs kind ("input" or "runtime") and a non-empty error message')
        message = _text(body.get("error"), "error", 500)
        await run_in_threadpool(book.report_error, agent, job_id, kind, message)
        return {"recorded": True}

    def signed_path(request: Request) -> str:
        return request.url.path + (f"?{request.url.query}" if request.url.query else "")

    def check_sealed_read(request: Request, cid: str) -> None:
        """A private task's sealed copies go only to its requester, on a request they signed."""
        owner = content.sealed_owner(cid)
        if owner is None:
            return
        if not any(h in request.headers for h in _SIGNED_HEADERS):
            raise RequestRefused(
                401, f"{cid} is a private task's sealed copy: sign the request with the requester's key"
            )
        reader = auth.verify_account(request.headers, request.method, signed_path(request), b"")
        if reader.lower() != owner.lower():
            raise RequestRefused(403, f"{cid} is a private task's sealed copy; only its requester {owner} may read it")

    @app.post(UPLOAD_PATH, openapi_extra=UPLOAD_OPENAPI, responses=UPLOAD_RESPONSES)
    async def upload(request: Request, purpose: str | None = Query(None, alias="for"), root: str | None = Query(None)):
        """Store a CARv1 of `root` that the signing account registered on-chain: a task's input
        (`for=task:ID`, by its requester), a dataset's content (`dataset:ID`, its owner) or a
        model's weights or adapter (`model:ID`, its publisher). The request is signed with an
        empty body hash (the path names the root; every block is re-hashed against its CID), so
        the signer and the registration are checked before the body is read. The DAG must be
        complete; the upload counts against the account's quota. Idempotent."""
        refuse_when_stopping()
        purpose = purpose or ""  # no ?for= at all is refused like an empty one
        parse_purpose(purpose)
        account = await run_in_threadpool(
            auth.verify_account, request.headers, request.method, signed_path(request), b""
        )
        wanted = await run_in_threadpool(content.authorize, account, purpose, root)
        if await run_in_threadpool(content.held, account, wanted):  # a repeat: the body is not read
            return {"root": str(wanted), "already_held": True}
        if upload_slots.locked() or account in uploading:  # each body is held in memory while it is checked
            raise Unavailable(
                "api",
                "the oracle is receiving other uploads (one per account at a time); retry shortly",
                UPLOAD_RETRY_AFTER_S,
            )
        uploading.add(account)
        try:
            async with upload_slots:
                length = int(request.headers.get("content-length") or 0)
                # A slow sender holds a slot: the body must arrive at 256 KiB/s or better (30 s at least).
                body = await read_capped(
                    request,
                    content.limits.max_upload_bytes,
                    min(UPLOAD_READ_TIMEOUT_S, max(30.0, length / UPLOAD_MIN_RATE)),
                )
                accepted = await run_in_threadpool(content.upload, account, purpose, wanted, body)
        finally:
            uploading.discard(account)
        return accepted.to_json()

    @app.get("/v1/content/{cid}")
    def content_bytes(cid: str, request: Request):
        """A read-only gateway to the oracle's content store; agents re-check the CID. A private
        task's sealed copies need a request signed by its requester."""
        from tributa.store.errors import CidError, NotFound

        check_sealed_read(request, cid)
        try:  # streamed, each block re-hashed as it goes: a large file is never held whole
            return StreamingResponse(store.get(cid), media_type="application/octet-stream")
        except CidError as exc:
            raise RequestRefused(400, str(exc)) from None
        except NotFound:
            raise RequestRefused(404, f"{cid} is not in the oracle's store") from None

    @app.get("/v1/blocks/{cid}", responses=BLOCK_RESPONSES)
    def block(cid: str, request: Request):
        """One raw block of the oracle's content store by its CID (re-hashed as it is read), so
        an agent can rebuild a folder DAG (a registered adapter) block by block, checking each
        block against its CID. 404: not in the store; 400: not a CID."""
        from tributa.store.cid import Cid
        from tributa.store.errors import CidError, ContentIntegrityError, NotFound

        try:
            parsed = Cid.parse(cid)
        except CidError as exc:
            raise RequestRefused(400, str(exc)) from None
        check_sealed_read(request, cid)
        read = getattr(store, "read", None)
        if read is None:
            raise RequestRefused(404, "this oracle's store serves no raw blocks")
        try:
            data = read(parsed)
        except NotFound:
            raise RequestRefused(404, f"{cid} is not in the oracle's store") from None
        except ContentIntegrityError:  # the store has set the damaged copy aside: there is none to give
            raise RequestRefused(404, f"the oracle's copy of {cid} is damaged") from None
        if len(data) > MAX_BLOCK_BYTES:
            raise RequestRefused(404, f"{cid} is over the {MAX_BLOCK_BYTES}-byte block limit")
        return Response(data, media_type="application/vnd.ipld.raw")

    @app.get("/v1/agents/{address}")
    def agent_view(address: str):
        """What this oracle knows of an agent: its last poll (online: within ONLINE_WITHIN_S), its
        jobs by state, and how often its answers agreed with the settled verdict."""
        from web3 import Web3

        if not Web3.is_address(address):
            raise RequestRefused(400, f"{address[:60]!r} is not an address (0x + 40 hex)")
        agent = Web3.to_checksum_address(address)
        with db.session() as s:
            seen = s.get(AgentSeen, agent)
            by_state = dict(
                s.execute(select(Job.state, func.count()).where(Job.agent == agent).group_by(Job.state)).all()
            )
            agreed, judged = agreement(s, agent)
        last_poll = seen.last_poll_at if seen is not None else None
        return {
            "address": agent,
            "last_poll_at": last_poll,
            "online": last_poll is not None and now() - last_poll < ONLINE_WITHIN_S,
            "jobs": {state: int(n) for state, n in sorted(by_state.items())},
            "agreed": agreed,
            "judged": judged,
            "agreement_rate": agreed / judged if judged else None,
        }

    @app.get("/v1/tasks/{task_id}")
    def task(task_id: int):
        if not 0 <= task_id <= MAX_DB_ID:
            raise RequestRefused(404, f"task {task_id} is unknown to this oracle")
        with db.session() as s:
            t = s.get(Task, task_id)
            if t is None:
                raise RequestRefused(404, f"task {task_id} is unknown to this oracle")
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

    if ui is not None:
        ui.mount(app, db, store, metrics, info)
    return app
