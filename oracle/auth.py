"""Authenticating agents' API requests.

A request carries X-Tributa-Agent, -Nonce, -Expiry and -Signature headers; the signature
is EIP-712 over (agent, method, path, keccak(body), nonce, expiry), bound to the chain id
and the escrow contract. A nonce is accepted once; an expired request is refused.
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from sqlalchemy import delete
from sqlalchemy.exc import IntegrityError
from web3 import Web3

from oracle.db import ApiNonce, Database
from oracle.jobs import RequestRefused
from tributa.chain.eip712 import recover_request_signer

MAX_EXPIRY_AHEAD_S = 300
# Request checks (a pure-Python signature recovery and a nonce write, GIL-bound) run on at most
# this many threads. A flood of signed polls then queues for them, waiting without the GIL,
# instead of the API's 40 pool threads taking the GIL from the event loop: that held /v1/health
# for up to a second (p99 160–227 ms under 1,000 polls; gated at 2, 56–156 ms). Two, not one: a
# check may wait on the node (an unknown agent's registration) or the database.
VERIFY_CONCURRENCY = 2

# secp256k1's group order, and the bound TaskEscrow._recover (snekmate's
# ecdsa._MALLEABILITY_THRESHOLD) puts on s: n // 2.
SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
MALLEABILITY_THRESHOLD = SECP256K1_N // 2

# Per agent: requests a second (sustained, and the burst above it) and long-polls held at once.
AGENT_REQUESTS_PER_S = 100.0
AGENT_REQUEST_BURST = 200
AGENT_MAX_CONCURRENT_POLLS = 8
# How many agents' limiter states, and how many addresses' on-chain lookups, are kept (LRU).
MAX_TRACKED_AGENTS = 10_000


class AuthError(RequestRefused):
    """A request whose agent, signature, nonce or expiry does not check out (a 4xx)."""


class RateLimited(RequestRefused):
    """429 with Retry-After: the agent sends faster, or holds more long-polls, than it may."""

    def __init__(self, message: str, retry_after_s: float) -> None:
        super().__init__(429, message)
        self.retry_after_s = retry_after_s


def contract_signature_problem(signature: bytes) -> str | None:
    """Why TaskEscrow._recover would refuse this 65-byte (r, s, v) signature, or None.

    It returns the zero address (so the settlement or slash fails) for s > n/2 (malleable, high-s)
    and for v not in {27, 28}; ecrecover itself fails for r or s of 0 or at least n. eth_account
    accepts v of 0/1 and high s, so the API must check this itself before it takes a signature.
    """
    if len(signature) != 65:
        return f"a signature is 65 bytes (r, s, v), not {len(signature)}"
    r = int.from_bytes(signature[:32], "big")
    s = int.from_bytes(signature[32:64], "big")
    v = signature[64]
    if v not in (27, 28):
        return f"signature v is {v}; the escrow accepts only 27 or 28"
    if not 0 < r < SECP256K1_N:
        return "signature r is out of range (0 < r < n)"
    if not 0 < s <= MALLEABILITY_THRESHOLD:
        return "signature s is out of range or malleable (high-s): the escrow accepts only 0 < s <= n/2"
    return None


def check_contract_signature(signature: bytes, what: str, status: int = 401) -> None:
    """Refuse (RequestRefused `status`) a signature the escrow contract would reject."""
    problem = contract_signature_problem(signature)
    if problem is not None:
        raise RequestRefused(status, f"{what}: {problem}")


class BoundedCache(OrderedDict):
    """A dict that keeps only its `maxsize` most recently written or read entries (LRU).

    Used for the agent directory's lookup cache, so an unbounded number of never-seen
    addresses cannot grow the API's memory: each costs one eth_call and one entry, evicted last-used first.
    """

    def __init__(self, maxsize: int = MAX_TRACKED_AGENTS) -> None:
        super().__init__()
        self.maxsize = maxsize
        self._lock = threading.Lock()

    def get(self, key, default=None):
        with self._lock:
            if key not in self:
                return default
            self.move_to_end(key)
            return super().__getitem__(key)

    def __setitem__(self, key, value) -> None:
        with self._lock:
            super().__setitem__(key, value)
            self.move_to_end(key)
            while len(self) > self.maxsize:
                self.popitem(last=False)


class _Bucket:
    __slots__ = ("polls", "tokens", "updated")

    def __init__(self, tokens: float, updated: float) -> None:
        self.tokens = tokens
        self.updated = updated
        self.polls = 0


class AgentLimiter:
    """Per-agent request rate (a token bucket) and concurrent long-polls, both answered 429 with
    Retry-After past their limit. Keyed by the authenticated agent (after its signature checks
    out), so nobody can spend another agent's allowance; at most `max_agents` are tracked (LRU)."""

    def __init__(
        self,
        rate_per_s: float = AGENT_REQUESTS_PER_S,
        burst: int = AGENT_REQUEST_BURST,
        max_polls: int = AGENT_MAX_CONCURRENT_POLLS,
        max_agents: int = MAX_TRACKED_AGENTS,
    ) -> None:
        self.rate_per_s = rate_per_s
        self.burst = burst
        self.max_polls = max_polls
        self.max_agents = max_agents
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()
        self._lock = threading.Lock()

    def _bucket(self, agent: str, now: float) -> _Bucket:
        bucket = self._buckets.get(agent)
        if bucket is None:
            bucket = self._buckets[agent] = _Bucket(float(self.burst), now)
            while len(self._buckets) > self.max_agents:  # evict the least recently seen idle agent
                oldest, state = next(iter(self._buckets.items()))
                if state.polls:
                    self._buckets.move_to_end(oldest)
                    break
                self._buckets.popitem(last=False)
        self._buckets.move_to_end(agent)
        return bucket

    def take(self, agent: str) -> None:
        """Spend one request of `agent`'s allowance, or raise RateLimited."""
        now = time.monotonic()
        with self._lock:
            bucket = self._bucket(agent, now)
            bucket.tokens = min(float(self.burst), bucket.tokens + (now - bucket.updated) * self.rate_per_s)
            bucket.updated = now
            if bucket.tokens < 1.0:
                wait = (1.0 - bucket.tokens) / self.rate_per_s
                raise RateLimited(f"agent {agent} sends over {self.rate_per_s:g} requests/s; retry later", wait)
            bucket.tokens -= 1.0

    def check_poll_room(self, claimed_agent: str | None) -> None:
        """Refuse (429) a poll whose claimed agent already holds all its slots, before the
        request is authenticated (that costs a signature recovery and a database write). Safe
        unauthenticated: it only refuses what poll_slot would refuse anyway, and takes nothing."""
        if not claimed_agent:
            return
        try:
            agent = Web3.to_checksum_address(claimed_agent)
        except (ValueError, TypeError):
            return  # authentication will say what is wrong with it
        with self._lock:
            bucket = self._buckets.get(agent)
            polls = bucket.polls if bucket is not None else 0
        if polls >= self.max_polls:
            raise RateLimited(
                f"agent {agent} already holds {polls} long-polls (the limit is {self.max_polls}); wait for one to end",
                1.0,
            )

    @contextmanager
    def poll_slot(self, agent: str) -> Iterator[None]:
        """Hold one of `agent`'s max_polls long-poll slots for the block, or raise RateLimited."""
        with self._lock:
            bucket = self._bucket(agent, time.monotonic())
            if bucket.polls >= self.max_polls:
                raise RateLimited(
                    f"agent {agent} already holds {bucket.polls} long-polls (the limit is "
                    f"{self.max_polls}); wait for one to end",
                    1.0,
                )
            bucket.polls += 1
        try:
            yield
        finally:
            with self._lock:
                bucket.polls -= 1


