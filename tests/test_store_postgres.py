"""The store on PostgreSQL itself (the rest of the suite runs on it with --store=postgres):
the fence, outbox claims, a connection the server killed, what messages name. A real server.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import quote

import psycopg
import pytest

from monitor.clock import FakeClock
from monitor.environment import load_environment
from monitor.errors import ConfigError, NotLeader, StoreError
from monitor.redact import redact_database_url as redact
from monitor.store import Fence, open_store
from monitor.store.pg import translate
from monitor.store.postgres import PostgresStore
from monitor.store.sql import SqlStore
from monitor.store.sqlite import SQLiteStore

T0 = 1_700_000_000.0


@pytest.fixture
async def store(postgres: str, clock: FakeClock) -> AsyncIterator[SqlStore]:
    async with await open_store(Path("unused"), database_url=postgres) as s:
        yield s


def hold(url: str, holder: str | None, epoch: int) -> None:
    """Write the lease row as a replica's look would have."""
    with psycopg.connect(url, autocommit=True) as db:
        db.execute(
            "INSERT INTO leases (name, holder, epoch, expires_at) VALUES ('leader', %s, %s, 0) "
            "ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, epoch = excluded.epoch",
            (holder, epoch),
        )


async def begin(store: SqlStore, service: str = "api", **kwargs: object) -> object:
    return await store.begin_rollback(
        service, "d2", "d1", "auto", "railguard", "error-rate", "why", {}, T0, False, **kwargs
    )


async def test_open_store_with_a_url_is_postgres(store: SqlStore, postgres: str) -> None:
    assert isinstance(store, PostgresStore)
    assert store.schema_version == store.migrated[-1]
    assert store.label == postgres  # no password in the test server's URL


async def test_the_urls_own_settings_win_over_the_stores(postgres: str, clock: FakeClock) -> None:
    url = f"{postgres}?options={quote('-c statement_timeout=1234')}&application_name=mine"
    async with await open_store(Path("x"), database_url=url) as store:
        settings = await store._fetch(
            "SELECT current_setting('statement_timeout') AS timeout, "
            "current_setting('application_name') AS name",
            {},
        )
    assert (settings[0]["timeout"], settings[0]["name"]) == ("1234ms", "mine")


async def test_a_second_open_migrates_nothing(postgres: str, clock: FakeClock) -> None:
    first, second = await asyncio.gather(
        open_store(Path("x"), database_url=postgres),
        open_store(Path("x"), database_url=postgres),
    )
    try:
        assert {first.migrated, second.migrated} == {first.migrated or second.migrated, ()}
        third = await open_store(Path("x"), database_url=postgres)
        assert third.migrated == ()
        await third.close()
    finally:
        await first.close()
        await second.close()


async def test_the_fence_refuses_a_replica_that_does_not_hold_the_lease(
    store: SqlStore, postgres: str
) -> None:
    epoch: list[int | None] = [None]
    store.fence = Fence(holder="replica-a", epoch=lambda: epoch[0])
    with pytest.raises(NotLeader, match="replica-a does not hold lease 'leader'"):
        await begin(store)  # not leading: refused before anything is written
    hold(postgres, "replica-a", 3)
    epoch[0] = 3
    intent = await begin(store, attempt=True)
    assert intent.epoch == 3  # type: ignore[attr-defined]
    assert (await store.rollback(intent.id)).epoch == 3  # type: ignore[attr-defined, union-attr]

    hold(postgres, "replica-b", 4)  # taken over: a deposed leader can do no harm
    with pytest.raises(NotLeader, match="with epoch 3"):
        await store.note_attempt(intent.id, T0 + 1)  # type: ignore[attr-defined]
    assert (await store.rollback(intent.id)).attempts == 1  # type: ignore[attr-defined, union-attr]
    await store.enqueue("slack", "m1", {"title": "x"}, T0)
    head = await store.outbox_head("slack")
    assert head is not None
    with pytest.raises(NotLeader):
        await store.outbox_claim(head.id, T0)
    assert (await store.outbox_head("slack")).claimed_epoch is None  # type: ignore[union-attr]


async def test_a_claim_stamps_the_epoch_and_only_a_pending_message_is_claimed(
    store: SqlStore, postgres: str
) -> None:
    hold(postgres, "replica-a", 7)
    store.fence = Fence(holder="replica-a", epoch=lambda: 7)
    await store.enqueue("slack", "m1", {"title": "x"}, T0)
    head = await store.outbox_head("slack")
    assert head is not None
    claimed = await store.outbox_claim(head.id, T0 + 1)
    assert (claimed.claimed_epoch, claimed.claimed_at) == (7, T0 + 1)
    await store.outbox_done(head.id, "sent", T0 + 2)
    with pytest.raises(StoreError, match="not pending"):
        await store.outbox_claim(head.id, T0 + 3)


