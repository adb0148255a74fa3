"""What the HTTP channels share: one POST, the answer classified, secrets kept out of errors.

A channel calls :func:`post_json` and either returns (2xx: delivered, as soon as the status
line and headers arrive; a 2xx answer's body is not awaited) or lets its
:class:`~monitor.errors.ChannelError` go to the outbox:

- 429: transient, ``retry_after`` from ``Retry-After`` (seconds or an HTTP-date), else from a
  JSON body's ``retry_after`` (Discord), else None;
- 408, 5xx, network errors and timeouts: transient;
- any other status (3xx included: redirects are not followed): permanent, with the status and
  the start of the answer's body.

Webhook URLs carry their token in the path or query, so messages name a URL only as
:func:`redact` prints it, and the body excerpt is scrubbed of the URL's path and query.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from email.utils import parsedate_to_datetime
from typing import Annotated, Any

import aiohttp
from pydantic import AfterValidator, SecretStr
from pydantic_core import PydanticCustomError
from yarl import URL

from monitor import __version__
from monitor.alerts.model import Notification
from monitor.clock import Clock
from monitor.configtypes import Secret
from monitor.errors import ChannelError

MAX_ANSWER = 64 * 1024
"""How much of an answer's body is read: enough for any error text, bounded against abuse."""
EXCERPT = 300
"""How much of a refused answer's body goes into the error message."""
USER_AGENT = f"railguard/{__version__}"


def _secret_http_url(value: SecretStr) -> SecretStr:
    try:
        url = URL(value.get_secret_value())
    except ValueError:
        url = URL()
    if url.scheme not in ("http", "https") or not url.host:
        # The value is a secret: the message must not echo it.
        raise PydanticCustomError(
            "secret_url", "the variable must hold an http:// or https:// URL with a host"
        )
    return value


SecretUrl = Annotated[Secret, AfterValidator(_secret_http_url)]
"""A URL that carries a token: a ``${VAR}`` reference holding an http(s) URL."""


