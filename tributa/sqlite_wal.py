"""Switching a SQLite database to WAL mode when several processes may open it at once."""

from __future__ import annotations

import sqlite3
import time


def enter_wal(conn, wait_s: float = 30.0) -> None:
    """`PRAGMA journal_mode=WAL` on `conn` (a sqlite3 connection or cursor). The mode persists in
    the file, so later opens find it done; but switching needs the file to itself, and SQLite
    answers "database is locked" at once, without its busy handler, while another process
    opening a fresh database holds it for a moment (4 of 60 three-way opens failed so): retry
    for up to `wait_s`."""
    deadline = time.monotonic() + wait_s
    delay = 0.005
    while True:
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 0.2)
