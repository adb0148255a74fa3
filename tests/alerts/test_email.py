"""The email channel against a real SMTP server (aiosmtpd) on 127.0.0.1: plain, STARTTLS, TLS."""

from __future__ import annotations

import shutil
import socket
import ssl
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
import structlog
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session
from pydantic import ValidationError

from monitor.alerts.channels import email
from monitor.alerts.channels.base import idempotency_key
from monitor.alerts.model import Notification, Severity, Status
from monitor.clock import FakeClock
from monitor.errors import ChannelError

PASSWORD = "pa55-w0rd-never-shown"
ENVIRON = {"SMTP_PASSWORD": PASSWORD}


@dataclass(frozen=True)
class Delivered:
    """One message as the server took it."""

    mail_from: str
    rcpt_tos: list[str]
    message: EmailMessage
    tls: bool
    login: bytes | None


class Mailbox:
    """An aiosmtpd handler: refuses scripted recipients, records what it accepts."""

    def __init__(self) -> None:
        self.delivered: list[Delivered] = []
        self.refuse: set[str] = set()
        self.data_reply: str | None = None

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: Any
    ) -> str:
        if address in self.refuse:
            return "550 5.1.1 no such mailbox"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        if self.data_reply is not None:
            return self.data_reply
        assert isinstance(envelope.content, bytes)
        message = message_from_bytes(envelope.content, policy=policy.default)
        assert isinstance(message, EmailMessage)
        login = session.auth_data.login if isinstance(session.auth_data, LoginPassword) else None
        # Set for STARTTLS and implicit TLS alike (session.ssl is for STARTTLS only).
        tls = server.transport is not None and server.transport.get_extra_info("ssl_object")
        self.delivered.append(
            Delivered(str(envelope.mail_from), list(envelope.rcpt_tos), message, bool(tls), login)
        )
        return "250 accepted"


def authenticate(
    server: SMTP, session: Session, envelope: Envelope, mechanism: str, auth_data: Any
) -> AuthResult:
    ok = isinstance(auth_data, LoginPassword) and auth_data.password == PASSWORD.encode()
    # handled=False: aiosmtpd answers the failure itself (535).
    return AuthResult(success=ok, handled=False, auth_data=auth_data)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Server:
    """A running SMTP server and its mailbox."""

    port: int
    mailbox: Mailbox


def serve(**kwargs: Any) -> Iterator[Server]:
    mailbox = Mailbox()
    port = free_port()
    controller = Controller(mailbox, hostname="127.0.0.1", port=port, **kwargs)
    controller.start()
    try:
        yield Server(port, mailbox)
    finally:
        controller.stop()


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (cert, key), made with the openssl CLI."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("needs the openssl command to make a test certificate")
    root = tmp_path_factory.mktemp("tls")
    cert, key = root / "cert.pem", root / "key.pem"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-days", "2", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    return cert, key


def server_context(certificate: tuple[Path, Path]) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(*certificate)
    return context


@pytest.fixture
def smtp() -> Iterator[Server]:
    """Plain SMTP with AUTH allowed without TLS (a test server only)."""
    yield from serve(authenticator=authenticate, auth_require_tls=False)


@pytest.fixture
def starttls(certificate: tuple[Path, Path]) -> Iterator[Server]:
    """SMTP that requires STARTTLS before anything else."""
    context = server_context(certificate)
    yield from serve(tls_context=context, require_starttls=True, authenticator=authenticate)


@pytest.fixture
def smtps(certificate: tuple[Path, Path]) -> Iterator[Server]:
    """SMTP over implicit TLS."""
    yield from serve(ssl_context=server_context(certificate))


def config(port: int, environ: dict[str, str] = ENVIRON, **extra: Any) -> email.Config:
    data = {
        "type": "email",
        "host": "127.0.0.1",
        "port": port,
        "starttls": False,
        "from_addr": "Railguard <railguard@alerts.example>",
        "to": ["oncall@example.com"],
        "timeout": "5s",
    } | extra
    return email.Config.model_validate(data, context={"environ": environ})


def notification(**changes: Any) -> Notification:
    base: dict[str, Any] = {
        "id": "event-7",
        "key": "railguard/checkout/5xx",
        "kind": "rule_firing",
        "status": Status.FIRING,
        "severity": Severity.CRITICAL,
        "title": "checkout: 5xx firing",
        "text": "7.1% of requests failed\nover 5m",
        "at": 1_700_000_000.0,
        "started_at": 1_699_999_900.0,
        "service": "checkout",
        "tier": "critical",
        "fields": {"rule": "5xx", "error rate": "7.1%"},
        "url": "https://railguard.example/status",
    }
    return Notification(**{**base, **changes})


