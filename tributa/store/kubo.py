"""The Kubo backend: the same Store interface, served by a Kubo daemon's RPC API (/api/v0).

ipfshttpclient 0.8.0a2 handles most calls; its `connect()` refuses daemons newer than 0.9, so
the Client is built directly. Adding goes through a multipart body built here and POSTed
with httpx, because ipfshttpclient drops symlinks from directories (Kubo stores them, and the
embedded store must give the same CIDs) and cannot report upload progress.

Blocks read back for `verify` and `export` are fetched one by one and re-hashed locally, so a
misbehaving daemon cannot hand back wrong bytes unnoticed.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import stat
import urllib.parse
import uuid
import warnings
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NoReturn

import httpx
import ipfshttpclient
import requests
from ipfshttpclient import exceptions as ipfs_exc

from tributa.store import dag
from tributa.store.base import Buffer, CidLike, GcStats, PathLike, Progress, VerifyReport
from tributa.store.car import verified_blocks
from tributa.store.cid import Cid, coerce_cid
from tributa.store.errors import (
    BackendUnavailable,
    CidError,
    ContentIntegrityError,
    NotFound,
    StoreError,
)

_UPLOAD_CHUNK = 1 << 20
# ipfshttpclient lets some transport errors of its `requests` backend through unwrapped.
_GONE = (
    ipfs_exc.ConnectionError,
    ipfs_exc.ProtocolError,
    ipfs_exc.TimeoutError,
    requests.exceptions.RequestException,
    ConnectionError,
)


@contextmanager
def _quiet() -> Iterator[None]:
    """Silence the FutureWarning urllib3 2.x gives for a parameter ipfshttpclient still passes."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The 'strict' parameter", category=FutureWarning)
        yield


_NOT_FOUND_HINTS = ("not found", "no link named", "not pinned", "context deadline exceeded")


def api_url(addr: str) -> tuple[str, str]:
    """(multiaddr, http base URL) for an API address given as a multiaddr or an http URL."""
    text = addr.strip()
    if text.startswith(("http://", "https://")):
        parsed = urllib.parse.urlsplit(text)
        host = parsed.hostname or "127.0.0.1"
        number = parsed.port or (443 if parsed.scheme == "https" else 80)
        proto = "dns" if not host.replace(".", "").isdigit() else "ip4"
        suffix = "/https" if parsed.scheme == "https" else "/http"
        return f"/{proto}/{host}/tcp/{number}{suffix}", f"{parsed.scheme}://{host}:{number}"
    parts = [part for part in text.split("/") if part]
    try:
        proto, host, tcp, port = parts[:4]
        if proto not in ("ip4", "ip6", "dns", "dns4", "dns6") or tcp != "tcp" or not port.isdigit():
            raise ValueError
    except ValueError:
        raise StoreError(f"invalid IPFS API address {addr!r}: use a multiaddr like /ip4/127.0.0.1/tcp/5001") from None
    scheme = "https" if parts[4:5] == ["https"] else "http"
    shown = f"[{host}]" if proto == "ip6" else host
    return "/" + "/".join(parts), f"{scheme}://{shown}:{port}"


