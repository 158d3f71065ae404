"""Batch leasing: one poll with "max_jobs" leases up to the agent's free capacity, on a real chain
and a real oracle (API tests), and with the same rules as a single lease on both database
backends (book tests)."""

from __future__ import annotations

import json
import threading
import time

import pytest
from sqlalchemy import func, select

from compute_agent.bootstrap import public_key
from compute_agent.registration import AgentProfile, ensure_registered
from oracle.api import create_app
from oracle.auth import RequestAuthenticator
from oracle.db import Database, Job, JobState, Task, TaskState
from oracle.jobs import JobBook
from oracle.metrics import OracleMetrics
from oracle.service import AgentDirectory
from tests.helpers import OracleParts, post_raw_task, register_test_model, signer_for
from tests.oracle.support import backend_params, database_url
from tributa.store import cid as cidlib
from tributa.store import open_store

OFFER_KEYS = {
    "job_id",
    "task_id",
    "model_id",
    "input_cid",
    "input_digest",
    "deadline",
    "lease_expires_at",
    "input_envelope_b64",
    "input_b64",
}


class BatchApi:
    """The job API over a fresh oracle database, as tests/oracle/test_api.py builds it, with its metrics kept."""

    def __init__(self, contracts, signers, tmp_path) -> None:
        from fastapi.testclient import TestClient

        self.contracts = contracts
        self.signers = signers
        self.parts = OracleParts(contracts, signers, tmp_path)
        self.metrics = OracleMetrics()
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
            self.metrics,
        )
        self.http = TestClient(app, raise_server_exceptions=False)

    def client(self, role: str = "agent"):
        """The agent's real JobClient, its requests served in-process (TestClient is an httpx.Client)."""
        from compute_agent.client import JobClient

        client = JobClient(
            "http://testserver",
            signer_for(self.contracts, role).account,
            self.contracts.chain_id,
            self.contracts.escrow.address,
        )
        client.http = self.http
        return client

    def post(self, path: str, payload, role: str = "agent", raw: bytes | None = None):
        body = raw if raw is not None else json.dumps(payload).encode()
        headers = self.client(role).signed_headers("POST", path, body)
        return self.http.post(path, content=body, headers=headers)

    def register(self, role: str, models: list[int], capacity: int) -> None:
        signer = self.signers[role]
        ensure_registered(self.contracts, signer, AgentProfile(models, 0, capacity, public_key(signer)))

    def post_tasks(self, model: int, n: int, k: int = 1) -> list[int]:
        ids = []
        for i in range(n):
            input_cid = str(
                self.parts.store.put_bytes(json.dumps({"texts": [f"batch {k} {i} {time.time_ns()}"]}).encode())
            )
            ids.append(
                post_raw_task(self.contracts, self.signers["requester"], model, cidlib.cid_to_digest(input_cid), k=k)
            )
        self.parts.ingestor.poll_once()
        return ids

    def held(self, role: str = "agent") -> int:
        agent = signer_for(self.contracts, role).address
        with self.parts.db.session() as s:
            return s.execute(
                select(func.count()).select_from(Job).where(Job.agent == agent, Job.state == JobState.LEASED)
            ).scalar_one()

    def leased_total(self) -> float:
        for line in self.metrics.render().decode().splitlines():
            if line.startswith("tributa_oracle_jobs_leased_total "):
                return float(line.split()[1])
        raise AssertionError("no lease counter in the metrics")

    def result_body(self, offer: dict, role: str = "agent") -> dict:
        import base64

        from tributa.chain.eip712 import sign_result

        output = json.dumps({"vectors": [[float(offer["task_id"])]]}).encode()
        digest = cidlib.cid_to_digest(str(self.parts.store.cid_of(output)))
        sig = sign_result(
            signer_for(self.contracts, role).account,
            self.contracts.chain_id,
            self.contracts.escrow.address,
            offer["task_id"],
            digest,
        )
        return {
            "output_b64": base64.b64encode(output).decode(),
            "result_digest": "0x" + digest.hex(),
            "signature": "0x" + sig.hex(),
        }


@pytest.fixture
def api(contracts, signers, tmp_path, chain_snapshot):
    return BatchApi(contracts, signers, tmp_path)


