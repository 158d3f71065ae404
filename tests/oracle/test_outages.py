"""Storage outages: which error stands for which outage, and an immutable data dir that gives the
oracle an error to log and answer 503 for, never a SIGBUS that kills it without a line.

`chattr +i` needs root (CAP_LINUX_IMMUTABLE) and a filesystem that has the flag; where either is
missing the tests that need it are skipped with the reason."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from sqlalchemy import text

from bench.chaos_bench import immutable_supported, set_immutable
from oracle.db import Database, StorageUnavailable, check_writable
from oracle.outages import Outages, classify_outage
from oracle.rpc import is_transient
from tributa.store import StoreError, StoreFull, StoreUnwritable, open_store


@pytest.fixture
def immutable_dir(tmp_path):
    folder = tmp_path / "data"
    folder.mkdir()
    why = immutable_supported(folder)
    if why:
        pytest.skip(why)
    yield folder
    set_immutable(folder, False)  # else pytest cannot delete it


@pytest.mark.parametrize(
    "exc, kind",
    [
        (StorageUnavailable(errno.EROFS, "the data dir is not writable"), "disk"),
        (StoreFull("disk full while writing"), "disk"),
        (StoreUnwritable("cannot write under …"), "disk"),
        (OSError(errno.ENOSPC, "No space left on device"), "disk"),
        (ConnectionRefusedError(errno.ECONNREFUSED, "refused"), "node"),
    ],
)
def test_classify_outage__storage_and_node_errors__their_outage_kind(exc, kind):
    outage = classify_outage(exc)
    assert outage is not None and outage.kind == kind


@pytest.mark.parametrize("exc", [StoreError("a CID that is not valid"), ValueError("a bug"), KeyError("x")])
def test_classify_outage__a_bad_request_or_a_bug__no_outage(exc):
    assert classify_outage(exc) is None


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EROFS, errno.EPERM, errno.EIO])
def test_is_transient__a_local_disk_error__is_not_the_node(code):
    assert not is_transient(OSError(code, "local disk"))
    assert not is_transient(StorageUnavailable(errno.EROFS, "the data dir is not writable"))


def test_is_transient__connection_errors__are_the_node():
    assert is_transient(ConnectionRefusedError(errno.ECONNREFUSED, "refused"))
    assert is_transient(OSError(errno.EHOSTUNREACH, "no route"))


def test_outages__one_line_when_down_and_one_when_up__however_many_failures(caplog):
    import logging

    outages = Outages("oracle pass", "retrying", logging.getLogger("test.outages"))
    with caplog.at_level(logging.WARNING, logger="test.outages"):
        for _ in range(5):
            outages.down("disk", "full")
        outages.up()
        outages.up()
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2
    assert lines[0].startswith("oracle pass: disk unavailable (full); retrying")
    assert lines[1].startswith("oracle pass: disk available again after")


def test_check_writable__missing_files__pass(tmp_path):
    check_writable((str(tmp_path), str(tmp_path / "o.sqlite-wal")))


def test_check_writable__an_immutable_file__storage_unavailable_naming_it(immutable_dir):
    db = immutable_dir / "o.sqlite"
    db.write_bytes(b"")
    set_immutable(immutable_dir, True)
    with pytest.raises(StorageUnavailable, match="not writable") as caught:
        check_writable((str(immutable_dir), str(db)))
    assert caught.value.errno == errno.EROFS and str(immutable_dir) in str(caught.value)


def test_database__data_dir_made_immutable__errors_instead_of_sigbus_and_recovers(immutable_dir):
    """In a child process: SQLite's WAL index is an mmap of -shm, and a write there once the file
    is immutable is SIGBUS (exit -7). The guard refuses first, the child lives, then it writes."""
    script = textwrap.dedent(
        f"""
        import subprocess
        from sqlalchemy import text
        from oracle.db import Database, StorageUnavailable, Cursor
        db = Database("sqlite:///{immutable_dir}/o.sqlite")
        with db.session() as s:
            s.add(Cursor(name="before", block_number=1))
        subprocess.run(["chattr", "-R", "+i", "{immutable_dir}"], check=True)
        refused = 0
        for i in range(20):
            try:
                with db.session() as s:
                    s.add(Cursor(name=f"during-{{i}}", block_number=i))
            except StorageUnavailable:
                refused += 1
        subprocess.run(["chattr", "-R", "-i", "{immutable_dir}"], check=True)
        with db.session() as s:
            s.add(Cursor(name="after", block_number=2))
        with db.session() as s:
            print(refused, s.execute(text("select count(*) from cursors")).scalar())
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"exit {done.returncode}:\n{done.stderr[-2000:]}"
    assert done.stdout.split() == ["20", "2"]  # every write refused while immutable; none lost