async def test_the_fences_epoch_is_read_on_the_loops_thread(store: SqlStore, postgres: str) -> None:
    """A leader's view reads the loop's clock (SystemClock.monotonic needs the running
    loop): the store asks for the epoch before its thread takes the write."""
    hold(postgres, "replica-a", 5)

    def epoch() -> int:
        asyncio.get_running_loop()  # raises on the store's thread
        return 5

    store.fence = Fence(holder="replica-a", epoch=epoch)
    intent = await begin(store)
    assert intent.epoch == 5  # type: ignore[attr-defined]
    await store.note_attempt(intent.id, T0 + 1)  # type: ignore[attr-defined]
    await store.enqueue("slack", "m1", {"title": "x"}, T0)
    head = await store.outbox_head("slack")
    assert head is not None
    assert (await store.outbox_claim(head.id, T0)).claimed_epoch == 5


async def test_a_takeover_waits_for_a_fenced_write_in_flight(
    store: SqlStore, postgres: str
) -> None:
    """The fence share-locks the lease row: a takeover's FOR UPDATE waits for the intent's
    transaction, so no intent commits under an epoch that was already replaced."""
    hold(postgres, "replica-a", 1)
    store.fence = Fence(holder="replica-a", epoch=lambda: 1)

    async def waiting_for_a_lock() -> int:
        async with await psycopg.AsyncConnection.connect(postgres) as look:
            cursor = await look.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'railguard' "
                "AND wait_event_type = 'Lock'"
            )
            return int((await cursor.fetchone() or (0,))[0])

    async with await psycopg.AsyncConnection.connect(postgres, autocommit=True) as taker:
        await taker.execute("BEGIN")
        await taker.execute("SELECT * FROM leases WHERE name = 'leader' FOR UPDATE")
        intent = asyncio.ensure_future(begin(store))
        deadline = asyncio.get_running_loop().time() + 30
        while not await waiting_for_a_lock():  # the intent's FOR SHARE waits on the row
            assert asyncio.get_running_loop().time() < deadline, "the intent never waited"
        assert not intent.done()
        await taker.execute("UPDATE leases SET holder = 'replica-b', epoch = 2")
        await taker.execute("COMMIT")
        with pytest.raises(NotLeader):
            await intent
    assert await store.rollbacks() == []


async def test_a_connection_the_server_killed_is_opened_again(
    store: SqlStore, postgres: str
) -> None:
    await store.save_rule_state("api", "r", {"n": 1}, T0)
    with psycopg.connect(postgres, autocommit=True) as admin:
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE application_name = 'railguard' AND datname = current_database()"
        )
    # The first statement meets the dead connection: an error naming the server, no hang.
    with pytest.raises(StoreError, match=r"127\.0\.0\.1"):
        await store.save_rule_state("api", "r", {"n": 2}, T0 + 1)
    # The next opens a new one: nothing was lost, the loop goes on.
    await store.save_rule_state("api", "r", {"n": 3}, T0 + 2)
    assert await store.rule_states("api") == {"r": {"n": 3}}


async def test_an_unreachable_server_is_a_store_error_without_the_password(
    clock: FakeClock,
) -> None:
    url = "postgresql://railguard:s3cret@127.0.0.1:1/railguard?connect_timeout=2"
    with pytest.raises(StoreError) as e:
        await open_store(Path("x"), database_url=url)
    assert "s3cret" not in str(e.value)
    assert "railguard:***@127.0.0.1:1" in str(e.value)
    assert "DATABASE_URL" in str(e.value)


def test_redact_hides_only_the_password() -> None:
    assert redact("postgresql://u:pw@h:5432/db") == "postgresql://u:***@h:5432/db"
    assert redact("postgresql://u@h/db") == "postgresql://u@h/db"
    assert redact("postgresql://u:pw@[::1]:5432/db?x=1") == "postgresql://u:***@[::1]:5432/db?x=1"


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://u@h/db?password=s3cret", "postgresql://u@h/db?password=***"),
        ("postgresql://u:s3cr@t@h/db", "postgresql://u:***@h/db"),  # "@" in the password
        ("postgresql://u:s3cr%40t@h/db", "postgresql://u:***@h/db"),
        ("postgresql://:s3cret@h/db", "postgresql://:***@h/db"),  # no user
        ("host=h password=s3cret dbname=db", "host=h password=*** dbname=db"),
        ("host=h password='s3 cret' dbname=db", "host=h password=*** dbname=db"),
    ],
)
def test_redact_hides_the_password_wherever_the_url_puts_it(url: str, shown: str) -> None:
    assert redact(url) == shown


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://railguard:p%zzs3cret@127.0.0.1:1/db",  # libpq quotes the bad token
        "postgresql://railguard:s3cret@[::1/db",  # libpq quotes the whole URL
        "postgresql://railguard@127.0.0.1:1/db?password=s3cret&connect_timeout=2",
    ],
)
async def test_a_url_that_cannot_be_used_is_never_quoted_with_its_password(
    url: str, clock: FakeClock
) -> None:
    with pytest.raises(StoreError) as e:
        await open_store(Path("x"), database_url=url)
    assert "s3cret" not in str(e.value)
    assert "DATABASE_URL" in str(e.value)


