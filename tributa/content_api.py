"""The roles' side of the oracle's content API (oracle/content.py): upload what this account
registered, and read content (a private task's sealed copies with a signed request).

A role on its own machine keeps its own content store; the oracle, and the agents through it,
get the bytes by upload. Reads go block by block through /v1/blocks and every block is re-hashed
against its CID here, so the oracle is trusted for availability only, never for the bytes.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Iterator

import httpx
from eth_account.signers.local import LocalAccount

from tributa import json_input
from tributa.chain.eip712 import request_headers
from tributa.errors import TributaError
from tributa.store import dag
from tributa.store.car import iter_car
from tributa.store.cid import Cid, coerce_cid
from tributa.store.errors import ContentIntegrityError, NotFound

log = logging.getLogger("tributa.content")

NOT_INGESTED_RETRY_S = 60.0  # a task just posted: the oracle ingests it after its confirmations
UPLOAD_TIMEOUT_S = 600.0
MAX_BLOCK_BYTES = 2 * 2**20  # Kubo's limit on a block it exchanges
MAX_ERROR_BYTES = 64 * 2**10  # an error answer's body: a message, not data


class ContentApiError(TributaError):
    """The oracle's content API refused a request or could not be reached."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class ContentApi:
    def __init__(
        self, oracle_url: str, chain_id: int, escrow: str, account: LocalAccount | None = None, timeout_s: float = 30.0
    ) -> None:
        self.base = oracle_url.rstrip("/")
        self.chain_id = chain_id
        self.escrow = escrow
        self.account = account
        self.http = httpx.Client(timeout=timeout_s)

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> ContentApi:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- uploads -----------------------------------------------------------------------------

    def upload(self, store, root: Cid | str, purpose: str, wait_s: float = NOT_INGESTED_RETRY_S) -> dict:
        """Upload the DAG under `root` from `store` as one CAR for `purpose` (task:N, dataset:N,
        model:N); retried while the oracle has not ingested the entry yet (409) or is receiving
        other uploads (503), up to `wait_s`."""
        if self.account is None:
            raise ContentApiError("uploads are signed: this content API client has no account")
        root = coerce_cid(root)
        body = b"".join(iter_car(store, root))
        path = f"/v1/uploads?for={purpose}&root={root}"
        deadline = time.monotonic() + wait_s
        while True:  # signed over the path (root and purpose), not the body: the oracle re-hashes every block
            headers = {
                "content-type": "application/vnd.ipld.car",
                **request_headers(self.account, self.chain_id, self.escrow, "POST", path, b""),
            }
            response = self._send("POST", path, content=body, headers=headers, timeout=UPLOAD_TIMEOUT_S)
            waiting = (response.status_code == 409 and "not known" in _message(response)) or response.status_code == 503
            if waiting and time.monotonic() < deadline:  # not ingested yet, or busy with other uploads
                time.sleep(min(_retry_after(response), max(0.0, deadline - time.monotonic())))
                continue
            _raise_for(response, f"upload of {root} for {purpose}")
            return response.json()

    # -- reads -------------------------------------------------------------------------------

    def read(self, cid: Cid, deadline: float | None = None) -> bytes:
        """One block, re-hashed against its CID (the dag.BlockSource interface); NotFound on 404.
        `deadline` (time.monotonic()): the read is abandoned past it, however slowly bytes come."""
        path = f"/v1/blocks/{cid}"
        headers = request_headers(self.account, self.chain_id, self.escrow, "GET", path, b"") if self.account else {}
        try:
            with self.http.stream("GET", self.base + path, headers=headers) as response:
                if response.status_code >= 400:  # its message, capped like a block: never the whole of an endless body
                    detail = _error_text(_capped(response, MAX_ERROR_BYTES, cid, deadline))
                    if response.status_code == 404:
                        raise NotFound(f"{cid} is not in the oracle's store: {detail}")
                    raise ContentApiError(
                        f"the oracle refused the block {cid} ({response.status_code}): {detail}", response.status_code
                    )
                data = _capped(response, MAX_BLOCK_BYTES, cid, deadline)
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            raise ContentApiError(f"cannot reach the oracle's content API at {self.base}: {exc}") from None
        if hashlib.sha256(data).digest() != cid.digest:
            raise ContentIntegrityError(f"the oracle served bytes for {cid} that do not hash to it")
        return data

    def get(self, cid: Cid | str) -> Iterator[bytes]:
        return dag.open_file(self, coerce_cid(cid))

    def get_bytes(self, cid: Cid | str) -> bytes:
        return b"".join(self.get(cid))

    def _send(self, method: str, path: str, **kwargs) -> httpx.Response:
        try:
            return self.http.request(method, self.base + path, **kwargs)
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            raise ContentApiError(f"cannot reach the oracle's content API at {self.base}: {exc}") from None


def _capped(response: httpx.Response, limit: int, cid: Cid, deadline: float | None = None) -> bytes:
    """The body, refused the moment it passes `limit` bytes (an oracle cannot make us hold more)
    or `deadline` (nor keep us waiting on a trickle)."""
    chunks, size = [], 0
    for chunk in response.iter_bytes():
        size += len(chunk)
        if size > limit:
            raise ContentIntegrityError(f"the oracle's answer for block {cid} passes the {limit}-byte block limit")
        if deadline is not None and time.monotonic() > deadline:
            raise ContentApiError(f"the oracle's answer for block {cid} is too slow; gave up")
        chunks.append(chunk)
    return b"".join(chunks)


def _error_text(body: bytes) -> str:
    """An error body's "error" field, else its first 200 characters, whatever the body holds."""
    try:
        doc = json_input.loads(body)
        if isinstance(doc, dict) and isinstance(doc.get("error"), str):
            return doc["error"][:500]
    except ValueError:
        pass
    return body[:200].decode(errors="replace")


def _retry_after(response: httpx.Response) -> float:
    try:
        return min(30.0, max(0.5, float(response.headers.get("retry-after", 1))))
    except ValueError:
        return 1.0


def _message(response: httpx.Response) -> str:
    return _error_text(response.content)


def _raise_for(response: httpx.Response, what: str) -> None:
    if response.status_code >= 400:
        raise ContentApiError(
            f"the oracle refused the {what} ({response.status_code}): {_message(response)}", response.status_code
        )
