"""schemathesis against the job API's served /openapi.json, on the real app over a real chain:
no generated request, positive or negative, may get a 5xx.

The signed endpoints declare their auth headers in the schema; each generated case for them is
sent with real headers made by the agent's own client code (JobClient.signed_headers) over the
exact bytes sent, so cases get past authentication and reach the body handling. Fixed seed
(derandomized Hypothesis) and a bounded number of examples per operation.
"""

from __future__ import annotations

import json
import time

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis.core import NOT_SET
from schemathesis.generation import GenerationMode

from oracle.api import create_app
from oracle.auth import AgentLimiter, RequestAuthenticator
from oracle.metrics import OracleMetrics
from oracle.service import AgentDirectory
from tests.oracle.test_api import Api, _result, api, leased  # noqa: F401 (fixtures)

EXAMPLES = {GenerationMode.POSITIVE: 60, GenerationMode.NEGATIVE: 40}
SIGNED_PREFIX = "/v1/jobs/"
# oracle/auth.py's refusals of the request itself (as opposed to its body's signatures).
AUTH_REFUSALS = (
    "missing header",
    "auth headers",
    "nonce non-negative",
    "request expired",
    "expiry is more",
    "request signature refused",
    "signature does not decode",
    "does not match the agent header",
    "not registered",
)
# A generated wait_s (up to 25 s) would make each poll case wait that long for a 204.
MAX_TEST_WAIT_S = 0.05


@pytest.fixture
def fuzz_client(api, contracts):
    # Generous per-agent limits: a 429 would stop cases before the code under test.
    auth = RequestAuthenticator(
        api.parts.db,
        contracts.chain_id,
        contracts.escrow.address,
        AgentDirectory(contracts).is_registered,
        limiter=AgentLimiter(rate_per_s=1e6, burst=10**6, max_polls=1000),
    )
    app = create_app(
        api.parts.db,
        api.parts.book,
        auth,
        api.parts.store,
        AgentDirectory(contracts),
        api.parts.chain_time,
        {"chain_id": contracts.chain_id},
        OracleMetrics(),
    )
    return app, TestClient(app, raise_server_exceptions=False)


def _body_bytes(case) -> bytes:
    if case.body is NOT_SET:
        return b""
    body = case.body
    if isinstance(body, dict) and isinstance(body.get("wait_s"), (int, float)) and not isinstance(body["wait_s"], bool):
        body = {**body, "wait_s": min(body["wait_s"], MAX_TEST_WAIT_S)}
    if isinstance(body, (bytes, bytearray)):
        return bytes(body)
    return json.dumps(body).encode()


def test_schemathesis__served_schema__no_5xx(api, leased, fuzz_client):
    _app, http = fuzz_client
    served = http.get("/openapi.json")
    assert served.status_code == 200
    schema = schemathesis.openapi.from_dict(served.json())
    signer = api.signer("agent")
    failures: list[str] = []
    counts: dict[str, int] = {}
    statuses: dict[str, dict[int, int]] = {}
    auth_refused: dict[str, int] = {}
    started = time.monotonic()

    def send(case, use_real_job: bool) -> None:
        if use_real_job and "job_id" in (case.path_parameters or {}):
            case.path_parameters = {**case.path_parameters, "job_id": leased["job_id"]}
        body = _body_bytes(case)
        path = case.formatted_path
        headers = {k: str(v) for k, v in (case.headers or {}).items()}
        if path.startswith(SIGNED_PREFIX):
            headers.update(signer.signed_headers(case.method.upper(), path, body))
        try:
            response = http.request(case.method.upper(), path, content=body, headers=headers, params=case.query or None)
        except UnicodeEncodeError:  # a header value the HTTP client itself cannot send: no request was made
            return
        counts[case.operation.label] = counts.get(case.operation.label, 0) + 1
        statuses.setdefault(case.operation.label, {}).setdefault(response.status_code, 0)
        statuses[case.operation.label][response.status_code] += 1
        if response.status_code in (401, 403) and any(m in response.text for m in AUTH_REFUSALS):
            auth_refused[case.operation.label] = auth_refused.get(case.operation.label, 0) + 1
        if response.status_code >= 500:
            failures.append(f"{case.method} {path} {body[:200]!r} -> {response.status_code} {response.text[:200]}")

    for result in schema.get_all_operations():
        operation = result.ok()
        for mode, examples in EXAMPLES.items():

            @settings(
                max_examples=examples,
                derandomize=True,
                deadline=None,
                database=None,
                suppress_health_check=list(HealthCheck),
            )
            @given(case=operation.as_strategy(generation_mode=mode), use_real_job=st.booleans())
            def run(case, use_real_job):
                send(case, use_real_job)

            try:
                run()
            except Unsatisfiable:  # no negative case exists (an operation without parameters or body)
                assert mode is GenerationMode.NEGATIVE, operation.label

    elapsed = time.monotonic() - started
    assert not failures, "\n".join(failures[:20])
    signed = {label: n for label, n in counts.items() if SIGNED_PREFIX in label}
    assert len(signed) == 4 and all(n >= 10 for n in signed.values()), counts
    # Signing works: most signed cases get past authentication (a 401/403 is not what they test).
    for label in signed:
        assert auth_refused.get(label, 0) <= counts[label] // 2, (label, statuses[label], auth_refused)
    assert elapsed < 120, f"schemathesis took {elapsed:.0f} s"
    print(f"schemathesis: {sum(counts.values())} requests in {elapsed:.1f} s: {statuses}")