def retry_after_header(seconds: float) -> str:
    """A Retry-After value: whole seconds, at least 1."""
    return str(max(1, math.ceil(seconds)))


@dataclass(frozen=True)
class SignedHeaders:
    agent: str
    nonce: int
    expiry: int
    signature: bytes

    @classmethod
    def parse(cls, headers) -> SignedHeaders:
        try:
            agent = Web3.to_checksum_address(headers["x-tributa-agent"])
            nonce = int(headers["x-tributa-nonce"])
            expiry = int(headers["x-tributa-expiry"])
            signature = bytes.fromhex(headers["x-tributa-signature"].removeprefix("0x"))
        except KeyError as exc:
            raise AuthError(401, f"missing header {exc.args[0]}; sign requests with the agent key") from None
        except ValueError:
            raise AuthError(
                401, "malformed auth headers (agent address, integer nonce/expiry, hex signature)"
            ) from None
        if len(signature) != 65 or nonce < 0:
            raise AuthError(401, "signature must be 65 bytes and nonce non-negative")
        return cls(agent, nonce, expiry, signature)


class RequestAuthenticator:
    def __init__(
        self,
        db: Database,
        chain_id: int,
        escrow: str,
        is_registered: Callable[[str], bool],
        limiter: AgentLimiter | None = None,
    ) -> None:
        self.db = db
        self.chain_id = chain_id
        self.escrow = escrow
        self.is_registered = is_registered
        self.limiter = limiter if limiter is not None else AgentLimiter()
        self._verifying = threading.BoundedSemaphore(VERIFY_CONCURRENCY)

    def verify(self, headers, method: str, path: str, body: bytes) -> str:
        """The authenticated agent address, or AuthError."""
        with self._verifying:
            return self._verify(headers, method, path, body, agents_only=True)

    def verify_account(self, headers, method: str, path: str, body: bytes) -> str:
        """The address that signed the request, any account (uploads, sealed reads), or AuthError."""
        with self._verifying:
            return self._verify(headers, method, path, body, agents_only=False)

    def _verify(self, headers, method: str, path: str, body: bytes, agents_only: bool) -> str:
        h = SignedHeaders.parse(headers)
        now = int(time.time())
        if h.expiry < now:
            raise AuthError(401, "request expired; sign with an expiry in the future")
        if h.expiry > now + MAX_EXPIRY_AHEAD_S:
            raise AuthError(401, f"expiry is more than {MAX_EXPIRY_AHEAD_S}s ahead")
        problem = contract_signature_problem(h.signature)
        if problem is not None:  # all-00, all-ff, high-s, v of 0/1: eth_account's own signatures never are
            raise AuthError(401, f"request signature refused: {problem}")
        try:
            signer = recover_request_signer(
                self.chain_id,
                self.escrow,
                h.agent,
                method,
                path,
                bytes(Web3.keccak(body)),
                h.nonce,
                h.expiry,
                h.signature,
            )
        except Exception:  # eth_account raises several types for undecodable signatures  # noqa: BLE001
            raise AuthError(401, "signature does not decode") from None
        if signer != h.agent:
            raise AuthError(401, "signature does not match the agent header")
        self.limiter.take(h.agent)  # only now: the agent is proven, so nobody spends another's allowance
        if agents_only and not self.is_registered(h.agent):
            raise AuthError(403, f"agent {h.agent} is not registered on-chain; run `tributa agent run` to register")
        self._use_nonce(h.agent, h.nonce, h.expiry, now)
        return h.agent

    def _use_nonce(self, agent: str, nonce: int, expiry: int, now: int) -> None:
        try:
            with self.db.session() as s:
                s.execute(delete(ApiNonce).where(ApiNonce.expiry < now - 60))
                s.add(ApiNonce(agent=agent, nonce=str(nonce), expiry=expiry))
        except IntegrityError:
            raise AuthError(409, "nonce already used (replayed request)") from None
