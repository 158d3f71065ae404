"""The job API under a flood of long-polls and under huge bodies, served as the oracle serves it.

    .venv/bin/python scripts/bench.py api_bench

A fresh Anvil chain with the contracts deployed, one model and one registered, staked agent.
The API runs as the oracle runs it: oracle/api_process.py's start_api_process forks a process of
its own (its database engine, store and RPC connection opened there) serving uvicorn with
server_config's hardened settings and the default per-agent limits. Everything is loopback,
bounded in count and time, and every socket is closed at the end.

Figures:
  api_p50_ms_under_1000_polls / api_p99_ms_under_1000_polls
      GET /v1/health latency (a fresh connection each, HEALTH_SAMPLES of them, one every
      HEALTH_PAUSE_S, the first as the flood starts) while the agent, from a process of its own,
      opens POLLS connections at once and sends a signed long-poll (wait_s 25) on each, signed
      beforehand with the agent's own client code (compute_agent.client.JobClient). Past its
      limits (8 long-polls at once, 100 requests/s) the API answers 429 with Retry-After; the
      8 it holds stay open until the samples are taken. The refused ones are not retried: 1,000
      connections each retrying after Retry-After (1 s) would be a sustained flood of about
      1,000 requests/s, a throughput benchmark rather than this one.
  api_p99_ms_idle
      the same health latency before the flood (the baseline, on the same server in the same run).
  api_rss_mb_before_big_bodies / api_rss_mb_after_big_bodies
      VmRSS of the API process just before and just after four concurrent requests that each
      declare or send a 256 MiB body: two with Content-Length 256 MiB (one sends only the head,
      one streams its body behind it), one streaming a 256 MiB Content-Length body to the result
      endpoint, and one streaming 256 MiB chunked, without a Content-Length, which the API
      refuses at its 8 MiB read cap. Each must be answered 413.
  api_rss_mb_peak_during_big_bodies
      the highest VmRSS sampled (every 10 ms) while those four were in flight.
  api_big_body_413_s_max
      the slowest of the four, from connecting to the 413's status line.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import resource
import select
import socket
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from bench.chain import deployed_chain, register_agent, register_model
from bench.loopback import raw_request, status_of
from compute_agent.client import JobClient
from oracle.api_process import ApiSpec, SharedClock, start_api_process
from oracle.db import database_url
from tributa.crypto import public_key_of
from tributa.devnet import free_port, settings_for

HOST = "127.0.0.1"
POLLS = 1000
POLL_WAIT_S = 25
POLL_PATH = "/v1/jobs/poll"
FLOOD_LIMIT_S = 60.0  # the agent's process stops by itself after this long whatever happens
HEALTH_SAMPLES = 200
IDLE_SAMPLES = 50
HEALTH_PAUSE_S = 0.01
HEALTH_TIMEOUT_S = 5.0
BIG_BODY = 256 << 20
CHUNK = 1 << 20
BIG_BODY_LIMIT_S = 15.0  # a client gives up on its 413 after this long
FILE_LIMIT = 8192  # open files wanted (the agent's 1,000 sockets, and the API's)
HEALTH_HEAD = f"GET /v1/health HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n".encode()


def rss_mb(pid: int) -> float:
    """VmRSS of a process, in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def _raise_file_limit(wanted: int = FILE_LIMIT) -> None:
    """Enough descriptors for POLLS sockets on each side; the forked API inherits the limit (and
    oracle/api_process.py's connection_cap sizes its connection cap from it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


def _http_post(port: int, path: str, headers: dict[str, str], body: bytes) -> bytes:
    lines = [f"POST {path} HTTP/1.1", f"Host: {HOST}:{port}", f"Content-Length: {len(body)}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def _signed_poll(client: JobClient, port: int) -> bytes:
    body = json.dumps({"wait_s": POLL_WAIT_S}).encode()
    return _http_post(port, POLL_PATH, client.signed_headers("POST", POLL_PATH, body), body)


# -- the agent: POLLS concurrent long-polls, from a process of its own --------------------------------


def _flood(port: int, first_wave: list[bytes], ready, stop, results) -> None:
    """The agent's process: sends every poll at once, keeps the held ones open until `stop` is set
    (or FLOOD_LIMIT_S), closes every socket and sends back the statuses it got."""
    try:
        counts = asyncio.run(_flood_async(port, first_wave, ready, stop))
    except BaseException as exc:  # noqa: BLE001 - reported to the bench, which raises it
        counts = {"crashed": f"{type(exc).__name__}: {exc}"}
    results.send(counts)
    results.close()


async def _flood_async(port: int, first_wave: list[bytes], ready, stop) -> dict:
    counts: Counter = Counter()
    writers: list[asyncio.StreamWriter] = []
    started = time.monotonic()

    async def poll(request: bytes) -> None:
        try:
            reader, writer = await asyncio.open_connection(HOST, port)
            writers.append(writer)
            writer.write(request)
            await writer.drain()
            head = await reader.readuntil(b"\r\n\r\n")  # a held poll waits here until the end
            counts[str(status_of(head))] += 1
            counts["last_answer_ms"] = max(counts["last_answer_ms"], round((time.monotonic() - started) * 1000))
            writer.close()
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
            counts[type(exc).__name__] += 1

    deadline = time.monotonic() + FLOOD_LIMIT_S
    ready.set()
    tasks = [asyncio.create_task(poll(request)) for request in first_wave]
    try:
        while not stop.is_set() and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
    finally:
        counts["held"] = sum(not task.done() for task in tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for writer in writers:
            writer.close()
        await asyncio.sleep(0.1)  # let the transports close their sockets
    return dict(counts)


# -- health latency -----------------------------------------------------------------------------------


def _health_samples(port: int, count: int) -> tuple[list[float], int]:
    """`count` GET /v1/health latencies in ms, and how many were not a 200 (a failed one counts
    as the time it took, or HEALTH_TIMEOUT_S)."""
    latencies, failures = [], 0
    for _ in range(count):
        try:
            head, elapsed = raw_request(port, HEALTH_HEAD, HEALTH_TIMEOUT_S)
            failures += status_of(head) != 200
        except OSError:
            elapsed, failures = HEALTH_TIMEOUT_S, failures + 1
        latencies.append(elapsed * 1000)
        time.sleep(HEALTH_PAUSE_S)
    return latencies, failures


def _wait_healthy(port: int, api: multiprocessing.Process, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not api.is_alive():
            raise RuntimeError(f"the API process exited ({api.exitcode}) before serving")
        try:
            if status_of(raw_request(port, HEALTH_HEAD, 1.0)[0]) == 200:
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"the API did not answer /v1/health within {timeout_s:.0f} s")


def measure_polls(port: int, client: JobClient) -> dict[str, float]:
    idle, idle_failures = _health_samples(port, IDLE_SAMPLES)
    first_wave = [_signed_poll(client, port) for _ in range(POLLS)]  # signed before the clock starts
    ctx = multiprocessing.get_context("fork")
    ready, stop = ctx.Event(), ctx.Event()
    receive, send = ctx.Pipe(duplex=False)
    agent = ctx.Process(target=_flood, args=(port, first_wave, ready, stop, send), name="bench-agent", daemon=True)
    agent.start()
    send.close()
    try:
        if not ready.wait(30):
            raise RuntimeError("the agent's process did not start")
        loaded, failures = _health_samples(port, HEALTH_SAMPLES)
    finally:
        stop.set()
        counts = receive.recv() if receive.poll(FLOOD_LIMIT_S + 10) else {"crashed": "no report from the agent"}
        receive.close()
        agent.join(10)
        if agent.is_alive():
            agent.kill()
            agent.join(5)
    if "crashed" in counts:
        raise RuntimeError(f"the agent's process failed: {counts['crashed']}")
    if any(key.startswith("5") for key in counts):
        raise RuntimeError(f"the API answered a poll with a 5xx: {counts}")
    print(
        f"  polls answered: {dict(sorted(counts.items()))}; health failures: {failures} of {HEALTH_SAMPLES} "
        f"under load, {idle_failures} of {IDLE_SAMPLES} idle"
    )
    return {
        "api_p99_ms_idle": round(float(np.percentile(idle, 99)), 2),
        "api_p50_ms_under_1000_polls": round(float(np.percentile(loaded, 50)), 2),
        "api_p99_ms_under_1000_polls": round(float(np.percentile(loaded, 99)), 2),
    }


# -- huge bodies --------------------------------------------------------------------------------------


def _big_body(port: int, path: str, *, chunked: bool, stream: bool) -> tuple[int | None, float, int]:
    """One request declaring (Content-Length) or streaming (chunked) a BIG_BODY body: the status
    it got, the seconds until its status line, and the body bytes the server took before it."""
    head = f"POST {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\nContent-Type: application/json\r\n".encode()
    head += b"Transfer-Encoding: chunked\r\n\r\n" if chunked else f"Content-Length: {BIG_BODY}\r\n\r\n".encode()
    piece = b"x" * CHUNK
    frame = f"{CHUNK:x}\r\n".encode() + piece + b"\r\n" if chunked else piece
    started = time.monotonic()
    sent, data = 0, b""
    with socket.create_connection((HOST, port), timeout=BIG_BODY_LIMIT_S) as conn:
        conn.sendall(head if stream else head + b"{}")
        conn.setblocking(False)
        pending = memoryview(b"")
        while b"\r\n" not in data and time.monotonic() - started < BIG_BODY_LIMIT_S:
            writing = stream and (sent < BIG_BODY or len(pending) > 0)
            readable, writable, _ = select.select([conn], [conn] if writing else [], [], 0.5)
            if readable:
                try:
                    got = conn.recv(65536)
                except ConnectionError:
                    break
                if not got:
                    break
                data += got
                continue
            if writable:
                if not pending:
                    sent += CHUNK
                    pending = memoryview(frame + (b"0\r\n\r\n" if chunked and sent >= BIG_BODY else b""))
                try:
                    pending = pending[conn.send(pending) :]
                except BlockingIOError:
                    pass
                except ConnectionError:
                    stream = False  # the server hung up; its answer may still be there to read
    return status_of(data), time.monotonic() - started, sent


def measure_big_bodies(port: int, api_pid: int) -> dict[str, float]:
    before = rss_mb(api_pid)
    peak = [before]
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            try:
                peak[0] = max(peak[0], rss_mb(api_pid))
            except (OSError, RuntimeError):
                return
            done.wait(0.01)

    watcher = threading.Thread(target=watch, name="rss-watch", daemon=True)
    watcher.start()
    requests = [
        (POLL_PATH, dict(chunked=False, stream=False)),
        (POLL_PATH, dict(chunked=False, stream=True)),
        ("/v1/jobs/1/result", dict(chunked=False, stream=True)),
        ("/v1/jobs/1/result", dict(chunked=True, stream=True)),
    ]
    try:
        with ThreadPoolExecutor(len(requests)) as pool:
            answers = list(pool.map(lambda r: _big_body(port, r[0], **r[1]), requests))
    finally:
        done.set()
        watcher.join(5)
    after = rss_mb(api_pid)
    peak[0] = max(peak[0], after)
    if any(status != 413 for status, _, _ in answers):
        raise RuntimeError(f"a 256 MiB body was not refused with 413: {answers}")
    print(
        "  big bodies: "
        + "; ".join(
            f"{path} {'chunked' if o['chunked'] else 'Content-Length'}: {s} in {t:.3f} s, {sent >> 20} MiB sent"
            for (path, o), (s, t, sent) in zip(requests, answers, strict=False)
        )
    )
    return {
        "api_rss_mb_before_big_bodies": round(before, 1),
        "api_rss_mb_after_big_bodies": round(after, 1),
        "api_rss_mb_peak_during_big_bodies": round(peak[0], 1),
        "api_big_body_413_s_max": round(max(t for _, t, _ in answers), 3),
    }


# -- the run ------------------------------------------------------------------------------------------


def run(workdir: Path) -> dict[str, float]:
    """The figures, measured in a fresh interpreter: the API process is forked from it (as the
    oracle's worker forks it), and its RSS must not count what earlier suites loaded into the
    bench's own process (after the chaos and verify suites, 470 MB before any body was sent)."""
    import subprocess
    import sys

    from tributa.config import REPO_ROOT

    done = subprocess.run(
        [sys.executable, "-m", "bench.api_bench", str(workdir), "--json"],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        text=True,
        check=False,
    )
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"api_bench failed (exit {done.returncode}):\n{done.stdout[-2000:]}")
    print("\n".join(lines[:-1]))
    return json.loads(lines[-1])


