"""The job API on a real chain: every bad request gets a 4xx with a reason, never a 500 or a lost job."""

from __future__ import annotations

import json
import time

import pytest
from fastapi.testclient import TestClient

from compute_agent.client import JobClient
from oracle.api import create_app
from oracle.auth import RequestAuthenticator
from oracle.db import Job, JobState, TaskState
from oracle.metrics import OracleMetrics
from oracle.service import AgentDirectory
from tests.helpers import OracleParts, ensure_agent, post_raw_task, register_test_model, signer_for
from tributa.chain.eip712 import recover_lease_signer, sign_lease, sign_result
from tributa.store import cid as cidlib


class Api:
    def __init__(self, contracts, signers, tmp_path) -> None:
        self.contracts = contracts
        self.parts = OracleParts(contracts, signers, tmp_path)
        directory = AgentDirectory(contracts, ttl_s=0)
        auth = RequestAuthenticator(
            self.parts.db, contracts.chain_id, contracts.escrow.address, directory.is_registered
        )
        app = create_app(
            self.parts.db,
            self.parts.book,
            auth,
            self.parts.store,
            directory,
            self.parts.chain_time,
            {"chain_id": contracts.chain_id},
            OracleMetrics(),
        )
        self.http = TestClient(app, raise_server_exceptions=False)

    def signer(self, role: str) -> JobClient:
        account = signer_for(self.contracts, role).account
        return JobClient("http://testserver", account, self.contracts.chain_id, self.contracts.escrow.address)

    def post(self, path: str, payload, as_role: str = "agent", headers=None, raw: bytes | None = None):
        body = raw if raw is not None else json.dumps(payload).encode()
        signed = self.signer(as_role).signed_headers("POST", path, body)
        return self.http.post(path, content=body, headers={**signed, **(headers or {})})


@pytest.fixture
def api(contracts, signers, tmp_path, chain_snapshot):
    return Api(contracts, signers, tmp_path)


@pytest.fixture
def leased(api, contracts, signers):
    """A task leased to the 'agent' role through the API."""
    model = register_test_model(contracts, signers["publisher"])
    ensure_agent(contracts, signers["agent"], [model])
    input_cid = str(api.parts.store.put_bytes(b'{"texts":["api"]}'))
    task_id = post_raw_task(contracts, signers["requester"], model, cidlib.cid_to_digest(input_cid))
    api.parts.ingestor.poll_once()
    response = api.post("/v1/jobs/poll", {"wait_s": 0})
    assert response.status_code == 200, response.text
    assert response.json()["task_id"] == task_id
    return response.json()


def _result(api, offer, output=b'{"vectors":[[1.0]]}', role="agent"):
    digest = cidlib.cid_to_digest(str(api.parts.store.cid_of(output)))
    account = signer_for(api.contracts, role).account
    sig = sign_result(account, api.contracts.chain_id, api.contracts.escrow.address, offer["task_id"], digest)
    import base64

    return {
        "output_b64": base64.b64encode(output).decode(),
        "result_digest": "0x" + digest.hex(),
        "signature": "0x" + sig.hex(),
    }


def test_openapi__schema_lists_the_job_endpoints(api):
    paths = api.http.get("/openapi.json").json()["paths"]
    assert {
        "/v1/jobs/poll",
        "/v1/jobs/{job_id}/accept",
        "/v1/jobs/{job_id}/result",
        "/v1/jobs/{job_id}/error",
        "/metrics",
    } <= set(paths)


def test_docs__swagger_ui_from_local_assets__nothing_from_a_cdn(api):
    page = api.http.get("/docs")
    assert page.status_code == 200 and "/docs/assets/swagger-ui-bundle.js" in page.text
    assert "http://" not in page.text.replace("http://www.w3.org", "") and "https://" not in page.text  # offline
    for asset in ("swagger-ui-bundle.js", "swagger-ui.css"):
        response = api.http.get(f"/docs/assets/{asset}")
        assert response.status_code == 200 and len(response.content) > 10_000


def test_poll__no_signature__401_with_reason(api):
    response = api.http.post("/v1/jobs/poll", content=b"{}")
    assert response.status_code == 401 and "missing header" in response.json()["error"]