class KuboStore:
    """A Store backed by a Kubo daemon. `addr` is its API multiaddr (TRIBUTA_IPFS_API).

    With `offline=True` the daemon only answers from its own repo: content it lacks is
    NotFound at once instead of being searched for on the network (for up to `timeout` s).
    """

    def __init__(self, addr: str, *, timeout: float = 120.0, offline: bool = False) -> None:
        self.addr, base = api_url(addr)
        self._offline = offline
        self._client = ipfshttpclient.Client(self.addr, session=False, timeout=timeout, offline=offline)
        self._http = httpx.Client(base_url=f"{base}/api/v0", timeout=httpx.Timeout(timeout))
        try:
            self.version = str(self._call("connect", lambda: self._client.version())["Version"])
        except StoreError:
            self.close()
            raise

    def __repr__(self) -> str:
        return f"KuboStore({self.addr!r})"

    def close(self) -> None:
        self._http.close()
        self._client.close()

    # -- error mapping -------------------------------------------------------------------------

    def _unavailable(self, action: str, exc: BaseException) -> NoReturn:
        if action == "connect":
            raise BackendUnavailable(
                f"no Kubo daemon reachable at {self.addr}: start one with `ipfs daemon`, or "
                "unset TRIBUTA_IPFS_API to use the embedded store"
            ) from None
        raise BackendUnavailable(
            f"the Kubo daemon at {self.addr} went away during {action} ({type(exc).__name__}): "
            "restart it and retry; content it had already stored is kept"
        ) from None

    def _call(self, action: str, fn: Callable[[], Any], cid: Cid | None = None) -> Any:
        try:
            with _quiet():
                return fn()
        except ipfs_exc.ErrorResponse as exc:
            self._daemon_error(action, str(exc), cid)
        except _GONE as exc:
            self._unavailable(action, exc)
        except ipfs_exc.StatusError as exc:
            raise StoreError(f"Kubo at {self.addr} rejected {action}: {exc}") from None

    def _daemon_error(self, action: str, message: str, cid: Cid | None) -> NoReturn:
        lowered = message.lower()
        if action == "unpin" and "not pinned" in lowered:
            raise NotFound(f"{cid} is not pinned on the Kubo daemon at {self.addr}")
        if cid is not None and any(hint in lowered for hint in _NOT_FOUND_HINTS):
            raise NotFound(f"{cid} is not available from the Kubo daemon at {self.addr} ({message})")
        raise StoreError(f"Kubo at {self.addr} refused {action}: {message}")

    # -- adding --------------------------------------------------------------------------------

    def _add(
        self,
        parts: list[_Part],
        *,
        cid_version: int,
        progress: Progress | None,
        only_hash: bool,
        action: str,
    ) -> Cid:
        if cid_version not in (0, 1):
            raise StoreError(f"unsupported CID version {cid_version!r}: use 0 or 1")
        total = sum(part.size for part in parts)
        boundary = uuid.uuid4().hex
        # Chunker and raw-leaves are spelled out so the daemon's Import.* config cannot make
        # its CIDs differ from the embedded store's.
        params = {
            "cid-version": str(cid_version),
            "chunker": "size-262144",
            "raw-leaves": "true" if cid_version == 1 else "false",
            "pin": "false" if only_hash else "true",
            "only-hash": "true" if only_hash else "false",
            "quieter": "true",
        }
        if self._offline:
            params["offline"] = "true"
        body = _multipart(parts, boundary, total, progress)
        headers = {"Content-Type": f"multipart/form-data; boundary={boundary}"}
        try:
            with self._http.stream("POST", "/add", params=params, content=body, headers=headers) as response:
                lines = [line for line in response.iter_lines() if line.strip()]
                status = response.status_code
        except (httpx.TransportError, httpx.StreamError) as exc:
            self._unavailable(action, exc)
        root: str | None = None
        for line in lines:
            try:
                item = json.loads(line)
            except ValueError:
                continue
            if item.get("Type") == "error" or (status >= 400 and "Message" in item):
                self._daemon_error(action, str(item.get("Message")), None)
            if "Hash" in item:
                root = item["Hash"]
        if status >= 400 or root is None:
            raise StoreError(f"Kubo at {self.addr} refused {action} (HTTP {status})")
        return Cid.parse(root)

    def put_bytes(self, data: Buffer, *, cid_version: int = 0) -> Cid:
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise StoreError(f"put_bytes takes bytes, not {type(data).__name__}")
        parts = [_Part("data", "file", bytes(data))]
        return self._add(parts, cid_version=cid_version, progress=None, only_hash=False, action="add")

    def put_file(self, path: PathLike, progress: Progress | None = None, *, cid_version: int = 0) -> Cid:
        parts = _scan(Path(path), want="file")
        return self._add(parts, cid_version=cid_version, progress=progress, only_hash=False, action="add")

    def put_dir(self, path: PathLike, progress: Progress | None = None, *, cid_version: int = 0) -> Cid:
        parts = _scan(Path(path), want="dir")
        return self._add(parts, cid_version=cid_version, progress=progress, only_hash=False, action="add")

    def put_blocks(self, root: CidLike, blocks: Iterable[tuple[Cid, Buffer]]) -> Cid:
        """Each block (re-hashed here first) through `block/put`, then a recursive pin of
        `root`, which makes the daemon check the DAG is complete."""
        root = coerce_cid(root)
        for cid, block in verified_blocks(blocks):
            opts = {"cid-codec": cid.codec, "mhtype": "sha2-256"}
            self._call(
                "block/put",
                lambda: self._client.block.put(io.BytesIO(bytes(block)), opts=opts),  # noqa: B023
                cid,
            )
        self.pin(root)
        return root

    def cid_of(self, data_or_path: Buffer | PathLike, *, cid_version: int = 0) -> Cid:
        if isinstance(data_or_path, (bytes, bytearray, memoryview)):
            parts = [_Part("data", "file", bytes(data_or_path))]
        else:
            parts = _scan(Path(data_or_path), want="any")
        return self._add(parts, cid_version=cid_version, progress=None, only_hash=True, action="hash")

    # -- reading -------------------------------------------------------------------------------

    def read(self, cid: Cid) -> bytes:
        """One block, fetched and re-hashed here (the dag.BlockSource interface)."""
        data = bytes(self._call("block/get", lambda: self._client.block.get(str(cid)), cid))
        if hashlib.sha256(data).digest() != cid.digest:
            raise ContentIntegrityError(
                f"the Kubo daemon at {self.addr} returned bytes for block {cid} that do not hash "
                "to it: run `ipfs repo verify` on that node"
            )
        return data

    def get(self, cid: CidLike) -> Iterator[bytes]:
        root = coerce_cid(cid)
        # Check the root first so a wrong CID or a directory fails here, not mid-stream.
        dag.require_file(dag.load(self, root))
        stream = self._call("get", lambda: self._client.cat(str(root), stream=True), root)
        return self._relay(stream, root)

    def _relay(self, stream: Any, root: Cid) -> Iterator[bytes]:
        """Pass on ipfshttpclient's streamed `cat` (an iterator and context manager)."""
        try:
            with stream:
                for chunk in stream:
                    if chunk:
                        yield chunk
        except ipfs_exc.ErrorResponse as exc:
            self._daemon_error("get", str(exc), root)
        except _GONE as exc:
            self._unavailable("get", exc)

    def get_bytes(self, cid: CidLike) -> bytes:
        return b"".join(self.get(cid))

    def export(self, cid: CidLike, dest: PathLike) -> None:
        dag.export_tree(self, coerce_cid(cid), Path(dest), dag.write_file_atomically)

    def has(self, cid: CidLike) -> bool:
        root = coerce_cid(cid)
        try:
            with _quiet():
                self._client.block.stat(str(root), offline=True)
        except ipfs_exc.ErrorResponse:
            return False
        except _GONE as exc:
            self._unavailable("has", exc)
        return True

    def verify(self, cid: CidLike) -> VerifyReport:
        return dag.verify(self, coerce_cid(cid))

    # -- pins and gc ---------------------------------------------------------------------------

    def pin(self, cid: CidLike) -> None:
        root = coerce_cid(cid)
        self._call("pin", lambda: self._client.pin.add(str(root)), root)

    def unpin(self, cid: CidLike) -> None:
        root = coerce_cid(cid)
        self._call("unpin", lambda: self._client.pin.rm(str(root)), root)

    def pins(self) -> list[Cid]:
        listing = self._call("pin ls", lambda: self._client.pin.ls(type="recursive"))
        roots: list[Cid] = []
        for text in listing["Keys"]:
            try:
                roots.append(Cid.parse(text))
            except CidError:
                continue  # a pin this store cannot name (another hash function)
        return sorted(roots, key=str)

    def gc(self) -> GcStats:
        before = self._call("repo stat", lambda: self._client.repo.stat())
        removed = self._call("gc", lambda: self._client.repo.gc(quiet=True))
        after = self._call("repo stat", lambda: self._client.repo.stat())
        count = sum(1 for item in removed if "Key" in item)
        return GcStats(
            removed_blocks=count,
            removed_bytes=max(0, int(before["RepoSize"]) - int(after["RepoSize"])),
            kept_blocks=int(after["NumObjects"]),
        )