@pytest.fixture
def model(api, contracts, signers):
    return register_test_model(contracts, signers["publisher"])


# --- the API -------------------------------------------------------------------------------------


def test_poll_batch__more_asked_than_free_capacity__leases_the_free_capacity_and_never_more(api, model):
    api.register("agent", [model], capacity=3)
    task_ids = api.post_tasks(model, 5)

    first = api.post("/v1/jobs/poll", {"wait_s": 0, "max_jobs": 2})
    assert first.status_code == 200, first.text
    assert [o["task_id"] for o in first.json()["jobs"]] == task_ids[:2]  # oldest first
    second = api.post("/v1/jobs/poll", {"wait_s": 0, "max_jobs": 10})
    assert second.status_code == 200, second.text
    assert [o["task_id"] for o in second.json()["jobs"]] == task_ids[2:3]  # 3 - 2 held
    assert api.held() == 3
    full = api.post("/v1/jobs/poll", {"wait_s": 0, "max_jobs": 10})
    assert full.status_code == 204 and api.held() == 3
    assert api.leased_total() == 3  # one per job, not per poll

    # A submitted job frees its slot: the next batch gets exactly one more.
    done = first.json()["jobs"][0]
    assert api.post(f"/v1/jobs/{done['job_id']}/result", api.result_body(done)).status_code == 200
    again = api.post("/v1/jobs/poll", {"wait_s": 0, "max_jobs": 10})
    assert [o["task_id"] for o in again.json()["jobs"]] == task_ids[3:4]
    assert api.held() == 3 and api.leased_total() == 4


def test_poll_batch__offers_have_the_single_offer_shape_and_each_can_be_accepted_and_submitted(api, model):
    from tributa.chain.eip712 import sign_lease

    api.register("agent", [model], capacity=4)
    task_ids = api.post_tasks(model, 3)

    response = api.post("/v1/jobs/poll", {"wait_s": 0, "max_jobs": 4})

    assert response.status_code == 200 and set(response.json()) == {"jobs"}
    jobs = response.json()["jobs"]
    assert sorted(o["task_id"] for o in jobs) == sorted(task_ids)
    assert len({o["job_id"] for o in jobs}) == 3
    account = signer_for(api.contracts, "agent").account
    for offer in jobs:
        assert set(offer) == OFFER_KEYS and offer["input_b64"]
        assert offer["lease_expires_at"] == api.parts.chain_time() + int(api.parts.book.lease_s)
        lease_sig = sign_lease(
            account, api.contracts.chain_id, api.contracts.escrow.address, offer["task_id"], offer["lease_expires_at"]
        )
        accepted = api.post(f"/v1/jobs/{offer['job_id']}/accept", {"lease_signature": "0x" + lease_sig.hex()})
        assert accepted.status_code == 200, accepted.text
        submitted = api.post(f"/v1/jobs/{offer['job_id']}/result", api.result_body(offer))
        assert submitted.status_code == 200 and submitted.json()["accepted"], submitted.text
    assert {api.parts.state(t) for t in task_ids} == {TaskState.VERIFIED}
    assert api.held() == 0


def test_poll_batch__redundant_task__never_twice_to_one_agent_in_a_batch_and_its_second_copy_goes_to_another(
    api, model
):
    api.register("agent", [model], capacity=4)
    api.register("agent2", [model], capacity=4)
    (twice,) = api.post_tasks(model, 1, k=2)
    (once,) = api.post_tasks(model, 1, k=1)

    mine = api.post("/v1/jobs/poll", {"wait_s": 0, "max_jobs": 4}).json()["jobs"]
    assert sorted(o["task_id"] for o in mine) == [twice, once]
    assert api.post("/v1/jobs/poll", {"wait_s": 0, "max_jobs": 4}).status_code == 204  # capacity left, no task

    theirs = api.post("/v1/jobs/poll", {"wait_s": 0, "max_jobs": 4}, role="agent2").json()["jobs"]
    assert [o["task_id"] for o in theirs] == [twice]
    with api.parts.db.session() as s:
        agents = s.execute(select(Job.agent).where(Job.task_id == twice)).scalars().all()
    assert sorted(agents) == sorted([signer_for(api.contracts, r).address for r in ("agent", "agent2")])


