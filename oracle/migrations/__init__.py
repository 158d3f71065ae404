"""Schema migrations (Alembic) for the oracle's database.

`Database(url)` calls `upgrade_head`, so a new or old database is brought to the newest
schema on open. By hand: `alembic -c oracle/migrations/alembic.ini -x url=URL upgrade head`.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError

from tributa.errors import ConfigError

HERE = Path(__file__).resolve().parent
# The revision whose schema equals what `Base.metadata.create_all` made before migrations existed.
BASELINE = "0001"
# Serialises concurrent `upgrade head` runs on PostgreSQL (two processes opening a fresh DB).
_PG_LOCK_KEY = 0x7452_4942  # "tRIB"


def alembic_config(connection: Connection | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(HERE))
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


@lru_cache(maxsize=1)
def head_revision() -> str | None:
    # Cached: parsing the versions folder is the slow part of opening a database.
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def current_revision(connection: Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


def _migrate(conn: Connection) -> None:
    current = current_revision(conn)
    if current == head_revision():
        return
    if current is None and inspect(conn).has_table("tasks"):
        # Made by create_all before migrations existed: adopt it at the baseline.
        command.stamp(alembic_config(conn), BASELINE)
    command.upgrade(alembic_config(conn), "head")


def _upgrade_sqlite(engine: Engine) -> None:
    """SQLite: BEGIN IMMEDIATE, so the whole upgrade is one transaction (pysqlite would otherwise
    run each DDL statement on its own) and a second process opening the file waits for it."""
    with engine.connect() as conn:
        raw: Any = conn.connection.driver_connection  # pysqlite's sqlite3.Connection (typed Any | None)
        saved = raw.isolation_level
        raw.isolation_level = None  # we issue BEGIN ourselves
        try:
            conn.exec_driver_sql("BEGIN IMMEDIATE")
            try:
                _migrate(conn)
            except BaseException:
                conn.rollback()
                raise
            conn.commit()
        finally:
            raw.isolation_level = saved


def upgrade_head(engine: Engine) -> None:
    """Bring the database to the newest schema; a no-op (one query) when it already is."""
    try:
        if engine.dialect.name == "sqlite":
            with engine.connect() as conn:
                if current_revision(conn) == head_revision():
                    return
            _upgrade_sqlite(engine)
            return
        with engine.begin() as conn:
            if engine.dialect.name == "postgresql":
                conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_LOCK_KEY})
            _migrate(conn)
    except DBAPIError as exc:
        raise ConfigError(
            f"cannot open or migrate the oracle database at {engine.url.render_as_string(hide_password=True)}: "
            f"{type(exc.orig).__name__}: {str(exc.orig).strip().splitlines()[0] if str(exc.orig).strip() else exc}; "
            f"check --db-url / TRIBUTA_DB_URL and that the server is running"
        ) from None