def test_database__open_on_an_immutable_data_dir__storage_unavailable(immutable_dir):
    url = f"sqlite:///{immutable_dir / 'o.sqlite'}"
    Database(url).engine.dispose()
    set_immutable(immutable_dir, True)
    db = None
    with pytest.raises(StorageUnavailable):
        db = Database(url)
        with db.session() as s:
            s.execute(text("select 1"))


def test_store__folder_made_immutable__store_unwritable_then_writes_again(immutable_dir):
    store = open_store(immutable_dir / "store")
    store.put_bytes(b"before")
    set_immutable(immutable_dir, True)
    with pytest.raises(StoreUnwritable, match="make it writable"):
        store.put_bytes(b"during" * 1000)
    set_immutable(immutable_dir, False)
    cid = store.put_bytes(b"after")
    assert store.get_bytes(cid) == b"after"


@pytest.mark.parametrize(
    "message, kind",
    [
        ("database is locked", "database"),
        ("could not connect to server: Connection refused", "database"),
        ("server closed the connection unexpectedly", "database"),
        ("disk I/O error", "disk"),
        ("attempt to write a readonly database", "disk"),
        ("database or disk is full", "disk"),
        ("no such column: tasks.nope", None),
        ("too many SQL variables", None),
        ("database disk image is malformed", None),
    ],
)
def test_classify_outage__database_errors__outages_only_when_the_database_is_away(message, kind):
    from sqlalchemy.exc import OperationalError

    outage = classify_outage(OperationalError("SELECT 1", {}, Exception(message)))
    assert (outage.kind if outage else None) == kind


def test_unwritable__a_file_this_user_may_only_read__let_through_not_a_fault():
    """A reader without write permission: SQLite maps -shm read-only and never faults, so the
    guard must not refuse it (it once refused `oracle status` for such a user)."""
    import shutil
    import tempfile

    # The system's python: the project's venv may sit in a folder other users cannot enter, and
    # the module needs nothing beyond the standard library.
    python = shutil.which("python3", path="/usr/bin:/bin")
    if os.geteuid() != 0 or shutil.which("setpriv") is None or python is None:
        pytest.skip("needs root, setpriv and /usr/bin/python3 to check as another user")
    folder = Path(tempfile.mkdtemp(prefix="tributa-readonly-"))  # under /tmp: reachable by others
    try:
        os.chmod(folder, 0o755)
        db = folder / "o.sqlite"
        db.write_bytes(b"")
        os.chmod(db, 0o644)
        source = Path(__file__).resolve().parents[2] / "tributa" / "writable.py"
        program = source.read_text() + (
            f"\nprint(os.path.lexists({str(db)!r}), os.access({str(db)!r}, os.W_OK), unwritable(({str(folder)!r}, {str(db)!r})))\n"
        )
        done = subprocess.run(
            ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", python, "-c", program],
            capture_output=True,
            text=True,
            timeout=60,
            cwd="/",
        )
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["True", "False", "None"]  # it sees the file, may not write it, is let through