def test_poll__replayed_request__409(api, leased):
    body = b'{"wait_s":0}'
    headers = api.signer("agent").signed_headers("POST", "/v1/jobs/poll", body, nonce=12345)
    first = api.http.post("/v1/jobs/poll", content=body, headers=headers)
    second = api.http.post("/v1/jobs/poll", content=body, headers=headers)
    assert first.status_code in (200, 204)
    assert second.status_code == 409 and "replayed" in second.json()["error"]


def test_poll__expired_signature__401(api):
    body = b"{}"
    headers = api.signer("agent").signed_headers("POST", "/v1/jobs/poll", body, expiry=int(time.time()) - 5)
    response = api.http.post("/v1/jobs/poll", content=body, headers=headers)
    assert response.status_code == 401 and "expired" in response.json()["error"]


def test_poll__signature_over_another_body__401(api):
    headers = api.signer("agent").signed_headers("POST", "/v1/jobs/poll", b'{"wait_s":0}')
    response = api.http.post("/v1/jobs/poll", content=b'{"wait_s":1}', headers=headers)
    assert response.status_code == 401 and "does not match" in response.json()["error"]


def test_poll__unregistered_agent__403(api):
    response = api.post("/v1/jobs/poll", {"wait_s": 0}, as_role="buyer2")
    assert response.status_code == 403 and "not registered" in response.json()["error"]


@pytest.mark.parametrize("raw, status", [(b"not json", 400), (b"[1, 2]", 400), (b'{"wait_s": "soon"}', 422)])
def test_poll__malformed_body__4xx(api, leased, raw, status):
    response = api.post("/v1/jobs/poll", None, raw=raw)
    assert response.status_code == status and response.json()["error"]


def test_result__for_a_job_the_agent_does_not_hold__403_and_job_kept(api, leased, contracts, signers):
    ensure_agent(contracts, signers["agent2"], [leased["model_id"]])
    response = api.post(f"/v1/jobs/{leased['job_id']}/result", _result(api, leased, role="agent2"), as_role="agent2")
    assert response.status_code == 403 and "not leased to" in response.json()["error"]
    with api.parts.db.session() as s:
        assert s.get(Job, leased["job_id"]).state == JobState.LEASED


def test_result__unknown_job__404(api, leased):
    response = api.post("/v1/jobs/999999/result", _result(api, leased))
    assert response.status_code == 404


@pytest.mark.parametrize("mutate", ["digest", "signature", "base64"])
def test_result__malformed_or_mismatched__4xx_and_job_still_leased(api, leased, mutate):
    body = _result(api, leased)
    if mutate == "digest":
        body["result_digest"] = "0x" + "11" * 32
    elif mutate == "signature":
        body["signature"] = "0x1234"
    else:
        body["output_b64"] = "%%%"
    response = api.post(f"/v1/jobs/{leased['job_id']}/result", body)
    assert 400 <= response.status_code < 500 and response.json()["error"]
    with api.parts.db.session() as s:
        assert s.get(Job, leased["job_id"]).state == JobState.LEASED


def test_result__valid__accepted_once_then_409(api, leased):
    body = _result(api, leased)
    first = api.post(f"/v1/jobs/{leased['job_id']}/result", body)
    second = api.post(f"/v1/jobs/{leased['job_id']}/result", body)
    assert first.status_code == 200 and first.json()["accepted"]
    assert second.status_code == 409
    assert api.parts.state(leased["task_id"]) == TaskState.VERIFIED


def test_error_report__bad_kind__422(api, leased):
    response = api.post(f"/v1/jobs/{leased['job_id']}/error", {"kind": "oops", "error": "x"})
    assert response.status_code == 422


def test_oversized_body__413(api):
    big = b'{"pad":"' + b"x" * (8 * 1024 * 1024 + 10) + b'"}'
    response = api.post("/v1/jobs/poll", None, raw=big)
    assert response.status_code == 413


def _agent(api):
    from compute_agent.service import Agent
    from tributa.catalog import ModelCatalog

    store = api.parts.store
    return Agent(
        api.contracts, signer_for(api.contracts, "agent"), ModelCatalog(store), api.signer("agent"), store, None
    )


