"""The job API under hostile clients and outages (issue 18), on a real chain and the real app:
every hostile request gets a 4xx with a reason, every outage a 503 with Retry-After, never a 500."""

from __future__ import annotations

import base64
import logging
import os
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import event
from web3 import Web3

from bench.loopback import raw_request
from oracle.api import classify_outage, create_app
from oracle.auth import MALLEABILITY_THRESHOLD, SECP256K1_N, AgentLimiter, BoundedCache, RequestAuthenticator
from oracle.db import AgentSeen, Job, JobState
from oracle.metrics import OracleMetrics
from oracle.service import AgentDirectory
from tests.helpers import ensure_agent, register_test_model, signer_for
from tests.oracle.test_api import Api, _lease_signature, _result, api, leased  # noqa: F401 (fixtures)
from tributa.chain.eip712 import recover_result_signer, sign_result
from tributa.devnet import free_port
from tributa.store import cid as cidlib

BIG_ID = 9223372036854775808  # 2**63: one past SQLite's INTEGER


def _job_state(api, job_id: int) -> str:
    with api.parts.db.session() as s:
        return s.get(Job, job_id).state


def _app(api, contracts, directory=None, limiter=None, stopping=lambda: False):
    directory = directory or AgentDirectory(contracts, ttl_s=0)
    auth = RequestAuthenticator(
        api.parts.db, contracts.chain_id, contracts.escrow.address, directory.is_registered, limiter=limiter
    )
    return create_app(
        api.parts.db,
        api.parts.book,
        auth,
        api.parts.store,
        directory,
        api.parts.chain_time,
        {"chain_id": contracts.chain_id},
        OracleMetrics(),
        stopping=stopping,
    )


def _signed_post(api, http, path: str, body: bytes, role: str = "agent"):
    return http.post(path, content=body, headers=api.signer(role).signed_headers("POST", path, body))


def _high_s(signature: bytes) -> bytes:
    """The same signature's malleable twin (n - s, the other v): eth_account recovers the same signer."""
    r, s, v = signature[:32], int.from_bytes(signature[32:64], "big"), signature[64]
    return r + (SECP256K1_N - s).to_bytes(32, "big") + bytes([55 - v])


# -- ids past 64 bits ------------------------------------------------------------------------------


@pytest.mark.parametrize("task_id", [BIG_ID, 10**30, -1])
def test_task__id_past_sqlite_integer__404_not_overflow(api, task_id):
    response = api.http.get(f"/v1/tasks/{task_id}")
    assert response.status_code == 404 and "unknown" in response.json()["error"]


@pytest.mark.parametrize(
    "endpoint, payload", [("result", None), ("error", {"kind": "runtime", "error": "x"}), ("accept", None)]
)
def test_job_endpoints__id_past_sqlite_integer__404(api, leased, endpoint, payload):
    if endpoint == "result":
        payload = _result(api, leased)
    elif endpoint == "accept":
        payload = {"lease_signature": _lease_signature(api, leased)}
    response = api.post(f"/v1/jobs/{BIG_ID}/{endpoint}", payload)
    assert response.status_code == 404 and "does not exist" in response.json()["error"]
    assert _job_state(api, leased["job_id"]) == JobState.LEASED


# -- bodies -----------------------------------------------------------------------------------------


def test_poll__wait_s_of_400_digits__422(api, leased):
    response = api.post("/v1/jobs/poll", None, raw=b'{"wait_s": 1' + b"0" * 399 + b"}")
    assert response.status_code == 422 and "wait_s" in response.json()["error"]


@pytest.mark.parametrize("raw", [b'{"wait_s": NaN}', b'{"wait_s": Infinity}', b'{"wait_s": true}'])
def test_poll__wait_s_not_a_finite_number__422(api, leased, raw):
    response = api.post("/v1/jobs/poll", None, raw=raw)
    assert response.status_code == 422 and "wait_s" in response.json()["error"]


