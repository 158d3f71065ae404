"""Alembic environment: runs on the connection `upgrade_head` passes in, or on `-x url=…`."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine

from oracle.db import Base

config = context.config


def _run(connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        # SQLite cannot ALTER most things in place; batch mode copies the table instead.
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


connection = config.attributes.get("connection")
if connection is not None:
    _run(connection)
else:
    url = context.get_x_argument(as_dictionary=True).get("url") or config.get_main_option("sqlalchemy.url")
    if not url:
        raise SystemExit("pass the database URL: alembic -c oracle/migrations/alembic.ini -x url=URL upgrade head")
    with create_engine(url).begin() as conn:
        _run(conn)
