"""The store: migrations on open, and the PACS bridge's job records on SQLite and on a real PostgreSQL."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from sqlalchemy import inspect, text

from postgres_server import postgres_bin, postgres_server
from spinedx.errors import InputError
from spinedx.store import open_store, pacs_jobs


@pytest.fixture(scope="module")
def postgres_url():
    if postgres_bin() is None:
        pytest.skip("PostgreSQL server binaries (/usr/lib/postgresql/*/bin) not installed")
    with postgres_server() as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request, tmp_path):
    url = None if request.param == "sqlite" else request.getfixturevalue("postgresql_url_fresh")
    opened = open_store(url, tmp_path)
    yield opened
    opened.close()


@pytest.fixture
def postgresql_url_fresh(postgres_url):
    """The module's server with empty tables, so every test starts from a fresh schema."""
    from sqlalchemy import create_engine

    engine = create_engine(postgres_url)
    with engine.begin() as connection:
        connection.execute(text("DROP SCHEMA public CASCADE; CREATE SCHEMA public"))
    engine.dispose()
    return postgres_url


def test_open_creates_the_schema_and_reopens(store, tmp_path):
    tables = set(inspect(store.engine).get_table_names())
    assert {"studies", "reviews", "pacs_studies", "alembic_version"} <= tables
    url = store.engine.url.render_as_string(hide_password=False)
    again = open_store(url, tmp_path)  # migrations already applied: nothing to do, nothing lost
    assert set(inspect(again.engine).get_table_names()) == tables
    again.close()


def test_sqlite_default_is_in_the_data_folder_with_wal(tmp_path):
    store = open_store(None, tmp_path / "data")
    assert (tmp_path / "data" / "spinedx.sqlite").exists()
    with store.engine.connect() as connection:
        assert connection.execute(text("PRAGMA journal_mode")).scalar() == "wal"
    store.close()


def test_bad_urls_are_one_line_input_errors(tmp_path):
    with pytest.raises(InputError, match="--db"):
        open_store("not a url", tmp_path)
    with pytest.raises(InputError, match="unsupported"):
        open_store("mysql://u@127.0.0.1/x", tmp_path)


def test_claim_lets_one_caller_through_until_done(store):
    assert pacs_jobs.status_of(store, "study-1") is None
    assert pacs_jobs.claim(store, "study-1")
    assert not pacs_jobs.claim(store, "study-1")  # running
    assert pacs_jobs.status_of(store, "study-1").status == "running"
    pacs_jobs.mark_done(store, "study-1", ["sr-uid", "seg-uid", "sc-uid"])
    assert not pacs_jobs.claim(store, "study-1")  # done: never again
    job = pacs_jobs.status_of(store, "study-1")
    assert (job.status, job.attempts, job.outputs, job.reason) == (
        "done",
        1,
        ["sr-uid", "seg-uid", "sc-uid"],
        None,
    )
    assert job.created.tzinfo is not None and job.updated >= job.created


def test_failed_studies_keep_a_one_line_reason_and_are_not_retried(store):
    assert pacs_jobs.claim(store, "study-2")
    pacs_jobs.mark_failed(store, "study-2", "no pixel data\n  in instance 3")
    assert not pacs_jobs.claim(store, "study-2")
    job = pacs_jobs.status_of(store, "study-2")
    assert (job.status, job.reason) == ("failed", "no pixel data in instance 3")
    with pytest.raises(KeyError):
        pacs_jobs.mark_done(store, "never-claimed", [])


def test_interrupted_studies_are_requeued_and_claimed_again(store):
    assert pacs_jobs.claim(store, "a") and pacs_jobs.claim(store, "b")
    pacs_jobs.mark_done(store, "a", [])
    assert pacs_jobs.requeue_interrupted(store) == 1
    assert [(job.orthanc_id, job.status) for job in pacs_jobs.list_jobs(store)] == [
        ("a", "done"),
        ("b", "pending"),
    ]
    assert pacs_jobs.claim(store, "b")
    assert pacs_jobs.status_of(store, "b").attempts == 2


def test_concurrent_claims_admit_exactly_one(store):
    start = threading.Barrier(8)
    winners = []

    def contend():
        start.wait()
        winners.append(pacs_jobs.claim(store, "contested"))

    threads = [threading.Thread(target=contend) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(winners) == [False] * 7 + [True]


def test_unreachable_postgres_is_a_one_line_input_error(tmp_path):
    with pytest.raises(InputError, match="cannot open") as caught:
        open_store("postgresql+psycopg://u:secret@127.0.0.1:1/none", tmp_path)
    assert "secret" not in str(caught.value) and "\n" not in str(caught.value)


def test_store_imports_nothing_above_its_layer():
    sources = Path(__file__).resolve().parents[1] / "src" / "spinedx" / "store"
    for path in sources.rglob("*.py"):
        for line in path.read_text().splitlines():
            if line.startswith(("from spinedx", "import spinedx")):
                assert line.split()[1].split(".")[1] in {"store", "errors", "io"}, (path, line)