def kubo_reachable(addr: str, timeout: float = 2.0) -> bool:
    """Whether a Kubo daemon answers at `addr` (used to decide if the Kubo tests can run)."""
    try:
        _, base = api_url(addr)
        response = httpx.post(f"{base}/api/v0/version", timeout=timeout)
    except (StoreError, httpx.HTTPError):
        return False
    return response.status_code == 200 and "Version" in response.text


# -- multipart upload --------------------------------------------------------------------------


class _Part:
    """One entry of an add: a file (bytes or a path), a directory, or a symlink."""

    __slots__ = ("kind", "name", "size", "source")

    def __init__(self, name: str, kind: str, source: bytes | Path | None) -> None:
        self.name = name
        self.kind = kind
        self.source = source
        if isinstance(source, bytes):
            self.size = len(source)
        elif kind == "file" and isinstance(source, Path):
            self.size = source.stat().st_size
        else:
            self.size = 0


def _scan(path: Path, want: str) -> list[_Part]:
    """The parts for `path`, parents before children, as Kubo's multipart reader expects."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise NotFound(f"no such file or directory: {path}") from None
    is_dir = stat.S_ISDIR(info.st_mode)
    if want == "file" and is_dir:
        raise StoreError(f"{path} is a directory: add it with put_dir")
    if want == "dir" and not is_dir:
        raise StoreError(f"{path} is not a directory: add it with put_file")
    name = path.resolve().name or "root"
    if not is_dir:
        return [_Part(name, "file", path)]
    parts = [_Part(name, "dir", None)]
    _scan_dir(path, name, parts)
    return parts


def _scan_dir(folder: Path, prefix: str, parts: list[_Part]) -> None:
    with os.scandir(folder) as listing:
        entries = sorted(listing, key=lambda entry: os.fsencode(entry.name))
    for entry in entries:
        name = f"{prefix}/{entry.name}"
        if entry.is_symlink():
            parts.append(_Part(name, "symlink", os.fsencode(os.readlink(entry.path))))
        elif entry.is_dir():
            parts.append(_Part(name, "dir", None))
            _scan_dir(Path(entry.path), name, parts)
        elif entry.is_file():
            parts.append(_Part(name, "file", Path(entry.path)))
        else:
            raise StoreError(f"cannot add {entry.path}: only regular files, directories and symlinks can be stored")


_CONTENT_TYPES = {
    "file": "application/octet-stream",
    "dir": "application/x-directory",
    "symlink": "application/symlink",
}


def _multipart(parts: list[_Part], boundary: str, total: int, progress: Progress | None) -> Iterator[bytes]:
    done = 0
    for part in parts:
        filename = urllib.parse.quote(part.name, safe="")
        yield (
            f"--{boundary}\r\n"
            f'Content-Disposition: form-data; name="file"; filename="{filename}"\r\n'
            f"Content-Type: {_CONTENT_TYPES[part.kind]}\r\n\r\n"
        ).encode()
        if isinstance(part.source, bytes):
            yield part.source
            done += len(part.source) if part.kind == "file" else 0
        elif isinstance(part.source, Path):
            with open(part.source, "rb") as handle:
                while chunk := handle.read(_UPLOAD_CHUNK):
                    yield chunk
                    done += len(chunk)
                    if progress is not None:
                        progress(done, max(total, done))
        yield b"\r\n"
    yield f"--{boundary}--\r\n".encode()
    if progress is not None:
        progress(done, max(total, done))
