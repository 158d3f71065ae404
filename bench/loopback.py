"""Raw HTTP over loopback, shared by the API bench and the hostile-client API tests: requests
written byte for byte (headers a client library would refuse or fix up), timed to the response head."""

from __future__ import annotations

import socket
import time


def raw_request(port: int, head: bytes, timeout_s: float = 3.0, host: str = "127.0.0.1") -> tuple[bytes, float]:
    """Send `head` on a fresh connection; the bytes received up to the end of the response's
    headers (or until the server closes), and the seconds from connecting until then."""
    started = time.monotonic()
    with socket.create_connection((host, port), timeout=timeout_s) as conn:
        conn.sendall(head)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = conn.recv(65536)
            if not chunk:
                break
            data += chunk
    return data, time.monotonic() - started


def status_of(head: bytes) -> int | None:
    """The status code of a response head (b"HTTP/1.1 413 ..."), or None if it is not one."""
    if not head.startswith(b"HTTP/1.") or len(head) < 12:
        return None
    try:
        return int(head[9:12])
    except ValueError:
        return None


def header_of(head: bytes, name: bytes) -> bytes | None:
    """One header's value from a response head (case-insensitive name), or None."""
    wanted = name.lower() + b":"
    for line in head.split(b"\r\n")[1:]:
        if line.lower().startswith(wanted):
            return line[len(wanted) :].strip()
    return None