def measure(workdir: Path) -> dict[str, float]:
    workdir.mkdir(parents=True, exist_ok=True)
    _raise_file_limit()
    with deployed_chain(workdir) as (node, contracts, s):
        settings = settings_for(node, workdir / "data", workdir / "deployments")
        register_agent(contracts, s["agent"], [register_model(contracts, s["publisher"])])
        oracle_key = bytes(s["oracle"].account.key)
        port = free_port()
        spec = ApiSpec(
            settings=settings,
            db_url=database_url(settings.data_dir),
            host=HOST,
            port=port,
            lease_s=60,
            oracle_key=oracle_key,
            info={
                "chain_id": contracts.chain_id,
                "escrow": contracts.escrow.address,
                "oracle": s["oracle"].address,
                "oracle_public_key": "0x" + public_key_of(oracle_key).hex(),
            },
        )
        clock = SharedClock(int(contracts.w3.eth.get_block("latest")["timestamp"]))
        metrics_queue = multiprocessing.get_context("fork").Queue()
        client = JobClient(f"http://{HOST}:{port}", s["agent"].account, contracts.chain_id, contracts.escrow.address)
        api = start_api_process(spec, clock, metrics_queue)
        try:
            _wait_healthy(port, api)
            figures = measure_polls(port, client)
            figures.update(measure_big_bodies(port, api.pid))
        finally:
            api.terminate()  # SIGTERM: uvicorn's graceful shutdown; held long-polls end with 503
            api.join(15)
            if api.is_alive():
                api.kill()
                api.join(5)
            client.close()
            metrics_queue.close()
    return figures


if __name__ == "__main__":
    import sys

    from tributa.config import REPO_ROOT

    figures = measure(Path(sys.argv[1]) if len(sys.argv) > 1 else REPO_ROOT / ".tributa" / "bench" / "api_bench")
    print(json.dumps(figures) if "--json" in sys.argv else figures)