async def send(cfg: email.Config, n: Notification, clock: FakeClock) -> None:
    await email.build(cfg, None, clock).send(n)  # type: ignore[arg-type]


async def test_plain_smtp_with_login(smtp: Server, clock: FakeClock) -> None:
    cfg = config(smtp.port, username="railguard", password="${SMTP_PASSWORD}")
    await send(cfg, notification(), clock)

    (got,) = smtp.mailbox.delivered
    assert got.mail_from == "railguard@alerts.example"
    assert got.rcpt_tos == ["oncall@example.com"]
    assert got.login == b"railguard"
    assert not got.tls
    msg = got.message
    assert msg["Subject"] == "[railguard] [CRITICAL] checkout: 5xx firing"
    assert msg["From"] == "Railguard <railguard@alerts.example>"
    assert msg["To"] == "oncall@example.com"
    assert msg["Date"] == "Tue, 14 Nov 2023 22:13:20 +0000"
    assert msg.get_content_type() == "multipart/alternative"
    text = msg.get_body(("plain",))
    rich = msg.get_body(("html",))
    assert text is not None
    assert rich is not None
    body = text.get_content().replace("\r\n", "\n")
    assert "7.1% of requests failed\nover 5m" in body
    assert "Status: FIRING" in body
    assert "Severity: CRITICAL" in body
    assert "error rate: 7.1%" in body
    assert "railguard status: https://railguard.example/status" in body
    page = rich.get_content()
    assert "FIRING · CRITICAL" in page
    assert "<th" in page
    assert ">error rate</th><td>7.1%</td>" in page
    assert '<a href="https://railguard.example/status">' in page


async def test_resolved_subject_and_threading(smtp: Server, clock: FakeClock) -> None:
    cfg = config(smtp.port, subject_prefix="[prod]", to=["a@example.com", "b@example.com"])
    await send(cfg, notification(), clock)
    await send(
        cfg, notification(id="event-9", status=Status.RESOLVED, title="5xx ok", text=""), clock
    )
    await send(cfg, notification(id="event-3", key="railguard/checkout/latency"), clock)

    first, done, other = (d.message for d in smtp.mailbox.delivered)
    assert done["Subject"] == "[prod] [RESOLVED] 5xx ok"
    assert smtp.mailbox.delivered[0].rcpt_tos == ["a@example.com", "b@example.com"]
    assert first["To"] == "a@example.com, b@example.com"
    # One incident, one thread: the same root for both; another incident, another root.
    assert first["In-Reply-To"] == first["References"] == done["In-Reply-To"]
    assert done["References"] == first["References"]
    assert other["References"] != first["References"]
    assert first["Message-ID"] != done["Message-ID"]
    assert first["Message-ID"].endswith("@alerts.example>")
    assert first["References"].endswith("@alerts.example>")
    # A retry of one notification keeps its Message-ID, so duplicates can be dropped.
    assert email.message(cfg, notification())["Message-ID"] == first["Message-ID"]
    # It is the message's idempotency key, as the outbox stores the message.
    stored = Notification.from_dict(notification().to_dict())
    assert first["Message-ID"] == f"<{idempotency_key(stored)}@alerts.example>"
    # A new database's event-7 is another message: the time keeps the ids apart.
    later = email.message(cfg, notification(at=1_800_000_000.0))
    assert later["Message-ID"] != first["Message-ID"]


async def test_html_is_escaped(smtp: Server, clock: FakeClock) -> None:
    hostile = notification(
        title="<script>alert(1)</script>",
        text="a & b <i>",
        fields={"<b>k</b>": '"v"'},
        severity=Severity.INFO,
        url=None,
        service=None,
        tier=None,
    )
    await send(config(smtp.port), hostile, clock)
    msg = smtp.mailbox.delivered[0].message
    rich = msg.get_body(("html",))
    assert rich is not None
    page = rich.get_content()
    assert "<script>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "a &amp; b &lt;i&gt;" in page
    assert "&lt;b&gt;k&lt;/b&gt;</th><td>&quot;v&quot;</td>" in page
    assert "Service" not in page
    assert "<a href" not in page
    assert msg["Subject"] == "[railguard] [INFO] <script>alert(1)</script>"


async def test_starttls_with_a_trusted_certificate(
    starttls: Server, certificate: tuple[Path, Path], clock: FakeClock
) -> None:
    cfg = config(
        starttls.port,
        starttls=True,
        ca_file=str(certificate[0]),
        username="railguard",
        password="${SMTP_PASSWORD}",
    )
    await send(cfg, notification(), clock)
    (got,) = starttls.mailbox.delivered
    assert got.tls
    assert got.login == b"railguard"


