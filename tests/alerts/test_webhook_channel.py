"""The generic webhook channel, and the HTTP plumbing every HTTP channel shares."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from pydantic import ValidationError

from monitor.alerts.channels import http
from monitor.alerts.channels.base import idempotency_key
from monitor.alerts.channels.webhook import Config, build
from monitor.alerts.model import Notification
from monitor.clock import FakeClock
from monitor.errors import ChannelError
from tests.alerts.receivers import NOWHERE, Receiver, notification

KEY = "k3y-0f-the-hmac"
TOKEN = "T0K3N-in-the-path"


def config(hook: str, **keys: Any) -> Config:
    environ = {"HOOK": hook, "KEY": KEY, "AUTH": "Bearer abc"}
    data = {"type": "webhook", "url": "${HOOK}", **keys}
    return Config.model_validate(data, context={"environ": environ})


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
async def rx() -> AsyncIterator[Receiver]:
    async with Receiver() as receiver:
        yield receiver


async def failure(
    session: aiohttp.ClientSession, url: str, clock: FakeClock, **keys: Any
) -> ChannelError:
    with pytest.raises(ChannelError) as caught:
        await build(config(url, **keys), session, clock).send(notification())
    return caught.value


async def test_posts_the_notification_as_json(
    rx: Receiver, session: aiohttp.ClientSession, clock: FakeClock
) -> None:
    channel = build(
        config(rx.url("/in?team=ops"), headers={"Authorization": "${AUTH}"}), session, clock
    )
    await channel.send(notification())

    (request,) = rx.requests
    assert (request.method, request.path, request.query) == ("POST", "/in", {"team": "ops"})
    key = idempotency_key(notification())
    expected = {**notification().to_dict(), "idempotency_key": key, "source": "railguard"}
    assert request.json() == expected
    assert request.headers["Idempotency-Key"] == key
    assert request.headers["Content-Type"] == "application/json"
    assert request.headers["Authorization"] == "Bearer abc"
    assert request.headers["User-Agent"].startswith("railguard/")
    assert "X-Railguard-Signature" not in request.headers
    assert channel.name == "webhook"


async def test_signature_verifies_over_the_raw_body(
    rx: Receiver, session: aiohttp.ClientSession, clock: FakeClock
) -> None:
    await build(config(rx.url(), secret="${KEY}"), session, clock).send(notification())

    (request,) = rx.requests
    expected = "sha256=" + hmac.new(KEY.encode(), request.body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(expected, request.headers["X-Railguard-Signature"])
    assert request.headers["X-Railguard-Timestamp"] == str(int(clock.time()))
    forged = "sha256=" + hmac.new(KEY.encode(), request.body + b" ", hashlib.sha256).hexdigest()
    assert not hmac.compare_digest(forged, request.headers["X-Railguard-Signature"])


async def test_every_attempt_of_a_message_carries_its_key(
    rx: Receiver, session: aiohttp.ClientSession, clock: FakeClock
) -> None:
    # Configured headers cannot replace the key: it is railguard's, one per message.
    channel = build(
        config(rx.url(), secret="${KEY}", headers={"Idempotency-Key": "mine"}), session, clock
    )
    stored = notification().to_dict()  # what the outbox keeps, as a later run reads it back
    await channel.send(notification())
    await clock.advance(90)  # a retry, later: the timestamp moves, the key and body do not
    await channel.send(Notification.from_dict(stored))
    await channel.send(notification(id="n-2"))

    first, retry, other = rx.requests
    assert first.headers["Idempotency-Key"] == retry.headers["Idempotency-Key"]
    assert first.headers["Idempotency-Key"] == idempotency_key(notification())
    assert first.body == retry.body
    assert first.headers["X-Railguard-Signature"] == retry.headers["X-Railguard-Signature"]
    assert first.headers["X-Railguard-Timestamp"] != retry.headers["X-Railguard-Timestamp"]
    assert other.headers["Idempotency-Key"] != first.headers["Idempotency-Key"]
    assert other.json()["idempotency_key"] == other.headers["Idempotency-Key"]


def test_the_key_tells_a_new_database_s_reused_id_apart() -> None:
    # Ids such as event-7 start over with a new database; the time keeps the keys apart.
    again = notification(at=notification().at + 86_400)
    assert idempotency_key(again) != idempotency_key(notification())
    assert idempotency_key(notification(key="other/rule")) != idempotency_key(notification())
    assert len(idempotency_key(notification())) == 32


async def test_a_2xx_is_delivered_without_waiting_for_its_body(
    rx: Receiver, session: aiohttp.ClientSession, clock: FakeClock
) -> None:
    # The receiver has taken the message once its status is out: the outbox records it now,
    # and a body that never comes must not turn the delivery into a retry (a duplicate).
    rx.reply(200, body="ok")
    rx.stall_body()
    await build(config(rx.url()), session, clock).send(notification())
    assert len(rx.events) == 1
    rx.release()


@pytest.mark.parametrize(
    ("keys", "complaint"),
    [
        ({"url": "http://127.0.0.1:1/hook"}, "secret_literal"),
        ({"secret": "hunter2"}, "secret_literal"),
        ({"colour": "red"}, "extra_forbidden"),
        ({"headers": {"X-A": 1}}, "string_type"),
        ({"name": ""}, "string_too_short"),
    ],
)
def test_config_refuses(keys: dict[str, Any], complaint: str) -> None:
    with pytest.raises(ValidationError) as caught:
        config("http://127.0.0.1:1/hook", **keys)
    assert complaint in {error["type"] for error in caught.value.errors()}


@pytest.mark.parametrize(
    "url", ["ftp://files.example/up", "not a url", "http:///no-host", "http://[::1/x"]
)
def test_config_refuses_a_variable_that_is_not_an_http_url(url: str) -> None:
    with pytest.raises(ValidationError) as caught:
        config(url)
    assert "secret_url" in {error["type"] for error in caught.value.errors()}
    assert url not in str(caught.value)


def test_config_defaults() -> None:
    parsed = config("https://example.com/hook", name="ops", timeout="2s")
    assert (parsed.name, parsed.timeout, parsed.secret, parsed.headers) == ("ops", 2.0, None, {})
    assert "example.com" not in repr(parsed)


@pytest.mark.parametrize("status", [200, 201, 202, 204])
async def test_2xx_is_delivered(
    rx: Receiver, session: aiohttp.ClientSession, clock: FakeClock, status: int
) -> None:
    rx.reply(status)
    await build(config(rx.url()), session, clock).send(notification())
    assert len(rx.requests) == 1


@pytest.mark.parametrize(
    ("status", "headers", "body", "permanent", "retry_after"),
    [
        (429, {"Retry-After": "7"}, "slow down", False, 7.0),
        (429, {"Retry-After": "0.5"}, "", False, 0.5),
        (
            429,
            {
                "Date": "Tue, 14 Nov 2023 22:13:20 GMT",
                "Retry-After": "Tue, 14 Nov 2023 22:13:50 GMT",
            },
            "",
            False,
            30.0,
        ),
        (429, {}, '{"retry_after": 1.5}', False, 1.5),
        (429, {}, "busy", False, None),
        (408, {}, "", False, None),
        (500, {}, "oops", False, None),
        (503, {"Retry-After": "9"}, "", False, None),
        (400, {}, "bad payload", True, None),
        (401, {}, "", True, None),
        (404, {}, "no such hook", True, None),
        (302, {"Location": "http://127.0.0.1:1/elsewhere"}, "moved", True, None),
    ],
)
async def test_answers_are_classified(
    rx: Receiver,
    session: aiohttp.ClientSession,
    clock: FakeClock,
    status: int,
    headers: dict[str, str],
    body: str,
    permanent: bool,
    retry_after: float | None,
) -> None:
    rx.reply(status, body, headers)
    error = await failure(session, rx.url(), clock)
    assert (error.permanent, error.retry_after) == (permanent, retry_after)
    assert f"answered {status}" in str(error)
    assert body in str(error)


async def test_timeout_is_transient(
    rx: Receiver, session: aiohttp.ClientSession, clock: FakeClock
) -> None:
    rx.hold()
    error = await failure(session, rx.url(), clock, timeout="0.1s")
    assert not error.permanent
    assert "timed out after 0.1s" in str(error)


async def test_connection_refused_is_transient(
    session: aiohttp.ClientSession, clock: FakeClock
) -> None:
    error = await failure(session, f"{NOWHERE}/{TOKEN}?token={TOKEN}", clock)
    assert not error.permanent
    assert str(error).startswith("POST http://127.0.0.1:1/… failed: ClientConnectorError")
    assert TOKEN not in str(error)
    assert error.__cause__ is None  # a chained aiohttp error could print the URL


async def test_secrets_stay_out_of_errors(
    rx: Receiver, session: aiohttp.ClientSession, clock: FakeClock
) -> None:
    url = rx.url(f"/hooks/{TOKEN}?token={TOKEN}")
    # A receiver that echoes the request back (some do, in their error pages).
    rx.reply(400, f"no hook at {url} (/hooks/{TOKEN}?token={TOKEN})")
    error = await failure(session, url, clock, secret="${KEY}")
    assert TOKEN not in str(error)
    assert KEY not in str(error)
    assert rx.url("/…") in str(error)


async def test_an_unusable_url_is_permanent(session: aiohttp.ClientSession) -> None:
    with pytest.raises(ChannelError) as caught:
        await http.post_json(session, f"ftp://files.example/{TOKEN}", {}, timeout=1)
    assert caught.value.permanent
    assert TOKEN not in str(caught.value)


async def test_a_long_answer_is_read_in_part_and_quoted_briefly(
    rx: Receiver, session: aiohttp.ClientSession, clock: FakeClock
) -> None:
    rx.reply(400, "x" * (http.MAX_ANSWER * 2))
    error = await failure(session, rx.url(), clock)
    assert error.permanent
    assert len(str(error)) < http.EXCERPT + 100


@pytest.mark.parametrize(
    ("value", "now", "seconds"),
    [
        (None, 0.0, None),
        ("120", None, 120.0),
        (" 2.5 ", None, 2.5),
        ("-3", None, 0.0),
        ("inf", None, None),
        ("soon", 0.0, None),
        ("Tue, 14 Nov 2023 22:14:20 GMT", 1_700_000_000.0, 60.0),
        ("Tue, 14 Nov 2023 22:00:00 GMT", 1_700_000_000.0, 0.0),
        ("Tue, 14 Nov 2023 22:14:20 GMT", None, None),
        ("Tue, 14 Nov 2023 22:14:20 -0000", 1_700_000_000.0, None),  # no zone: unknowable
    ],
)
def test_parse_retry_after(value: str | None, now: float | None, seconds: float | None) -> None:
    assert http.parse_retry_after(value, now) == seconds


@pytest.mark.parametrize(
    ("headers", "body", "retry_after"),
    [
        # Without a Date, the clock dates the answer.
        ({"Retry-After": "Tue, 14 Nov 2023 22:13:30 GMT"}, b"", 10.0),
        ({"Date": "garbage", "Retry-After": "Tue, 14 Nov 2023 22:13:30 GMT"}, b"", 10.0),
        ({}, b'{"retry_after": true}', None),
        ({}, b'["retry_after"]', None),
        ({}, b'{"retry_after": -1}', 0.0),
    ],
)
def test_classify_429(
    clock: FakeClock, headers: dict[str, str], body: bytes, retry_after: float | None
) -> None:
    with pytest.raises(ChannelError) as caught:
        http.classify(429, headers, body, "https://example.com/x", clock)
    assert caught.value.retry_after == retry_after


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("https://hooks.slack.com/services/T0/B0/XYZ", "https://hooks.slack.com/…"),
        ("http://127.0.0.1:8080/hook?token=abc", "http://127.0.0.1:8080/…"),
        ("https://user:pass@example.com:443/x", "https://example.com/…"),
        ("no scheme", "<invalid URL>"),
        ("http://[::1", "<invalid URL>"),
    ],
)
def test_redact(url: str, shown: str) -> None:
    assert http.redact(url) == shown


def test_excerpt_scrubs_even_with_an_unparsable_url() -> None:
    assert http.excerpt(b"at http://[::1  and\n more", "http://[::1") == "at … and more"


def test_clip() -> None:
    assert http.clip("abc", 3) == "abc"
    assert http.clip("abcd", 3) == "ab…"
