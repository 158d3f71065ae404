"""The oracle's content API on a real chain and real stores: roles upload from their own stores
what they registered, signed; everything else gets a 4xx with a reason and stores nothing; a
private task's sealed output goes only to its requester."""

from __future__ import annotations

import os

import pytest
from fastapi.testclient import TestClient

from oracle.api import create_app
from oracle.auth import RequestAuthenticator
from oracle.content import ContentBook, UploadLimits
from oracle.db import Task, TaskState
from oracle.metrics import OracleMetrics
from oracle.service import AgentDirectory
from tests.helpers import OracleParts, ensure_agent, post_raw_task, register_test_model, signer_for
from tributa.chain.eip712 import request_headers
from tributa.content_api import ContentApi, ContentApiError
from tributa.store import cid as cidlib
from tributa.store import open_store
from tributa.store.car import iter_car
from tributa.store.cid import Cid

QUOTA = 3 * 2**20
MAX_UPLOAD = 2 * 2**20


class Oracle:
    def __init__(self, contracts, signers, tmp_path) -> None:
        self.contracts = contracts
        self.parts = OracleParts(contracts, signers, tmp_path / "oracle")
        directory = AgentDirectory(contracts, ttl_s=0)
        auth = RequestAuthenticator(
            self.parts.db, contracts.chain_id, contracts.escrow.address, directory.is_registered
        )
        content = ContentBook(self.parts.db, self.parts.store, contracts, UploadLimits(MAX_UPLOAD, QUOTA))
        app = create_app(
            self.parts.db,
            self.parts.book,
            auth,
            self.parts.store,
            directory,
            self.parts.chain_time,
            {"chain_id": contracts.chain_id},
            OracleMetrics(),
            content=content,
        )
        self.http = TestClient(app, raise_server_exceptions=False)

    def client(self, role: str | None) -> ContentApi:
        account = signer_for(self.contracts, role).account if role else None
        api = ContentApi("http://testserver", self.contracts.chain_id, self.contracts.escrow.address, account)
        api.http = self.http  # TestClient is an httpx.Client: the client's own code path, in process
        return api

    def signed_post(self, role: str, path: str, body: bytes):
        """As the client signs an upload: over the path (root, purpose), with an empty body hash."""
        account = signer_for(self.contracts, role).account
        headers = request_headers(account, self.contracts.chain_id, self.contracts.escrow.address, "POST", path, b"")
        return self.http.post(path, content=body, headers=headers), headers


@pytest.fixture
def oracle(contracts, signers, tmp_path, chain_snapshot):
    return Oracle(contracts, signers, tmp_path)


@pytest.fixture
def requester_store(tmp_path):
    return open_store(tmp_path / "requester" / "store")  # the requester's own machine


def _task_for(oracle, signers, store, data: bytes) -> tuple[int, str, int]:
    model = register_test_model(oracle.contracts, signers["publisher"])
    ensure_agent(oracle.contracts, signers["agent"], [model])
    cid = str(store.put_bytes(data))
    task_id = post_raw_task(oracle.contracts, signers["requester"], model, cidlib.cid_to_digest(cid))
    oracle.parts.ingestor.poll_once()
    return task_id, cid, model


def _car(store, cid: str) -> bytes:
    return b"".join(iter_car(store, Cid.parse(cid)))


def test_upload__a_task_input_from_the_requesters_own_store__stored_and_then_leased(oracle, signers, requester_store):
    data = b'{"prompt":"%s"}' % (b"x" * 600_000)  # several 256 KiB chunks: a DAG, not one block
    task_id, cid, model = _task_for(oracle, signers, requester_store, data)
    assert not oracle.parts.store.has(cid)

    answer = oracle.client("requester").upload(requester_store, cid, f"task:{task_id}")

    assert answer["root"] == cid and answer["bytes"] >= len(data) and answer["blocks"] > 1
    assert oracle.parts.store.get_bytes(cid) == data
    offer = oracle.parts.book.lease(signers["agent"].address, {model}, oracle.parts.chain_time())
    assert offer is not None and offer.task_id == task_id
    again = oracle.client("requester").upload(requester_store, cid, f"task:{task_id}")
    assert again == {"root": cid, "already_held": True}  # answered before the body is read, counted once