def test_poll__body_of_100000_brackets__400_not_recursion_error(api, leased):
    response = api.post("/v1/jobs/poll", None, raw=b"[" * 100_000)
    assert response.status_code == 400 and "nests too deeply" in response.json()["error"]


@pytest.mark.parametrize("text, reason", [("\\ud800", "surrogate"), ("bad\\u0000byte", "NUL")])
def test_error_report__text_the_database_cannot_store__422_and_job_kept(api, leased, text, reason):
    raw = b'{"kind": "input", "error": "' + text.encode() + b'"}'
    response = api.post(f"/v1/jobs/{leased['job_id']}/error", None, raw=raw)
    assert response.status_code == 422 and reason in response.json()["error"]
    assert _job_state(api, leased["job_id"]) == JobState.LEASED


# -- signatures -------------------------------------------------------------------------------------


@pytest.mark.parametrize("fill", [b"\x00", b"\xff"])
def test_request_signature__65_bytes_of_00_or_ff__401(api, leased, fill):
    body = b'{"wait_s": 0}'
    headers = api.signer("agent").signed_headers("POST", "/v1/jobs/poll", body)
    headers["x-tributa-signature"] = "0x" + (fill * 65).hex()
    response = api.http.post("/v1/jobs/poll", content=body, headers=headers)
    assert response.status_code == 401 and "signature" in response.json()["error"]


@pytest.mark.parametrize("fill", [b"\x00", b"\xff"])
def test_result_signature__65_bytes_of_00_or_ff__401_and_job_kept(api, leased, fill):
    body = {**_result(api, leased), "signature": "0x" + (fill * 65).hex()}
    response = api.post(f"/v1/jobs/{leased['job_id']}/result", body)
    assert response.status_code == 401 and "rejected by the escrow" in response.json()["error"]
    assert _job_state(api, leased["job_id"]) == JobState.LEASED


def _noncanonical(signature: bytes, how: str) -> bytes:
    if how == "high_s":
        twisted = _high_s(signature)
        assert int.from_bytes(twisted[32:64], "big") > MALLEABILITY_THRESHOLD
        return twisted
    return signature[:64] + bytes([signature[64] - 27])  # v of 0 or 1


@pytest.mark.parametrize("how", ["high_s", "v_0_or_1"])
def test_result_signature__valid_for_eth_account_but_not_for_the_escrow__401_and_nothing_recorded(
    api, leased, contracts, how
):
    body = _result(api, leased)
    signature = bytes.fromhex(body["signature"][2:])
    twisted = _noncanonical(signature, how)
    digest = bytes.fromhex(body["result_digest"][2:])
    # eth_account takes it as the agent's signature: the API must not, since TaskEscrow._recover does not.
    agent = signer_for(contracts, "agent").address
    assert (
        recover_result_signer(contracts.chain_id, contracts.escrow.address, leased["task_id"], digest, twisted) == agent
    )

    response = api.post(f"/v1/jobs/{leased['job_id']}/result", {**body, "signature": "0x" + twisted.hex()})

    assert response.status_code == 401, response.text
    assert "rejected by the escrow" in response.json()["error"]
    job = _job_state(api, leased["job_id"])
    assert job == JobState.LEASED
    # The canonical signature is still taken.
    assert api.post(f"/v1/jobs/{leased['job_id']}/result", body).status_code == 200


@pytest.mark.parametrize("how", ["high_s", "v_0_or_1"])
@pytest.mark.parametrize("where", ["accept", "result"])
def test_lease_signature__not_canonical__refused_and_not_stored(api, leased, how, where):
    twisted = "0x" + _noncanonical(bytes.fromhex(_lease_signature(api, leased)[2:]), how).hex()
    if where == "accept":
        response = api.post(f"/v1/jobs/{leased['job_id']}/accept", {"lease_signature": twisted})
    else:
        response = api.post(f"/v1/jobs/{leased['job_id']}/result", {**_result(api, leased), "lease_signature": twisted})
    assert response.status_code == 401 and "rejected by the escrow" in response.json()["error"]
    with api.parts.db.session() as s:
        job = s.get(Job, leased["job_id"])
        assert job.lease_signature is None and job.state == JobState.LEASED


