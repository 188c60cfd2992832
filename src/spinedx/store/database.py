"""Engine, sessions and schema migration for the store."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from spinedx.errors import InputError

SQLITE_FILE = "spinedx.sqlite"
# Concurrent writers (the API, the worker, a second process after a restart) wait rather than fail.
SQLITE_BUSY_TIMEOUT_MS = 30_000


@dataclass
class Store:
    """An open database: its engine and a factory of sessions bound to it."""

    engine: Engine
    sessions: sessionmaker[Session]
    data_dir: Path

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session that commits when the block ends normally and rolls back when it raises."""
        with self.sessions.begin() as session:
            yield session

    def close(self) -> None:
        self.engine.dispose()


def default_url(data_dir: Path) -> str:
    return f"sqlite:///{(data_dir / SQLITE_FILE).resolve()}"


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cursor.close()


def _engine(url: str) -> Engine:
    try:
        parsed = make_url(url)
    except ArgumentError as err:
        raise InputError(f"--db: not a database URL ({err})") from None
    if parsed.get_backend_name() == "sqlite":
        engine = create_engine(parsed, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    if parsed.get_backend_name() == "postgresql":
        return create_engine(parsed, pool_pre_ping=True)
    raise InputError(
        f"--db: unsupported database {parsed.get_backend_name()!r} (use sqlite or postgresql+psycopg)"
    )


def upgrade(engine: Engine) -> None:
    """Run every migration not yet applied (Alembic ``upgrade head``) on ``engine``."""
    config = Config()
    config.set_main_option("script_location", "spinedx.store:migrations")
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "head")


def open_store(url: str | None, data_dir: Path) -> Store:
    """Open the database at ``url`` (default: SQLite in ``data_dir``) with its schema up to date."""
    data_dir.mkdir(parents=True, exist_ok=True)
    engine = _engine(url or default_url(data_dir))
    try:
        upgrade(engine)
    except OperationalError as err:
        engine.dispose()
        where = engine.url.render_as_string(hide_password=True)
        reason = str(err.orig).strip().splitlines()[0] if err.orig else "unreachable"
        raise InputError(f"--db: cannot open {where}: {reason}") from None
    return Store(engine=engine, sessions=sessionmaker(engine, expire_on_commit=False), data_dir=data_dir)