def test_poll__without_max_jobs__still_one_bare_offer_even_with_capacity_free(api, model):
    api.register("agent", [model], capacity=3)
    task_ids = api.post_tasks(model, 3)

    response = api.post("/v1/jobs/poll", {"wait_s": 0})

    assert response.status_code == 200 and set(response.json()) == OFFER_KEYS
    assert response.json()["task_id"] == task_ids[0]
    assert api.held() == 1 and api.leased_total() == 1
    assert api.client().poll(wait_s=0)["task_id"] == task_ids[1]


@pytest.mark.parametrize("value", ["3", 1.5, 2.0, True, False, None, [2], {"n": 2}, 0, -1, 1001, 10**30])
def test_poll_batch__max_jobs_not_an_integer_from_1_to_1000__422_with_reason_and_nothing_leased(api, model, value):
    api.register("agent", [model], capacity=3)
    api.post_tasks(model, 1)

    response = api.post("/v1/jobs/poll", {"wait_s": 0, "max_jobs": value})

    assert response.status_code == 422, response.text
    assert "max_jobs must be" in response.json()["error"] and "1000" in response.json()["error"]
    assert api.held() == 0


def test_poll_batch__max_jobs_at_the_bound__accepted_and_capped_by_capacity(api, model):
    api.register("agent", [model], capacity=2)
    api.post_tasks(model, 3)

    response = api.post("/v1/jobs/poll", {"wait_s": 0, "max_jobs": 1000})

    assert response.status_code == 200 and len(response.json()["jobs"]) == 2


def test_poll_batch__long_poll__answers_with_the_first_job_that_arrives_without_waiting_to_fill_the_batch(api, model):
    api.register("agent", [model], capacity=4)

    def post_later() -> None:
        time.sleep(0.5)
        api.post_tasks(model, 1)

    poster = threading.Thread(target=post_later)
    started = time.monotonic()
    poster.start()
    try:
        response = api.post("/v1/jobs/poll", {"wait_s": 10, "max_jobs": 4})
    finally:
        poster.join(30)
    elapsed = time.monotonic() - started

    assert response.status_code == 200 and len(response.json()["jobs"]) == 1
    assert elapsed < 8, f"the poll waited {elapsed:.1f} s for a batch it had no need to fill"


def test_poll_batch__nothing_within_wait_s__204(api, model):
    api.register("agent", [model], capacity=2)
    started = time.monotonic()
    response = api.post("/v1/jobs/poll", {"wait_s": 0.3, "max_jobs": 2})
    assert response.status_code == 204 and time.monotonic() - started >= 0.3


def test_client_poll_many__returns_the_offers_then_an_empty_list(api, model):
    api.register("agent", [model], capacity=3)
    task_ids = api.post_tasks(model, 2)
    client = api.client()

    offers = client.poll_many(3, wait_s=0)

    assert [o["task_id"] for o in offers] == task_ids
    assert client.poll_many(3, wait_s=0) == []


def test_openapi__poll_documents_max_jobs_and_the_batch_answer(api):
    poll = api.http.get("/openapi.json").json()["paths"]["/v1/jobs/poll"]["post"]
    props = poll["requestBody"]["content"]["application/json"]["schema"]["properties"]
    assert props["max_jobs"]["maximum"] == 1000 and props["max_jobs"]["minimum"] == 1
    assert {"200", "204"} <= set(poll["responses"])


# --- the book, on both database backends ---------------------------------------------------------

AGENT = "0x" + "aa" * 20
OTHER = "0x" + "bb" * 20


@pytest.fixture(params=backend_params())
def book(request, tmp_path):
    with database_url(request.param, tmp_path) as url:
        db = Database(url)
        yield JobBook(db, open_store(tmp_path / "store"), 31337, "0x" + "ee" * 20, lease_s=60)
        db.engine.dispose()