def test_upload__bytes_that_do_not_match_their_cid__422_and_nothing_stored(oracle, signers, requester_store):
    data = b'{"prompt":"tampered"}'
    task_id, cid, _ = _task_for(oracle, signers, requester_store, data)
    car = _car(requester_store, cid)
    tampered = car[:-3] + bytes([car[-3] ^ 1]) + car[-2:]

    response, _ = oracle.signed_post("requester", f"/v1/uploads?for=task:{task_id}&root={cid}", tampered)

    assert response.status_code == 422 and "does not hash to its CID" in response.json()["error"], response.text
    assert not oracle.parts.store.has(cid)


def test_upload__an_incomplete_dag__422_and_the_root_not_pinned(oracle, signers, requester_store):
    data = b'{"prompt":"%s"}' % (b"y" * 600_000)
    task_id, cid, _ = _task_for(oracle, signers, requester_store, data)
    from tributa.store.car import car_header
    from tributa.store.varint import encode_uvarint

    root = Cid.parse(cid)
    block = requester_store.read(root)  # the root alone, without its chunks
    section = root.to_bytes() + block
    response, _ = oracle.signed_post(
        "requester",
        f"/v1/uploads?for=task:{task_id}&root={cid}",
        car_header(root) + encode_uvarint(len(section)) + section,
    )

    assert response.status_code == 422 and "does not hold all of" in response.json()["error"]
    assert root not in oracle.parts.store.pins()


def test_upload__stray_blocks_beside_the_registered_dag__422_and_none_of_them_stored(oracle, signers, requester_store):
    from tributa.store.varint import encode_uvarint

    task_id, cid, _ = _task_for(oracle, signers, requester_store, b'{"prompt":"carrier"}')
    stray = Cid.parse(str(requester_store.put_bytes(os.urandom(200_000), cid_version=1)))
    section = stray.to_bytes() + requester_store.read(stray)
    smuggled = _car(requester_store, cid) + encode_uvarint(len(section)) + section

    response, _ = oracle.signed_post("requester", f"/v1/uploads?for=task:{task_id}&root={cid}", smuggled)

    assert response.status_code == 422 and "not part of" in response.json()["error"], response.text
    assert not oracle.parts.store.has(stray) and not oracle.parts.store.has(cid)


def test_upload__over_the_account_quota__403_and_nothing_stored(oracle, signers, requester_store):
    api = oracle.client("requester")
    for i in range(2):  # 2 x 1.5 MiB fit the 3 MiB quota only once
        data = b'{"prompt":"%s"}' % os.urandom(768 * 1024).hex().encode()
        task_id, cid, _ = _task_for(oracle, signers, requester_store, data)
        if i == 0:
            api.upload(requester_store, cid, f"task:{task_id}")
            continue
        with pytest.raises(ContentApiError, match="upload quota") as refused:
            api.upload(requester_store, cid, f"task:{task_id}")
        assert refused.value.status == 403
        assert not oracle.parts.store.has(cid)


def test_upload__over_the_per_upload_limit__413_before_the_body_is_read(oracle, signers):
    response = oracle.http.post("/v1/uploads?for=task:1", content=b"\0" * (MAX_UPLOAD + 1))
    assert response.status_code == 413 and "limit" in response.json()["error"]


def test_upload__unsigned_or_replayed__401_then_409(oracle, signers, requester_store):
    task_id, cid, _ = _task_for(oracle, signers, requester_store, b'{"prompt":"replay me"}')
    path = f"/v1/uploads?for=task:{task_id}&root={cid}"
    car = _car(requester_store, cid)

    unsigned = oracle.http.post(path, content=car)
    assert unsigned.status_code == 401
    first, headers = oracle.signed_post("requester", path, car)
    assert first.status_code == 200
    replayed = oracle.http.post(path, content=car, headers=headers)
    assert replayed.status_code == 409 and "replayed" in replayed.json()["error"]


def test_upload__a_car_of_another_root_than_the_signed_one__422_nothing_stored(oracle, signers, requester_store):
    task_id, cid, _ = _task_for(oracle, signers, requester_store, b'{"prompt":"signed root"}')
    other = str(requester_store.put_bytes(b"smuggled in under a registered root"))

    response, _ = oracle.signed_post(
        "requester", f"/v1/uploads?for=task:{task_id}&root={cid}", _car(requester_store, other)
    )

    assert response.status_code == 422 and "not the signed root" in response.json()["error"]
    assert not oracle.parts.store.has(other) and not oracle.parts.store.has(cid)


