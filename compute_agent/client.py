"""The agent's side of the job API: every request signed with the agent's key."""

from __future__ import annotations

import base64
import json
from typing import Any

import httpx
from eth_account.signers.local import LocalAccount

from tributa.chain.eip712 import request_headers
from tributa.errors import TributaError


class OracleUnavailable(TributaError):
    """The oracle's API cannot be reached."""


class OracleRefused(TributaError):
    """The oracle answered with an error status. A 5xx or 429 is `transient` (try again, after
    `retry_after_s` when the oracle said so); any other 4xx is its decision on this request."""

    def __init__(self, status: int, message: str, retry_after_s: float | None = None) -> None:
        super().__init__(f"oracle refused ({status}): {message}")
        self.status = status
        self.retry_after_s = retry_after_s

    @property
    def transient(self) -> bool:
        return self.status >= 500 or self.status == 429


class OversizedContent(TributaError):
    """The oracle's answer is larger than the caller bounded it to; nothing past the bound was read."""


def retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds form; an HTTP date is not used here)."""
    try:
        seconds = float(value) if value is not None else None
    except ValueError:
        return None
    return seconds if seconds is not None and 0 <= seconds < 86400 else None


class JobClient:
    def __init__(
        self, oracle_url: str, account: LocalAccount, chain_id: int, escrow: str, timeout_s: float = 40.0
    ) -> None:
        self.base = oracle_url.rstrip("/")
        self.account = account
        self.chain_id = chain_id
        self.escrow = escrow
        self.http = httpx.Client(timeout=timeout_s)

    def close(self) -> None:
        self.http.close()

    def signed_headers(
        self, method: str, path: str, body: bytes, nonce: int | None = None, expiry: int | None = None
    ) -> dict[str, str]:
        headers = request_headers(self.account, self.chain_id, self.escrow, method, path, body, nonce, expiry)
        return {"content-type": "application/json", **headers}

    def _post(self, path: str, payload: dict[str, Any]) -> httpx.Response:
        body = json.dumps(payload, separators=(",", ":")).encode()
        try:
            response = self.http.post(self.base + path, content=body, headers=self.signed_headers("POST", path, body))
        except httpx.HTTPError as exc:
            raise OracleUnavailable(
                f"cannot reach the oracle at {self.base} ({type(exc).__name__}); is `tributa oracle run` up?"
            ) from None
        if response.status_code >= 400:
            try:
                message = response.json().get("error", response.text)
            except (ValueError, AttributeError):
                message = response.text
            raise OracleRefused(response.status_code, message, retry_after(response.headers.get("retry-after")))
        return response

    def poll(self, wait_s: float = 20.0) -> dict | None:
        response = self._post("/v1/jobs/poll", {"wait_s": wait_s})
        return None if response.status_code == 204 else response.json()

    def poll_many(self, max_jobs: int, wait_s: float = 20.0) -> list[dict]:
        """Lease up to `max_jobs` jobs (the oracle bounds it by the agent's free capacity) in one
        long-poll, answered as soon as at least one is available; [] when none came within wait_s."""
        response = self._post("/v1/jobs/poll", {"wait_s": wait_s, "max_jobs": max_jobs})
        return [] if response.status_code == 204 else response.json()["jobs"]

    def accept(self, job_id: int, lease_signature: bytes) -> dict:
        """Accept a leased job with the agent's signature over Lease(task_id, lease_expires_at)."""
        return self._post(f"/v1/jobs/{job_id}/accept", {"lease_signature": "0x" + lease_signature.hex()}).json()

    def submit(
        self, job_id: int, output: bytes, result_digest: bytes, signature: bytes, lease_signature: bytes | None = None
    ) -> dict:
        payload = {
            "output_b64": base64.b64encode(output).decode(),
            "result_digest": "0x" + result_digest.hex(),
            "signature": "0x" + signature.hex(),
        }
        if lease_signature is not None:  # the lease acceptance, if it was not POSTed to /accept
            payload["lease_signature"] = "0x" + lease_signature.hex()
        return self._post(f"/v1/jobs/{job_id}/result", payload).json()

    def report_error(self, job_id: int, kind: str, message: str) -> None:
        self._post(f"/v1/jobs/{job_id}/error", {"kind": kind, "error": message})

    def fetch_content(self, cid: str, max_bytes: int | None = None) -> bytes:
        """A CID's whole content from the oracle's gateway; OversizedContent past `max_bytes`
        (read as a stream, never buffered beyond it). The caller re-hashes it against the CID."""
        if max_bytes is None:
            try:
                response = self.http.get(f"{self.base}/v1/content/{cid}")
            except httpx.HTTPError as exc:
                raise OracleUnavailable(f"cannot reach the oracle's content gateway: {exc}") from None
            if response.status_code != 200:
                raise OracleRefused(
                    response.status_code, response.text, retry_after(response.headers.get("retry-after"))
                )
            return response.content
        return self._get_capped(f"/v1/content/{cid}", f"content {cid}", max_bytes)

    def fetch_block(self, cid: str, max_bytes: int) -> bytes:
        """One raw block of the oracle's store by its CID (`GET /v1/blocks/{cid}`), read as a
        stream and given up on past `max_bytes`. The caller re-hashes it against the CID."""
        return self._get_capped(f"/v1/blocks/{cid}", f"block {cid}", max_bytes)

    def _get_capped(self, path: str, what: str, max_bytes: int) -> bytes:
        try:
            with self.http.stream("GET", f"{self.base}{path}") as response:
                if response.status_code != 200:
                    message = _read_capped(response, 2048).decode("utf-8", "replace")
                    try:
                        message = json.loads(message).get("error", message)
                    except (ValueError, AttributeError):
                        pass
                    raise OracleRefused(response.status_code, message, retry_after(response.headers.get("retry-after")))
                declared = response.headers.get("content-length")
                if declared is not None and declared.isdigit() and int(declared) > max_bytes:
                    raise OversizedContent(f"the oracle's {what} is {declared} bytes, over the {max_bytes}-byte limit")
                data = _read_capped(response, max_bytes + 1)
        except httpx.HTTPError as exc:
            raise OracleUnavailable(f"cannot reach the oracle's content gateway: {type(exc).__name__}: {exc}") from None
        if len(data) > max_bytes:
            raise OversizedContent(f"the oracle's {what} is over the {max_bytes}-byte limit")
        return data


def _read_capped(response: httpx.Response, limit: int) -> bytes:
    """At most `limit` bytes of a streamed response's body."""
    chunks: list[bytes] = []
    size = 0
    for chunk in response.iter_bytes():
        chunks.append(chunk)
        size += len(chunk)
        if size >= limit:
            break
    return b"".join(chunks)[:limit]