def test_poll__small_public_input__rides_along_and_the_agent_checks_it(api, leased):
    import base64

    from tributa.store.errors import StoreError

    agent = _agent(api)
    assert base64.b64decode(leased["input_b64"]) == b'{"texts":["api"]}'
    assert agent.inline_input(leased) == b'{"texts":["api"]}'
    forged = {**leased, "input_b64": base64.b64encode(b'{"texts":["forged"]}').decode()}
    with pytest.raises(StoreError, match="does not hash to"):
        agent.inline_input(forged)


def test_poll__input_over_the_inline_limit__is_fetched_by_cid(api, contracts, signers):
    from oracle.jobs import INLINE_INPUT_BYTES

    model = register_test_model(contracts, signers["publisher"])
    ensure_agent(contracts, signers["agent"], [model])
    big = json.dumps({"texts": ["x" * (INLINE_INPUT_BYTES + 1)]}).encode()
    input_cid = str(api.parts.store.put_bytes(big))
    post_raw_task(contracts, signers["requester"], model, cidlib.cid_to_digest(input_cid))
    api.parts.ingestor.poll_once()
    offer = api.post("/v1/jobs/poll", {"wait_s": 0}).json()
    assert offer["input_cid"] == input_cid and offer["input_b64"] is None
    assert api.http.get(f"/v1/content/{input_cid}").content == big


def test_metrics_relay__worker_updates_reach_the_api_process_registry():
    import multiprocessing

    from oracle.metrics import OracleMetrics, RelayedMetrics, apply_relayed

    queue = multiprocessing.get_context("fork").Queue()
    relayed = RelayedMetrics(queue)
    relayed.settled.labels("majority").inc()
    relayed.gas_spent.labels("settle").inc(31_612)
    relayed.latency.observe(0.8)
    queue.put(("not_a_metric", (), "inc", 1))  # ignored, not fatal
    queue.put(None)
    served = OracleMetrics()
    apply_relayed(served, queue)

    text = served.render().decode()
    assert 'tributa_oracle_settled_total{source="majority"} 1.0' in text
    assert 'tributa_oracle_gas_spent_total{purpose="settle"} 31612.0' in text
    assert "tributa_oracle_task_latency_seconds_count 1.0" in text


def _lease_signature(api, offer, role="agent", expires_at=None) -> str:
    account = signer_for(api.contracts, role).account
    expires = offer["lease_expires_at"] if expires_at is None else expires_at
    return (
        "0x"
        + sign_lease(account, api.contracts.chain_id, api.contracts.escrow.address, offer["task_id"], expires).hex()
    )


def _job(api, job_id: int) -> Job:
    with api.parts.db.session() as s:
        job = s.get(Job, job_id)
        s.expunge(job)
        return job


def test_poll__offer__carries_the_lease_expiry_as_integer_chain_time(api, leased):
    assert isinstance(leased["lease_expires_at"], int)
    assert leased["lease_expires_at"] == api.parts.chain_time() + int(api.parts.book.lease_s)


def test_accept__agent_signed_lease__stored_verified_and_lease_runs_full_length(api, leased):
    job_id = leased["job_id"]
    before = _job(api, job_id)
    assert before.lease_signature is None and before.lease_expires_at - before.leased_at <= 15.0  # not accepted: short

    response = api.post(f"/v1/jobs/{job_id}/accept", {"lease_signature": _lease_signature(api, leased)})

    assert response.status_code == 200, response.text
    assert response.json() == {"accepted": True, "lease_expires_at": leased["lease_expires_at"]}
    job = _job(api, job_id)
    sig = bytes.fromhex(job.lease_signature[2:])
    agent = signer_for(api.contracts, "agent").address
    assert (
        recover_lease_signer(
            api.contracts.chain_id, api.contracts.escrow.address, leased["task_id"], job.lease_chain_expires_at, sig
        )
        == agent
    )
    assert job.lease_expires_at == pytest.approx(job.leased_at + api.parts.book.lease_s)
    # The escrow computes the same EIP-712 digest the agent signed.
    from tributa.chain.eip712 import lease_digest

    onchain = api.contracts.escrow.functions.lease_digest_to_sign(leased["task_id"], leased["lease_expires_at"]).call()
    assert bytes(onchain) == lease_digest(
        api.contracts.chain_id, api.contracts.escrow.address, leased["task_id"], leased["lease_expires_at"]
    )