@pytest.fixture
def postgres_en_us(postgres: str) -> Iterator[str]:
    """A database whose collation is en-US (ICU), as most servers' default is."""
    server, name = postgres.rsplit("/", 1)
    name = f"{name}_en_us"
    with psycopg.connect(f"{server}/postgres", autocommit=True) as admin:
        admin.execute(
            f"CREATE DATABASE \"{name}\" TEMPLATE template0 ENCODING 'UTF8' "
            "LOCALE_PROVIDER icu ICU_LOCALE 'en-US' LOCALE 'C.UTF-8'"
        )
    try:
        yield f"{server}/{name}"
    finally:
        with psycopg.connect(f"{server}/postgres", autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def test_text_is_ordered_as_on_sqlite_whatever_the_servers_collation(
    postgres_en_us: str, tmp_path: Path, clock: FakeClock
) -> None:
    names = ["api_v1", "Web", "api-v2", "apiv0", "API"]  # en-US: API api_v1 api-v2 apiv0 Web

    async def orders(store: SqlStore) -> list[list[str]]:
        for name in names:
            await store.freeze(name, "r", "ana", T0)
            await store.save_rule_state("api", name, {}, T0)
            await store.upsert_deployment(
                "api",
                id=name,
                status="SUCCESS",
                created_at=T0,
                can_rollback=True,
                meta={},
                seen_at=T0,
                live=False,
            )
        return [
            [f.service for f in await store.freezes(T0)],
            list(await store.rule_states("api")),
            [d.id for d in await store.deployments("api")],  # a tie on created_at
            [d.id for d in (await store.service_records("api", T0)).records],
        ]

    async with await open_store(Path("x"), database_url=postgres_en_us) as pg:
        on_postgres = await orders(pg)
    async with await SQLiteStore.open(tmp_path / "railguard.db") as lite:
        assert await orders(lite) == on_postgres
    assert on_postgres[0] == sorted(names)
    assert on_postgres[2] == sorted(names, reverse=True)


def test_named_parameters_become_psycopgs() -> None:
    assert translate("SELECT :a, :b_2 FROM t WHERE x = :a") == (
        "SELECT %(a)s, %(b_2)s FROM t WHERE x = %(a)s"
    )
    assert translate("SELECT '100%' || :a") == "SELECT '100%%' || %(a)s"
    assert translate("SELECT x::text") == "SELECT x::text"  # a cast is no parameter


@pytest.mark.parametrize(
    "value",
    ["mysql://u:secretpw@h/db", "secretpw", "sqlite:///data/railguard.db", "u:secretpw@h://db"],
)
def test_database_url_must_be_postgres_and_is_never_quoted(value: str) -> None:
    with pytest.raises(ConfigError, match="DATABASE_URL: a PostgreSQL URL is needed") as e:
        load_environment({"DATABASE_URL": value})
    assert "secretpw" not in str(e.value)


def test_a_database_url_that_is_no_utf8_is_refused_without_a_traceback() -> None:
    with pytest.raises(ConfigError, match="DATABASE_URL: not valid UTF-8") as e:
        load_environment({"DATABASE_URL": "postgresql://u:s3cr\udcffet@h/db"})
    assert "s3cr" not in str(e.value)


async def test_a_url_that_is_no_utf8_is_a_store_error(clock: FakeClock) -> None:
    with pytest.raises(StoreError, match="not valid UTF-8") as e:
        await open_store(Path("x"), database_url="postgresql://u:s3cr\udcffet@h/db")
    assert "s3cr" not in str(e.value)


def test_a_database_url_pasted_with_a_newline_is_stripped() -> None:
    url = load_environment({"DATABASE_URL": " postgresql://u:pw@h/db\n"}).database_url
    assert url is not None
    assert url.get_secret_value() == "postgresql://u:pw@h/db"


def test_an_empty_database_url_means_sqlite() -> None:
    assert load_environment({"DATABASE_URL": " "}).database_url is None