def clip(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` characters, ending in "…" when cut (provider limits)."""
    return text if len(text) <= limit else text[: max(0, limit - 1)] + "…"


def redact(url: str) -> str:
    """``https://hooks.slack.com/services/T0/B0/XYZ`` -> ``https://hooks.slack.com/…``."""
    try:
        parsed = URL(url)
    except ValueError:
        return "<invalid URL>"
    if not parsed.scheme or not parsed.host:
        return "<invalid URL>"
    port = "" if parsed.is_default_port() else f":{parsed.port}"
    return f"{parsed.scheme}://{parsed.host}{port}/…"


def _scrub(text: str, url: str) -> str:
    """Remove the URL and its secret-bearing parts (path, query) from ``text``."""
    try:
        parsed = URL(url)
        parts = [url, parsed.path_qs, parsed.raw_path_qs, parsed.query_string]
    except ValueError:
        parts = [url]
    # Longest first, so the full URL goes before its path; "/" alone is no secret.
    for part in sorted({p for p in parts if len(p) > 1}, key=len, reverse=True):
        text = text.replace(part, "…")
    return text


def parse_retry_after(value: str | None, now: float | None) -> float | None:
    """Seconds to wait from a ``Retry-After`` value: delta-seconds or an HTTP-date.

    An HTTP-date needs ``now`` (Unix seconds on the same clock as the date); without it, or
    for a value that is neither form, the answer is None. A past date means 0.
    """
    if value is None:
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        pass
    else:
        return max(0.0, seconds) if math.isfinite(seconds) else None
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if now is None or when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - now)


def _reference_time(headers: Mapping[str, str], clock: Clock | None) -> float | None:
    # The answer's own Date is the best "now" for its Retry-After date: no clock skew.
    date = headers.get("Date")
    if date is not None:
        try:
            parsed = parsedate_to_datetime(date)
        except (TypeError, ValueError, IndexError):
            parsed = None
        if parsed is not None and parsed.tzinfo is not None:
            return parsed.timestamp()
    return clock.time() if clock is not None else None


def _body_retry_after(body: bytes) -> float | None:
    try:
        value = json.loads(body).get("retry_after")
    except (ValueError, AttributeError):
        return None
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return max(0.0, float(value))
    return None


async def _read_bounded(response: aiohttp.ClientResponse) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while size < MAX_ANSWER:
        chunk = await response.content.read(MAX_ANSWER - size)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


def excerpt(body: bytes, url: str) -> str:
    """The start of an answer's body, one line, safe to put in a message."""
    text = " ".join(body.decode("utf-8", "replace").split())
    text = _scrub(text, url)
    return clip(text, EXCERPT)


def classify(
    status: int,
    headers: Mapping[str, str],
    body: bytes,
    url: str,
    clock: Clock | None = None,
    rate_limited_wait: float | None = None,
) -> None:
    """Return for a 2xx answer; otherwise raise the :class:`ChannelError` it deserves.

    ``rate_limited_wait``: the wait after a 429 that says nothing of when to come back.
    """
    if 200 <= status < 300:
        return
    where = redact(url)
    said = excerpt(body, url)
    message = f"POST {where} answered {status}" + (f": {said}" if said else "")
    if status == 429:
        after = parse_retry_after(headers.get("Retry-After"), _reference_time(headers, clock))
        if after is None:
            after = _body_retry_after(body)
        raise ChannelError(message, retry_after=after if after is not None else rate_limited_wait)
    raise ChannelError(message, permanent=not (status == 408 or status >= 500))


async def post_json(
    session: aiohttp.ClientSession,
    url: str,
    payload: Any,
    *,
    # Seconds, applied as aiohttp's per-request ClientTimeout: each channel has its own.
    timeout: float,  # noqa: ASYNC109
    headers: Mapping[str, str] | None = None,
    data: bytes | None = None,
    clock: Clock | None = None,
    secrets: Sequence[str] = (),
    rate_limited_wait: float | None = None,
) -> int:
    """POST ``payload`` as JSON to ``url``; return the 2xx status or raise ChannelError.

    ``data``: the exact body bytes to send instead of encoding ``payload`` (for a signature
    over those bytes; pass ``payload=None``). ``headers`` add to (and may override) the
    defaults. ``clock`` dates an HTTP-date ``Retry-After`` when the answer has no ``Date``.
    ``timeout`` bounds the whole request, answer included. ``secrets`` sent in the body are
    cut out of an answer that quotes it back, before it can reach an error message.
    ``rate_limited_wait`` as in :func:`classify`.
    """
    body = data if data is not None else json.dumps(payload, ensure_ascii=False).encode()
    sent = {"Content-Type": "application/json", "User-Agent": USER_AGENT, **(headers or {})}
    where = redact(url)
    try:
        # Not following redirects: a moved webhook is a config error to fix, and following one
        # would send the alert (and any signature) to a host nobody configured.
        async with session.post(
            url,
            data=body,
            headers=sent,
            timeout=aiohttp.ClientTimeout(total=timeout),
            allow_redirects=False,
        ) as response:
            status, answer_headers = response.status, response.headers
            if 200 <= status < 300:
                # Delivered: the receiver said so, and the outbox records it now. Reading
                # the body first would only widen the window in which a kill re-sends the
                # message, and a body that stalls would turn a delivery into a retry.
                return status
            answer = await _read_bounded(response)
    except (aiohttp.InvalidURL, aiohttp.NonHttpUrlClientError):
        # The cause's text is the URL itself: not chained, so no traceback shows the token.
        raise ChannelError(f"POST {where}: not a valid URL", permanent=True) from None
    except TimeoutError:
        raise ChannelError(f"POST {where} timed out after {timeout:g}s") from None
    except aiohttp.ClientError as e:
        # Not chained either: aiohttp's messages may name the full URL.
        reason = _scrub(str(e), url) or type(e).__name__
        raise ChannelError(f"POST {where} failed: {type(e).__name__}: {reason}") from None
    for secret in secrets:
        answer = answer.replace(secret.encode(), b"...")
    classify(status, answer_headers, answer, url, clock, rate_limited_wait)
    return status


class JsonWebhook:
    """A channel that POSTs one JSON document per notification to a secret URL.

    Slack and Discord differ only in the document: each passes its ``render``. Neither
    incoming webhook takes an idempotency key, so a message sent again after a kill (the
    receiver took it, railguard died before recording it as sent) shows twice there.
    """

    def __init__(
        self,
        name: str,
        url: SecretStr,
        render: Callable[[Notification], Mapping[str, Any]],
        *,
        session: aiohttp.ClientSession,
        clock: Clock,
        timeout: float,
    ) -> None:
        self.name = name
        self._url = url
        self._render = render
        self._session = session
        self._clock = clock
        self._timeout = timeout

    async def send(self, notification: Notification) -> None:
        """POST the rendered ``notification``; ChannelError as the Channel protocol says."""
        await post_json(
            self._session,
            self._url.get_secret_value(),
            self._render(notification),
            timeout=self._timeout,
            clock=self._clock,
        )