async def test_starttls_with_an_untrusted_certificate_is_retried(
    starttls: Server, clock: FakeClock
) -> None:
    with pytest.raises(ChannelError, match=r"(?i)certificate") as caught:
        await send(config(starttls.port, starttls=True), notification(), clock)
    assert not caught.value.permanent
    assert starttls.mailbox.delivered == []


async def test_implicit_tls(
    smtps: Server, certificate: tuple[Path, Path], clock: FakeClock
) -> None:
    cfg = config(smtps.port, tls=True, ca_file=str(certificate[0]))
    await send(cfg, notification(), clock)
    assert smtps.mailbox.delivered[0].tls


async def test_a_server_without_starttls_is_a_config_problem(
    smtp: Server, clock: FakeClock
) -> None:
    with pytest.raises(ChannelError, match="STARTTLS") as caught:
        await send(config(smtp.port, starttls=True), notification(), clock)
    assert caught.value.permanent
    assert smtp.mailbox.delivered == []


async def test_refused_login_is_permanent_and_never_shows_the_password(
    smtp: Server, clock: FakeClock
) -> None:
    wrong = {"SMTP_PASSWORD": PASSWORD + "-old"}
    cfg = config(smtp.port, wrong, username="railguard", password="${SMTP_PASSWORD}")
    with pytest.raises(ChannelError, match="535") as caught:
        await send(cfg, notification(), clock)
    assert caught.value.permanent
    assert PASSWORD not in str(caught.value)


async def test_a_refused_recipient_is_permanent(smtp: Server, clock: FakeClock) -> None:
    smtp.mailbox.refuse.add("nobody@example.com")
    with pytest.raises(ChannelError, match="550") as caught:
        await send(config(smtp.port, to=["nobody@example.com"]), notification(), clock)
    assert caught.value.permanent
    assert "nobody@example.com" in str(caught.value)


async def test_some_recipients_refused_is_delivered_and_logged(
    smtp: Server, clock: FakeClock
) -> None:
    smtp.mailbox.refuse.add("nobody@example.com")
    cfg = config(smtp.port, to=["nobody@example.com", "oncall@example.com"])
    with structlog.testing.capture_logs() as logs:
        await send(cfg, notification(), clock)
    assert smtp.mailbox.delivered[0].rcpt_tos == ["oncall@example.com"]
    (entry,) = [e for e in logs if e["event"] == "email recipients refused"]
    assert entry["refused"] == {"nobody@example.com": "550 5.1.1 no such mailbox"}


@pytest.mark.parametrize(("reply", "permanent"), [("451 4.3.0 try later", False),
                                                   ("554 5.6.0 rejected", True)])  # fmt: skip
async def test_data_replies_decide(
    reply: str, permanent: bool, smtp: Server, clock: FakeClock
) -> None:
    smtp.mailbox.data_reply = reply
    with pytest.raises(ChannelError, match=reply.split()[0]) as caught:
        await send(config(smtp.port), notification(), clock)
    assert caught.value.permanent is permanent


async def test_connection_refused_is_transient(clock: FakeClock) -> None:
    cfg = config(free_port(), username="railguard", password="${SMTP_PASSWORD}")
    with pytest.raises(ChannelError) as caught:
        await send(cfg, notification(), clock)
    assert not caught.value.permanent
    assert PASSWORD not in str(caught.value)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"to": []}, "at least 1"),
        ({"to": ["not-an-address"]}, "not an email address"),
        ({"to": ["a@example.com\r\nBcc: x@evil.example"]}, "not an email address"),
        ({"from_addr": "railguard"}, "not an email address"),
        ({"username": "railguard"}, "go together"),
        ({"password": PASSWORD, "username": "u"}, "environment"),
    ],
)
def test_config_is_checked(extra: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        config(25, **extra)


def test_ports_and_names() -> None:
    plain = config(25).model_copy(update={"port": None})
    assert plain.smtp_port == 587
    assert plain.model_copy(update={"tls": True}).smtp_port == 465
    assert email.build(plain, None, FakeClock()).name == "email"  # type: ignore[arg-type]
    cfg = email.Config.model_validate(
        {"type": "email", "host": "${SMTP_HOST}", "from_addr": "r@x.example", "to": ["o@x.io"]},
        context={"environ": {"SMTP_HOST": "smtp.example"}},
    )
    assert (cfg.host, cfg.smtp_port, cfg.starttls, cfg.tls) == ("smtp.example", 587, True, False)
    assert cfg.subject_prefix == "[railguard]"
