"""The Kubo backend's own behaviour that needs no Kubo: addresses, and daemons that are
unreachable or drop the connection half-way (a real TCP server that hangs up)."""

from __future__ import annotations

import json
import socket
import struct
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.store.helpers import MemorySink, data, write
from tributa.store.errors import BackendUnavailable, StoreError
from tributa.store.factory import open_store
from tributa.store.importer import Importer
from tributa.store.kubo import KuboStore, api_url, kubo_reachable
from tributa.store.layout import CHUNK_SIZE

Handler = Callable[[socket.socket], None]


@pytest.mark.parametrize(
    "given,multiaddr,url",
    [
        ("/ip4/127.0.0.1/tcp/5001", "/ip4/127.0.0.1/tcp/5001", "http://127.0.0.1:5001"),
        (
            "/dns/ipfs.local/tcp/5001/https",
            "/dns/ipfs.local/tcp/5001/https",
            "https://ipfs.local:5001",
        ),
        ("/ip6/::1/tcp/5001", "/ip6/::1/tcp/5001", "http://[::1]:5001"),
        ("http://127.0.0.1:5001", "/ip4/127.0.0.1/tcp/5001/http", "http://127.0.0.1:5001"),
    ],
)
def test_api_url__multiaddr_or_url__gives_both_forms(given: str, multiaddr: str, url: str) -> None:
    assert api_url(given) == (multiaddr, url)


@pytest.mark.parametrize("bad", ["", "localhost:5001", "/ip4/127.0.0.1/udp/5001", "/ip4/1.2.3.4/tcp/x"])
def test_api_url__not_an_address__says_what_form_to_use(bad: str) -> None:
    with pytest.raises(StoreError, match="multiaddr like /ip4/127.0.0.1/tcp/5001"):
        api_url(bad)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_open_store__ipfs_api_with_no_daemon__raises_backend_unavailable_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    addr = f"/ip4/127.0.0.1/tcp/{free_port()}"
    monkeypatch.setenv("TRIBUTA_IPFS_API", addr)
    with pytest.raises(BackendUnavailable) as info:
        open_store(tmp_path)
    message = str(info.value)
    assert message.startswith(f"no Kubo daemon reachable at {addr}") and "\n" not in message
    assert "unset TRIBUTA_IPFS_API" in message
    assert not kubo_reachable(addr)


class HangingUpDaemon:
    """Answers `version` like Kubo; other calls get what `routes` says, then a reset."""

    def __init__(self, routes: dict[str, Handler]) -> None:
        self._routes = routes
        self._server = socket.create_server(("127.0.0.1", 0))
        self.addr = f"/ip4/127.0.0.1/tcp/{self._server.getsockname()[1]}"
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self._server.accept()
            except OSError:
                return
            with conn:
                head = b""
                while b"\r\n\r\n" not in head:
                    chunk = conn.recv(65536)
                    if not chunk:
                        break
                    head += chunk
                path = head.split(b" ", 2)[1].decode() if head.count(b" ") >= 2 else ""
                route = path.split("?")[0].removeprefix("/api/v0")
                if route == "/version":
                    respond(conn, json.dumps({"Version": "0.30.0"}).encode())
                    continue
                self._routes.get(route, hang_up)(conn)

    def close(self) -> None:
        self._server.close()


def respond(conn: socket.socket, body: bytes, content_type: str = "application/json") -> None:
    conn.sendall(
        b"HTTP/1.1 200 OK\r\nContent-Type: "
        + content_type.encode()
        + b"\r\nContent-Length: "
        + str(len(body)).encode()
        + b"\r\nConnection: close\r\n\r\n"
        + body
    )


def hang_up(conn: socket.socket) -> None:
    """Reset the connection, as a killed daemon's kernel would."""
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


@pytest.fixture
def daemon_factory() -> Iterator[Callable[[dict[str, Handler]], HangingUpDaemon]]:
    started: list[HangingUpDaemon] = []

    def start(routes: dict[str, Handler]) -> HangingUpDaemon:
        started.append(HangingUpDaemon(routes))
        return started[-1]

    yield start
    for daemon in started:
        daemon.close()


def test_put_file__daemon_dies_during_upload__raises_backend_unavailable(
    daemon_factory: Callable[[dict[str, Handler]], HangingUpDaemon], tmp_path: Path
) -> None:
    daemon = daemon_factory({})
    store = KuboStore(daemon.addr, timeout=10)
    path = write(tmp_path / "big.bin", data(16 * CHUNK_SIZE, seed=40))
    with pytest.raises(BackendUnavailable) as info:
        store.put_file(path)
    message = str(info.value)
    assert message.startswith(f"the Kubo daemon at {daemon.addr} went away during add")
    assert "content it had already stored is kept" in message and "\n" not in message
    assert path.read_bytes() == data(16 * CHUNK_SIZE, seed=40)


def test_get__daemon_dies_mid_stream__raises_backend_unavailable(
    daemon_factory: Callable[[dict[str, Handler]], HangingUpDaemon],
) -> None:
    sink = MemorySink()
    content = data(3 * CHUNK_SIZE, seed=41)
    root = Importer(sink).add_bytes(content).cid

    def block_get(conn: socket.socket) -> None:
        respond(conn, sink.blocks[root.digest], "application/octet-stream")

    def cat(conn: socket.socket) -> None:
        conn.sendall(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n"
            + f"{CHUNK_SIZE:x}\r\n".encode()
            + content[:CHUNK_SIZE]
            + b"\r\n"
        )
        hang_up(conn)

    daemon = daemon_factory({"/block/get": block_get, "/cat": cat})
    store = KuboStore(daemon.addr, timeout=10)
    chunks = store.get(root)
    with pytest.raises(BackendUnavailable, match="went away during get"):
        b"".join(chunks)