@pytest.mark.parametrize("how", ["high_s", "v_0_or_1"])
def test_request_signature__not_canonical__401(api, leased, how):
    body = b'{"wait_s": 0}'
    headers = api.signer("agent").signed_headers("POST", "/v1/jobs/poll", body)
    twisted = _noncanonical(bytes.fromhex(headers["x-tributa-signature"][2:]), how)
    headers["x-tributa-signature"] = "0x" + twisted.hex()
    response = api.http.post("/v1/jobs/poll", content=body, headers=headers)
    assert response.status_code == 401 and "request signature refused" in response.json()["error"]


# -- verify first, store after ----------------------------------------------------------------------


def _store_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


def test_result__ten_refused_3_mib_submits__leave_the_store_size_unchanged(api, leased, contracts, tmp_path):
    account = signer_for(contracts, "agent").account
    other = signer_for(contracts, "agent2").account
    escrow = contracts.escrow.address
    before = _store_bytes(tmp_path / "store")
    statuses = []
    for i in range(10):
        output = os.urandom(3 * 1024 * 1024)  # a fresh output each time: nothing deduplicates
        digest = cidlib.cid_to_digest(str(api.parts.store.cid_of(output)))
        kind = i % 3
        if kind == 0:  # the digest is another output's
            digest = cidlib.cid_to_digest(str(api.parts.store.cid_of(output + b"!")))
            sig = sign_result(account, contracts.chain_id, escrow, leased["task_id"], digest)
        elif kind == 1:  # signed with another agent's key
            sig = sign_result(other, contracts.chain_id, escrow, leased["task_id"], digest)
        else:  # the malleable twin of the agent's own signature
            sig = _high_s(sign_result(account, contracts.chain_id, escrow, leased["task_id"], digest))
        body = {
            "output_b64": base64.b64encode(output).decode(),
            "result_digest": "0x" + digest.hex(),
            "signature": "0x" + sig.hex(),
        }
        statuses.append(api.post(f"/v1/jobs/{leased['job_id']}/result", body).status_code)
    assert all(400 <= status < 500 for status in statuses), statuses
    assert _store_bytes(tmp_path / "store") == before
    assert _job_state(api, leased["job_id"]) == JobState.LEASED


def test_result__refused_for_a_job_already_submitted__stores_nothing(api, leased, tmp_path):
    assert api.post(f"/v1/jobs/{leased['job_id']}/result", _result(api, leased)).status_code == 200
    before = _store_bytes(tmp_path / "store")
    response = api.post(f"/v1/jobs/{leased['job_id']}/result", _result(api, leased, output=os.urandom(3 << 20)))
    assert response.status_code == 409
    assert _store_bytes(tmp_path / "store") == before


# -- concurrency and limits -------------------------------------------------------------------------


def test_poll__20_concurrent_first_polls_by_a_new_agent__never_500(api, contracts, signers):
    model = register_test_model(contracts, signers["publisher"])
    ensure_agent(contracts, signers["agent"], [model])
    agent = signers["agent"].address
    with api.parts.db.session() as s:
        assert s.get(AgentSeen, agent) is None  # a new agent: its row is created by these polls
    # The per-agent long-poll cap (8) would answer most of these 429: raise it, so all 20 race.
    http = TestClient(_app(api, contracts, limiter=AgentLimiter(max_polls=32)), raise_server_exceptions=False)
    barrier = threading.Barrier(20)

    def first_poll(_):
        barrier.wait()
        return _signed_post(api, http, "/v1/jobs/poll", b'{"wait_s": 0}').status_code

    with ThreadPoolExecutor(20) as pool:
        statuses = list(pool.map(first_poll, range(20)))
    assert statuses == [204] * 20
    with api.parts.db.session() as s:
        assert s.get(AgentSeen, agent) is not None


