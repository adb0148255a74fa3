"""The email channel: one multipart message (plain text and HTML) per notification, over SMTP.

The subject shows how urgent it is, or that it is over::

    [railguard] [CRITICAL] checkout: 5xx firing
    [railguard] [RESOLVED] checkout: 5xx resolved

Every message about one incident carries ``In-Reply-To`` and ``References`` naming the same
thread root, derived from the incident key, so mail clients show an incident as one thread.
``Message-ID`` is ``<idempotency key@sender's domain>`` (see
:func:`~monitor.alerts.channels.base.idempotency_key`): the same on every retry and after a
restart, so a message sent again (railguard killed after the server took it, before recording
it as sent) is recognisably the same message: a mailbox that drops a ``Message-ID`` it
already holds (Gmail does; so does a Sieve ``duplicate`` test, RFC 7352, whose default is the
``Message-ID``) shows it once.

Delivery: STARTTLS on port 587 by default (required: a server that does not offer it is an
error, never a fallback to clear text); ``tls = true`` for implicit TLS (port 465 unless
``port`` says); ``starttls = false`` for a relay on a trusted network; ``ca_file`` to trust a
private server's certificate (verification is never switched off). SMTP 5xx replies (a
refused recipient, failed authentication) are permanent; 4xx replies, refused connections,
timeouts and TLS failures are retried; a server lacking what the config asks for (STARTTLS,
AUTH) is permanent. When some recipients are refused and others accept,
the message counts as delivered (a retry would duplicate it for the others) and the refused
ones are logged.
"""

from __future__ import annotations

import hashlib
import html
import re
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime, parseaddr
from typing import Annotated, Literal

import aiohttp
import aiosmtplib
import structlog
from pydantic import AfterValidator, Field, model_validator

from monitor.alerts.channels.base import Channel, ChannelConfig, idempotency_key
from monitor.alerts.model import Notification, Status
from monitor.clock import Clock
from monitor.configtypes import Secret, Text
from monitor.errors import ChannelError

log = structlog.get_logger("railguard.alerts")

_COLORS = {"critical": "#c62828", "warning": "#ef6c00", "info": "#1565c0", "resolved": "#2e7d32"}
# Loose on purpose: the server is the judge; this catches typos and header injection.
_ADDRESS = re.compile(r"^[^@\s<>,;\"]+@[^@\s<>,;\"]+\.[^@\s<>,;\"]+$")


def _address(value: str) -> str:
    if not _ADDRESS.match(parseaddr(value)[1]) or any(c in value for c in "\r\n"):
        raise ValueError(f"not an email address: {value!r}")
    return value


Address = Annotated[Text, AfterValidator(_address)]
"""``ops@example.com`` or ``Railguard <ops@example.com>``."""


class Config(ChannelConfig):
    """``[[channels]] type = "email"``."""

    type: Literal["email"]
    host: Text
    port: int | None = Field(None, ge=1, le=65535)
    """Default: 587, or 465 with ``tls``."""
    starttls: bool = True
    """Upgrade the connection with STARTTLS (ignored with ``tls``)."""
    tls: bool = False
    """Implicit TLS from the first byte (SMTPS)."""
    ca_file: Text | None = None
    """A PEM file of certificates to trust besides the system's (a private SMTP server)."""
    username: Text | None = None
    password: Secret | None = None
    from_addr: Address
    to: list[Address] = Field(min_length=1)
    subject_prefix: str = "[railguard]"

    @model_validator(mode="after")
    def _login_pair(self) -> Config:
        if (self.username is None) != (self.password is None):
            raise ValueError("username and password go together")
        return self

    @property
    def smtp_port(self) -> int:
        """The port to connect to."""
        return self.port or (465 if self.tls else 587)


