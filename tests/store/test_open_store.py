"""`open_store`: a backend chosen by a `CHIPCLEAR_EVENT_STORE` URL, and every bad URL named as such."""

from __future__ import annotations

from contextlib import closing
from pathlib import Path
from urllib.parse import quote

import pytest

from chipclear.devserver import free_port
from chipclear.projections import PROJECTIONS, get_request
from chipclear.store.errors import StoreUnavailable
from chipclear.store.factory import StoreURLError, open_store
from chipclear.store.protocol import EventStore
from chipclear.store.sqlite import SQLiteEventStore
from chipclear.store.urls import redact
from tests.postgres import Cluster
from tests.store.support import RECORDER, append_all, scenario


def pragma_synchronous(store: EventStore) -> int:
    assert isinstance(store, SQLiteEventStore)
    value = store._conn().execute("PRAGMA synchronous").fetchone()[0]
    assert isinstance(value, int)
    return value


FULL, NORMAL, EXTRA = 2, 1, 3


class TestOpenStore:
    def test_relative_path(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.chdir(tmp_path)
        with closing(
            open_store("sqlite:///data/events.db", projections=PROJECTIONS, recorder=RECORDER)
        ) as store:
            assert isinstance(store, SQLiteEventStore)
            assert store.path == Path("data/events.db")
            assert pragma_synchronous(store) == FULL
            found = scenario("withdrawn")
            append_all(store, [found])
            assert get_request(store, found.request_id) == found.state
        assert (tmp_path / "data" / "events.db").is_file()

    def test_absolute_path(self, tmp_path: Path) -> None:
        target = tmp_path / "abs" / "events.db"
        url = f"sqlite:///{target}"
        assert url.startswith("sqlite:////")
        with closing(open_store(url, recorder=RECORDER)) as store:
            assert isinstance(store, SQLiteEventStore)
            assert store.path == target and store.path.is_absolute()
        assert target.is_file()

    @pytest.mark.parametrize(
        ("query", "level"),
        [
            ("", FULL),
            ("?synchronous=normal", NORMAL),
            ("?synchronous=NORMAL", NORMAL),
            ("?synchronous=full", FULL),
            ("?synchronous=extra", EXTRA),
        ],
    )
    def test_synchronous_option(self, tmp_path: Path, query: str, level: int) -> None:
        with closing(open_store(f"sqlite:///{tmp_path / 'events.db'}{query}", recorder=RECORDER)) as store:
            assert isinstance(store, SQLiteEventStore)
            assert store.path == tmp_path / "events.db"
            assert pragma_synchronous(store) == level

    @pytest.mark.parametrize(
        "url",
        [
            "sqlite:///events.db?synchronous=off",
            "sqlite:///events.db?synchronous=fast",
            "sqlite:///",
            "sqlite:///?synchronous=normal",
            "mysql://x",
            "postgresql://chipclear@localhost/events?pool_max_size=0",
            "postgresql://chipclear@localhost/events?pool_min_size=5&pool_max_size=2",
            "postgresql://chipclear@localhost/events?pool_timeout=soon",
            "sqlite://events.db",
            "events.db",
        ],
    )
    def test_bad_urls_name_the_variable(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, url: str
    ) -> None:
        monkeypatch.chdir(tmp_path)
        with pytest.raises(StoreURLError, match="CHIPCLEAR_EVENT_STORE"):
            open_store(url)
        assert list(tmp_path.iterdir()) == []  # nothing created on the way to the error

    def test_unreachable_postgresql_names_the_store_without_its_password(self) -> None:
        url = f"postgresql://chipclear:s3cret@127.0.0.1:{free_port()}/events?pool_timeout=1"
        with pytest.raises(StoreUnavailable, match="cannot reach the PostgreSQL event store") as caught:
            open_store(url)
        assert "s3cret" not in str(caught.value) and ":***@" in str(caught.value)

    @pytest.mark.parametrize(
        ("url", "error", "says"),
        [
            ("{base}/no_such_db", StoreUnavailable, 'database "no_such_db" does not exist'),
            (
                "postgresql://nobody@127.0.0.1:{port}/postgres",
                StoreUnavailable,
                'role "nobody" does not exist',
            ),
            ("{base}/postgres?sslmod=require", StoreURLError, 'invalid URI query parameter: "sslmod"'),
        ],
    )
    def test_a_postgresql_store_that_refuses_says_why(
        self, postgres: Cluster, url: str, error: type[Exception], says: str
    ) -> None:
        base = f"postgresql://postgres@127.0.0.1:{postgres.port}"
        with pytest.raises(error, match="CHIPCLEAR_EVENT_STORE") as caught:
            open_store(url.format(base=base, port=postgres.port))
        assert says in str(caught.value)

    @pytest.mark.parametrize(
        ("url", "shown"),
        [
            ("postgresql://bob:s3cret@db/x", "postgresql://bob:***@db/x"),
            (
                "postgresql://bob@db/x?password=s3cret&sslmode=require",
                "postgresql://bob@db/x?password=***&sslmode=require",
            ),
            ("postgresq://bob:s3cret@db/x", "postgresq://bob:***@db/x"),
            ("postgresql://bob@db/x?sslmode=require", "postgresql://bob@db/x?sslmode=require"),
            ("sqlite:///var/lib/chipclear/events.db", "sqlite:///var/lib/chipclear/events.db"),
        ],
    )
    def test_urls_in_messages_and_logs_never_show_a_password(self, url: str, shown: str) -> None:
        assert redact(url) == shown

    def test_an_unsupported_scheme_is_named_without_its_password(self) -> None:
        with pytest.raises(StoreURLError, match="unsupported scheme 'postgresq'") as caught:
            open_store("postgresq://bob:s3cret@db/x")
        assert "s3cret" not in str(caught.value)


def test_libpq_options_with_spaces_reach_postgresql(postgres: Cluster) -> None:
    """`options=-c search_path=… -c statement_timeout=…` (two settings, spaces percent-encoded): the
    pool's options are taken out of the query and the rest handed to libpq as written, never with its
    spaces turned into `+` (which libpq does not read as a space)."""
    import psycopg

    from chipclear.store.postgres import split_url

    schema = postgres.new_schema().rsplit("search_path%3D", 1)[1]
    options = quote(f"-c search_path={schema} -c statement_timeout=4321")
    url = postgres.url() + f"?options={options}&pool_max_size=2"
    conninfo, pool = split_url(url)
    assert pool["pool_max_size"] == 2 and "+" not in conninfo and "pool_max_size" not in conninfo
    with psycopg.connect(conninfo) as conn:
        assert conn.execute("SHOW statement_timeout").fetchone() == ("4321ms",)
        assert conn.execute("SHOW search_path").fetchone() == (schema,)
    with closing(open_store(url, require_schema=False)) as store:
        store.migrate()
        assert store.schema_version() >= 1