def test_poll__20_concurrent_polls_with_the_default_limits__429_past_the_cap_never_500(api, leased):
    barrier = threading.Barrier(20)

    def poll(_):
        barrier.wait()
        response = api.post("/v1/jobs/poll", {"wait_s": 1})
        return response.status_code, response.headers.get("retry-after")

    with ThreadPoolExecutor(20) as pool:
        results = list(pool.map(poll, range(20)))
    statuses = [status for status, _ in results]
    assert set(statuses) <= {204, 429} and statuses.count(204) >= 1, statuses
    assert all(retry is not None for status, retry in results if status == 429)


def test_requests__past_the_agents_rate__429_with_retry_after(api, leased, contracts):
    http = TestClient(
        _app(api, contracts, limiter=AgentLimiter(rate_per_s=0.5, burst=3)), raise_server_exceptions=False
    )
    statuses = [_signed_post(api, http, "/v1/jobs/poll", b'{"wait_s": 0}') for _ in range(5)]
    assert [r.status_code for r in statuses[:3]] == [204, 204, 204]
    refused = statuses[3]
    assert refused.status_code == 429 and "requests/s" in refused.json()["error"]
    assert 1 <= int(refused.headers["retry-after"]) <= 2
    # Another agent's allowance is its own.
    ensure_agent(contracts, signer_for(contracts, "agent2"), [leased["model_id"]])
    assert _signed_post(api, http, "/v1/jobs/poll", b'{"wait_s": 0}', role="agent2").status_code in (200, 204)


def test_poll__past_the_agents_concurrent_long_polls__429_with_retry_after(api, leased, contracts):
    http = TestClient(_app(api, contracts, limiter=AgentLimiter(max_polls=1)), raise_server_exceptions=False)
    with ThreadPoolExecutor(1) as pool:
        holding = pool.submit(_signed_post, api, http, "/v1/jobs/poll", b'{"wait_s": 3}')
        time.sleep(1.0)
        started = time.monotonic()
        second = _signed_post(api, http, "/v1/jobs/poll", b'{"wait_s": 3}')
        assert time.monotonic() - started < 1.5  # refused at once, not queued
        assert second.status_code == 429 and "long-polls" in second.json()["error"]
        assert int(second.headers["retry-after"]) >= 1
        assert holding.result().status_code == 204
    assert _signed_post(api, http, "/v1/jobs/poll", b'{"wait_s": 0}').status_code == 204  # its slot came back


def test_bounded_cache__keeps_the_most_recently_used_entries():
    cache = BoundedCache(maxsize=3)
    for i in range(5):
        cache[f"0x{i}"] = i
    assert list(cache) == ["0x2", "0x3", "0x4"]
    assert cache.get("0x2") == 2  # read: now the most recent
    cache["0x5"] = 5
    assert list(cache) == ["0x4", "0x2", "0x5"]


def test_agent_directory__with_a_bounded_cache__holds_at_most_its_bound_of_never_seen_addresses(contracts):
    directory = AgentDirectory(contracts)
    directory._cache = BoundedCache(maxsize=4)  # as oracle/api_process.py wires it
    for i in range(10):
        assert directory.is_registered(Web3.to_checksum_address("0x" + f"{i + 1:040x}")) is False
    assert len(directory._cache) == 4


# -- body size, before reading ----------------------------------------------------------------------


def test_oversized_stream__413_at_the_cap_without_content_length(api):
    sent = []

    def chunks():
        for _ in range(20):  # 20 MiB, chunked: no Content-Length to refuse it on
            sent.append(1)
            yield b"x" * (1 << 20)

    response = api.http.post("/v1/jobs/poll", content=chunks())
    assert response.status_code == 413 and "over" in response.json()["error"]