@pytest.mark.parametrize("case", ["other_key", "other_expiry", "other_task"])
def test_accept__lease_signature_not_the_agents__401_with_reason_and_nothing_stored(api, leased, case):
    if case == "other_key":
        signature = _lease_signature(api, leased, role="agent2")
    elif case == "other_expiry":
        signature = _lease_signature(api, leased, expires_at=leased["lease_expires_at"] + 3600)
    else:
        signature = _lease_signature(api, {**leased, "task_id": leased["task_id"] + 1})

    response = api.post(f"/v1/jobs/{leased['job_id']}/accept", {"lease_signature": signature})

    assert response.status_code == 401, response.text
    assert "lease signature recovers to" in response.json()["error"]
    assert "not to agent" in response.json()["error"]
    assert _job(api, leased["job_id"]).lease_signature is None


@pytest.mark.parametrize("body", [{}, {"lease_signature": "0x1234"}, {"lease_signature": "zz"}])
def test_accept__malformed_signature__422(api, leased, body):
    response = api.post(f"/v1/jobs/{leased['job_id']}/accept", body)
    assert response.status_code == 422 and "lease_signature" in response.json()["error"]


def test_accept__job_of_another_agent__403(api, leased):
    response = api.post(
        f"/v1/jobs/{leased['job_id']}/accept",
        {"lease_signature": _lease_signature(api, leased, role="agent2")},
        as_role="agent2",
    )
    assert response.status_code == 403


def test_expire_leases__lease_never_accepted__returns_to_the_pool_within_the_accept_window(api, leased):
    book = api.parts.book
    with api.parts.db.session() as s:
        job = s.get(Job, leased["job_id"])
        job.lease_expires_at = job.leased_at + book.accept_window_s - 10**6  # the accept window is over
    assert book.expire_leases() == 1
    assert api.parts.state(leased["task_id"]) == TaskState.OPEN


def test_result__with_the_lease_signature__stores_the_acceptance_without_an_accept_call(api, leased):
    body = {**_result(api, leased), "lease_signature": _lease_signature(api, leased)}
    response = api.post(f"/v1/jobs/{leased['job_id']}/result", body)
    assert response.status_code == 200, response.text
    job = _job(api, leased["job_id"])
    assert job.lease_signature == body["lease_signature"] and job.accepted_at is not None


def test_result__with_a_lease_signature_not_the_agents__401_and_nothing_recorded(api, leased):
    body = {**_result(api, leased), "lease_signature": _lease_signature(api, leased, role="agent2")}
    response = api.post(f"/v1/jobs/{leased['job_id']}/result", body)
    assert response.status_code == 401 and "lease signature recovers to" in response.json()["error"]
    job = _job(api, leased["job_id"])
    assert job.state == JobState.LEASED and job.lease_signature is None


def test_logging__the_job_api_servers_errors__are_json_lines_with_the_traceback(capsys):
    import logging

    from tributa.logs import setup_logging

    setup_logging(json_logs=True)  # undone after the test by conftest's _logging_restored
    try:
        raise RuntimeError("boom in a handler")
    except RuntimeError:
        logging.getLogger("uvicorn.error").exception("Exception in ASGI application")
    [line] = capsys.readouterr().err.strip().splitlines()
    entry = json.loads(line)
    assert entry["logger"] == "uvicorn.error" and entry["msg"] == "Exception in ASGI application"
    assert "RuntimeError: boom in a handler" in entry["exc"]


def test_agent_view__after_a_poll__online_with_its_jobs_and_nothing_judged_yet(api, leased, signers):
    view = api.http.get(f"/v1/agents/{signers['agent'].address.lower()}")
    assert view.status_code == 200, view.text
    doc = view.json()
    assert doc["address"] == signers["agent"].address and doc["online"] is True
    assert doc["jobs"] == {"leased": 1} and doc["judged"] == 0 and doc["agreement_rate"] is None

    stranger = api.http.get(f"/v1/agents/{signers['treasury'].address}").json()
    assert stranger["online"] is False and stranger["last_poll_at"] is None and stranger["jobs"] == {}
    bad = api.http.get("/v1/agents/0x1234")
    assert bad.status_code == 400 and "not an address" in bad.json()["error"]