def _add_tasks(book: JobBook, inputs: list[bytes | None], k: int = 1, first_id: int = 1) -> list[int]:
    """Tasks whose inputs are in the store (None: an input the store does not hold)."""
    import os

    ids = []
    with book.db.session() as s:
        for i, data in enumerate(inputs):
            digest = cidlib.cid_to_digest(str(book.store.put_bytes(data))) if data is not None else os.urandom(32)
            task_id = first_id + i
            s.add(
                Task(
                    task_id=task_id,
                    requester="0x" + "11" * 20,
                    model_id=1,
                    input_digest="0x" + digest.hex(),
                    fee=10**15,
                    model_fee=10**14,
                    deadline=2**40,
                    k=k,
                    state=TaskState.OPEN,
                    posted_block=1,
                    posted_at=0.0,
                )
            )
            ids.append(task_id)
    return ids


def test_lease_many__capacity_bounds_the_batch_across_calls(book):
    ids = _add_tasks(book, [b'{"texts":["%d"]}' % i for i in range(6)])

    first = book.lease_many(AGENT, {1}, 1000, capacity=4, max_jobs=3)
    second = book.lease_many(AGENT, {1}, 1000, capacity=4, max_jobs=3)
    third = book.lease_many(AGENT, {1}, 1000, capacity=4, max_jobs=3)

    assert [o.task_id for o in first] == ids[:3]
    assert [o.task_id for o in second] == ids[3:4]
    assert third == []
    assert book.lease(AGENT, {1}, 1000, capacity=4) is None
    with book.db.session() as s:
        assert {s.get(Task, t).state for t in ids[:4]} == {TaskState.RUNNING}
        assert {s.get(Task, t).state for t in ids[4:]} == {TaskState.OPEN}


def test_lease_many__missing_input__fails_that_task_and_leases_the_next_in_the_same_batch(book):
    ids = _add_tasks(book, [b'{"texts":["a"]}', None, b'{"texts":["c"]}'])

    offers = book.lease_many(AGENT, {1}, 1000, capacity=5, max_jobs=5)

    assert [o.task_id for o in offers] == [ids[0], ids[2]]
    with book.db.session() as s:
        missing = s.get(Task, ids[1])
        assert missing.state == TaskState.FAILING and "was not uploaded to the oracle" in missing.reason


def test_lease_many__k2_tasks__each_once_per_agent_then_to_another_agent(book):
    ids = _add_tasks(book, [b'{"texts":["x"]}', b'{"texts":["y"]}'], k=2)

    mine = book.lease_many(AGENT, {1}, 1000, capacity=8, max_jobs=8)
    again = book.lease_many(AGENT, {1}, 1000, capacity=8, max_jobs=8)
    theirs = book.lease_many(OTHER, {1}, 1000, capacity=8, max_jobs=8)
    third = book.lease_many("0x" + "cc" * 20, {1}, 1000, capacity=8, max_jobs=8)

    assert [o.task_id for o in mine] == ids and again == []
    assert [o.task_id for o in theirs] == ids and third == []  # k=2: two distinct agents, no third


def test_lease_many__stake_below_minimum_or_no_models__nothing(book):
    from oracle.db import AgentSeen

    _add_tasks(book, [b'{"texts":["s"]}'])
    assert book.lease_many(AGENT, set(), 1000, capacity=2, max_jobs=2) == []
    with book.db.session() as s:
        s.add(AgentSeen(agent=AGENT, last_poll_at=0.0, stake_ok=False))
    assert book.lease_many(AGENT, {1}, 1000, capacity=2, max_jobs=2) == []


def test_lease_many__two_agents_at_once__no_k1_task_leased_twice(book):
    if book.db.url.startswith("sqlite"):
        pytest.skip("SQLite serialises writers; the row locks (FOR UPDATE SKIP LOCKED) are PostgreSQL's")
    ids = _add_tasks(book, [b'{"texts":["p%d"]}' % i for i in range(20)])
    barrier = threading.Barrier(2)
    got: dict[str, list[int]] = {}

    def lease(agent: str) -> None:
        barrier.wait()
        offers = []
        while batch := book.lease_many(agent, {1}, 1000, capacity=20, max_jobs=3):
            offers += batch
        got[agent] = [o.task_id for o in offers]

    threads = [threading.Thread(target=lease, args=(a,)) for a in (AGENT, OTHER)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)

    leased = got[AGENT] + got[OTHER]
    assert sorted(leased) == ids  # every task once, none twice
    with book.db.session() as s:
        assert s.execute(select(func.count()).select_from(Job)).scalar_one() == 20