@pytest.fixture
def served(api, contracts):
    """The app on a real uvicorn server (the settings oracle/api_process.py runs it with)."""
    import uvicorn

    from oracle.api_process import server_config

    port = free_port()
    server = uvicorn.Server(
        server_config(_app(api, contracts), "127.0.0.1", port, header_timeout_s=1.0, max_connections=8)
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    yield SimpleNamespace(port=port, server=server)
    server.should_exit = True
    thread.join(10)


def test_content_length_of_256_mib__413_before_the_body_is_read(served):
    head = (
        b"POST /v1/jobs/poll HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: 268435456\r\n\r\n{}"
    )
    data, elapsed = raw_request(served.port, head)
    assert data.startswith(b"HTTP/1.1 413"), data[:200]
    assert elapsed < 1.0, f"413 took {elapsed:.2f} s"


def test_half_open_connection__closed_after_the_header_timeout(served):
    with socket.create_connection(("127.0.0.1", served.port), timeout=5) as conn:
        conn.sendall(b"POST /v1/jobs/poll HTTP/1.1\r\nHost: x\r\n")  # headers never finish
        started = time.monotonic()
        assert conn.recv(1024) == b""  # the server hangs up
        assert time.monotonic() - started < 3.0


def test_connections_past_the_cap__closed_at_once_and_health_still_answers(served):
    import httpx

    held = [socket.create_connection(("127.0.0.1", served.port), timeout=5) for _ in range(8)]
    try:
        time.sleep(0.2)
        extra = socket.create_connection(("127.0.0.1", served.port), timeout=5)
        extra.settimeout(2)
        assert extra.recv(1) == b""  # refused by the cap, before the header timeout
        extra.close()
    finally:
        for conn in held:
            conn.close()
    time.sleep(0.3)
    assert httpx.get(f"http://127.0.0.1:{served.port}/v1/health", timeout=5).status_code == 200


# -- outages: 503 with Retry-After, one log line ----------------------------------------------------


def test_node_down__503_with_retry_after_and_one_log_line(api, leased, contracts, caplog):
    from web3 import HTTPProvider, Web3

    dead = free_port()  # a port nothing listens on: the node is down
    w3 = Web3(HTTPProvider(f"http://127.0.0.1:{dead}", exception_retry_configuration=None))
    down = SimpleNamespace(escrow=w3.eth.contract(address=contracts.escrow.address, abi=contracts.escrow.abi))
    http = TestClient(_app(api, contracts, directory=AgentDirectory(down, ttl_s=0)), raise_server_exceptions=False)
    with caplog.at_level(logging.WARNING, logger="tributa.oracle.api"):
        responses = [_signed_post(api, http, "/v1/jobs/poll", b'{"wait_s": 0}') for _ in range(3)]
    assert [r.status_code for r in responses] == [503] * 3
    assert all(int(r.headers["retry-after"]) >= 1 for r in responses)
    assert "node" in responses[0].json()["error"]
    lines = [r for r in caplog.records if "unavailable" in r.getMessage()]
    assert len(lines) == 1 and "chain node" in lines[0].getMessage()
    assert not any(r.exc_info for r in caplog.records)


def test_database_read_only__503_then_recovers_with_a_log_line(api, leased, caplog):
    engine = api.parts.db.engine

    def read_only(dbapi_conn, _record):
        dbapi_conn.execute("PRAGMA query_only=ON")

    event.listen(engine, "connect", read_only)
    engine.dispose()
    try:
        with caplog.at_level(logging.WARNING, logger="tributa.oracle.api"):
            responses = []
            for _ in range(3):
                responses.append(api.post("/v1/jobs/poll", {"wait_s": 0}))
                assert api.http.get("/v1/health").status_code == 200  # touches no storage: ends nothing
                assert api.http.get("/v1/tasks/-1").status_code in (404, 422)  # refused before any query
            assert not any("available again" in r.getMessage() for r in caplog.records)
    finally:
        event.remove(engine, "connect", read_only)
        engine.dispose()
    assert [r.status_code for r in responses] == [503] * 3
    assert "readonly" in responses[0].json()["error"] and int(responses[0].headers["retry-after"]) >= 1
    with caplog.at_level(logging.WARNING, logger="tributa.oracle.api"):
        assert api.post("/v1/jobs/poll", {"wait_s": 0}).status_code in (200, 204)
    messages = [r.getMessage() for r in caplog.records]
    assert sum("unavailable" in m for m in messages) == 1
    assert any("available again after" in m for m in messages)


def test_disk_full_error__classified_as_a_disk_outage(tmp_path):
    from sqlalchemy import create_engine, text
    from sqlalchemy.exc import OperationalError

    engine = create_engine(f"sqlite:///{tmp_path / 'tiny.sqlite'}")
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE t (b BLOB)"))
    with pytest.raises(OperationalError) as caught, engine.begin() as conn:
        conn.execute(text("PRAGMA max_page_count = 3"))
        conn.execute(text("INSERT INTO t VALUES (zeroblob(100000))"))
    assert "full" in str(caught.value)
    outage = classify_outage(caught.value)
    assert outage is not None and outage.kind == "disk"
    assert classify_outage(ValueError("a bug")) is None


def test_shutdown__in_flight_long_poll_ends_with_503_and_retry_after(api, leased, contracts):
    stopping = threading.Event()
    http = TestClient(_app(api, contracts, stopping=stopping.is_set), raise_server_exceptions=False)
    with ThreadPoolExecutor(1) as pool:
        started = time.monotonic()
        polling = pool.submit(_signed_post, api, http, "/v1/jobs/poll", b'{"wait_s": 10}')
        time.sleep(0.5)
        stopping.set()
        response = polling.result(timeout=5)
    assert time.monotonic() - started < 3.0
    assert response.status_code == 503 and "shutting down" in response.json()["error"]
    assert int(response.headers["retry-after"]) >= 1


# -- the served schema ------------------------------------------------------------------------------


def test_openapi__signed_endpoints_declare_their_body_and_auth_headers(api):
    paths = api.http.get("/openapi.json").json()["paths"]
    for path in ("/v1/jobs/poll", "/v1/jobs/{job_id}/accept", "/v1/jobs/{job_id}/result", "/v1/jobs/{job_id}/error"):
        operation = paths[path]["post"]
        headers = {p["name"] for p in operation["parameters"] if p["in"] == "header"}
        assert headers == {"x-tributa-agent", "x-tributa-nonce", "x-tributa-expiry", "x-tributa-signature"}, path
        assert "application/json" in operation["requestBody"]["content"], path
    assert paths["/v1/jobs/{job_id}/result"]["post"]["requestBody"]["content"]["application/json"]["schema"][
        "required"
    ] == ["output_b64", "result_digest", "signature"]


def test_server_shutdown__in_flight_long_poll_on_uvicorn_ends_with_503(api, leased, contracts):
    """uvicorn's graceful shutdown (what SIGTERM starts): the poll sees should_exit and answers 503."""
    import httpx
    import uvicorn

    from oracle.api_process import server_config

    port = free_port()
    holder: list = []
    app = _app(api, contracts, stopping=lambda: bool(holder) and holder[0].should_exit)
    server = uvicorn.Server(server_config(app, "127.0.0.1", port))
    holder.append(server)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    body = b'{"wait_s": 20}'
    headers = api.signer("agent").signed_headers("POST", "/v1/jobs/poll", body)
    with ThreadPoolExecutor(1) as pool:
        polling = pool.submit(
            httpx.post, f"http://127.0.0.1:{port}/v1/jobs/poll", content=body, headers=headers, timeout=30
        )
        time.sleep(1.0)
        started = time.monotonic()
        server.should_exit = True
        response = polling.result(timeout=10)
    thread.join(10)
    assert response.status_code == 503 and "shutting down" in response.json()["error"]
    assert int(response.headers["retry-after"]) >= 1
    assert time.monotonic() - started < 3.0 and not thread.is_alive()