def _message_id(text: str, domain: str) -> str:
    return f"<{hashlib.sha256(text.encode()).hexdigest()[:32]}@{domain}>"


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _when(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _facts(n: Notification) -> list[tuple[str, str]]:
    """The table both parts show: what, where, when, then the notification's fields."""
    facts = [("Status", n.status.value.upper()), ("Severity", n.severity.value.upper())]
    facts += [(k, v) for k, v in (("Service", n.service), ("Tier", n.tier)) if v]
    facts += [("Started", _when(n.started_at)), ("At", _when(n.at))]
    return facts + list(n.fields.items())


def subject(config: Config, notification: Notification) -> str:
    """``<prefix> [SEVERITY] title``, or ``[RESOLVED]`` for a resolved notification."""
    n = notification
    label = "RESOLVED" if n.status is Status.RESOLVED else n.severity.value.upper()
    return _one_line(f"{config.subject_prefix} [{label}] {n.title}")


def plain(notification: Notification) -> str:
    """The text/plain part."""
    n = notification
    lines = [n.title, ""]
    if n.text:
        lines += [n.text, ""]
    lines += [f"{name}: {value}" for name, value in _facts(n)]
    if n.url:
        lines += ["", f"railguard status: {n.url}"]
    return "\n".join(lines) + "\n"


def rich(notification: Notification) -> str:
    """The text/html part; every value escaped."""
    n, e = notification, html.escape
    color = _COLORS["resolved" if n.status is Status.RESOLVED else n.severity.value]
    rows = "".join(
        f'<tr><th align="left" style="padding:2px 12px 2px 0">{e(name)}</th>'
        f"<td>{e(value)}</td></tr>"
        for name, value in _facts(n)
    )
    parts = [
        '<!DOCTYPE html><html><body style="font-family:sans-serif">',
        f'<p style="color:{color};font-weight:bold">{e(n.status.value.upper())} · '
        f"{e(n.severity.value.upper())}</p>",
        f"<h2>{e(n.title)}</h2>",
    ]
    if n.text:
        parts.append("<p>" + "<br>".join(e(line) for line in n.text.splitlines()) + "</p>")
    parts.append(f"<table>{rows}</table>")
    if n.url:
        parts.append(f'<p><a href="{e(n.url)}">railguard status</a></p>')
    return "".join(parts) + "</body></html>\n"


def message(config: Config, notification: Notification) -> EmailMessage:
    """The message for ``notification``: multipart/alternative with threading headers."""
    n = notification
    domain = parseaddr(config.from_addr)[1].rpartition("@")[2]
    root = _message_id(f"incident\0{n.key}", domain)
    msg = EmailMessage()
    msg["Subject"] = subject(config, n)
    msg["From"] = config.from_addr
    msg["To"] = ", ".join(config.to)
    msg["Date"] = format_datetime(datetime.fromtimestamp(n.at, UTC))
    # The message's idempotency key: the same for a re-send; never reused by a new database.
    msg["Message-ID"] = f"<{idempotency_key(n)}@{domain}>"
    msg["In-Reply-To"] = root
    msg["References"] = root
    msg.set_content(plain(n))
    msg.add_alternative(rich(n), subtype="html")
    return msg


class EmailChannel:
    """Sends each notification as one email to a fixed list of recipients."""

    def __init__(self, config: Config) -> None:
        self.name = config.name or config.type
        self._config = config

    async def send(self, notification: Notification) -> None:
        """Deliver ``notification`` by SMTP; raises ChannelError as the protocol says."""
        config = self._config
        where = f"SMTP {config.host}:{config.smtp_port}"
        password = config.password.get_secret_value() if config.password else None
        try:
            refused, _ = await aiosmtplib.send(
                message(config, notification),
                sender=parseaddr(config.from_addr)[1],
                recipients=[parseaddr(to)[1] for to in config.to],
                hostname=config.host,
                port=config.smtp_port,
                username=config.username,
                password=password,
                use_tls=config.tls,
                start_tls=config.starttls and not config.tls,
                cert_bundle=config.ca_file,
                timeout=config.timeout,
            )
        # Not chained: the server's words are in the message, and tracebacks go to logs.
        except aiosmtplib.SMTPRecipientsRefused as e:
            said = "; ".join(f"{r.recipient}: {r.code} {r.message}" for r in e.recipients)
            permanent = all(r.code >= 500 for r in e.recipients)
            raise _error(f"{where} refused every recipient: {said}", password, permanent) from None
        except aiosmtplib.SMTPResponseException as e:
            said = f"{where} answered {e.code}: {e.message}"
            raise _error(said, password, permanent=e.code >= 500) from None
        except (aiosmtplib.SMTPException, OSError) as e:
            # aiosmtplib raises the bare base class, or SMTPNotSupported, when the server lacks
            # what the config asks for (STARTTLS, AUTH): only a config change helps. Its
            # subclasses and OSError are the network's doing (refused, timed out, dropped, TLS).
            lacking = type(e) in (aiosmtplib.SMTPException, aiosmtplib.SMTPNotSupported)
            said = f"{where} failed: {type(e).__name__}: {e}"
            raise _error(said, password, permanent=lacking) from None
        if refused:
            log.warning(
                "email recipients refused",
                channel=self.name,
                refused={to: f"{r.code} {r.message}" for to, r in refused.items()},
            )


def _error(text: str, password: str | None, permanent: bool) -> ChannelError:
    if password:
        text = text.replace(password, "…")
    return ChannelError(_one_line(text), permanent=permanent)


def build(config: Config, session: aiohttp.ClientSession, clock: Clock) -> Channel:
    """The email channel for ``config`` (``session`` and ``clock`` are not needed)."""
    return EmailChannel(config)