def test_upload__by_another_account_or_of_another_root__403_nothing_stored(oracle, signers, requester_store):
    task_id, cid, _ = _task_for(oracle, signers, requester_store, b'{"prompt":"mine"}')
    other = str(requester_store.put_bytes(b"not the registered input"))

    with pytest.raises(ContentApiError, match="requester") as stranger:
        oracle.client("agent").upload(requester_store, cid, f"task:{task_id}")
    with pytest.raises(ContentApiError, match="is not the input") as wrong_root:
        oracle.client("requester").upload(requester_store, other, f"task:{task_id}")

    assert stranger.value.status == 403 and wrong_root.value.status == 403
    assert not oracle.parts.store.has(cid) and not oracle.parts.store.has(other)


def test_upload__a_model_adapter_by_its_publisher_only(oracle, signers, tmp_path):
    publisher_store = open_store(tmp_path / "publisher" / "store")
    folder = tmp_path / "adapter"
    folder.mkdir()
    (folder / "adapter_config.json").write_text('{"peft_type": "LORA"}')
    (folder / "adapter_model.safetensors").write_bytes(os.urandom(300_000))
    adapter = str(publisher_store.put_dir(folder))
    call = oracle.contracts.registry.functions.register_model(
        "with-adapter", os.urandom(32), [cidlib.cid_to_digest(adapter)], [], [], 10**15, signers["publisher"].address
    )
    signers["publisher"].transact(call)
    model_id = oracle.contracts.registry.functions.model_count().call()

    with pytest.raises(ContentApiError, match="publisher") as stranger:
        oracle.client("requester").upload(publisher_store, adapter, f"model:{model_id}")
    assert stranger.value.status == 403 and not oracle.parts.store.has(adapter)

    oracle.client("publisher").upload(publisher_store, adapter, f"model:{model_id}")
    out = tmp_path / "fetched"
    oracle.parts.store.export(adapter, out)
    assert (out / "adapter_model.safetensors").read_bytes() == (folder / "adapter_model.safetensors").read_bytes()


def test_upload__for_nothing_or_a_task_not_ingested_yet__400_and_409(oracle, signers, requester_store):
    cid = str(requester_store.put_bytes(b'{"prompt":"early"}'))
    unnamed, _ = oracle.signed_post("requester", "/v1/uploads", _car(requester_store, cid))
    assert unnamed.status_code == 400 and "?for=task:ID" in unnamed.json()["error"]
    with pytest.raises(ContentApiError, match="not known to this oracle yet") as early:
        oracle.client("requester").upload(requester_store, cid, "task:999999", wait_s=0)
    assert early.value.status == 409


def test_sealed_output__only_its_requester_reads_it_signed(oracle, signers):
    sealed = os.urandom(5000)  # stands for ciphertext: who may read is the point here
    sealed_cid = str(oracle.parts.store.put_bytes(sealed))
    with oracle.parts.db.session() as s:
        s.add(
            Task(
                task_id=77,
                requester=signers["requester"].address,
                model_id=1,
                input_digest="0x" + "00" * 32,
                fee=1,
                model_fee=0,
                deadline=2**40,
                k=1,
                state=TaskState.SETTLED,
                posted_block=1,
                posted_at=0.0,
                output_pubkey="02" + "11" * 32,
                result_ciphertext_cid=sealed_cid,
            )
        )

    digest = Cid.parse(sealed_cid).digest
    other_names = [str(Cid(1, "dag-pb", digest)), str(Cid(1, "raw", digest))]  # the store finds blocks by digest
    for name in [sealed_cid, *other_names]:
        for path in (f"/v1/content/{name}", f"/v1/blocks/{name}"):
            assert oracle.http.get(path).status_code == 401, path
    with pytest.raises(ContentApiError) as stranger:
        oracle.client("agent").get_bytes(sealed_cid)
    assert stranger.value.status == 403

    assert oracle.client("requester").get_bytes(sealed_cid) == sealed


def test_reads__public_content_through_the_api__every_block_rehashed(oracle, signers):
    data = os.urandom(700_000)
    cid = str(oracle.parts.store.put_bytes(data))
    assert oracle.client(None).get_bytes(cid) == data
