"""Who may read /status and /metrics: everyone, or with ``RAILGUARD_READ_TOKEN`` set, whoever
presents it.

The pages say which releases are bad and when rollbacks are frozen; a public domain shows
them to the internet. With the token set, a request needs it as a bearer token
(``Authorization: Bearer <token>``, as Prometheus's ``authorization`` sends it) or as the
password of HTTP Basic auth with any user name (a browser asks for it, and Prometheus's
``basic_auth`` sends it). /healthz and /readyz stay open (Railway's healthcheck asks them);
the admin API has its own token.
"""

from __future__ import annotations

import base64
import binascii
import hmac
from collections.abc import Awaitable, Callable

from aiohttp import web
from aiohttp.typedefs import Middleware
from pydantic import SecretStr

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
GUARDED = ("/metrics", "/status")  # and everything under /status/


def guarded(path: str) -> bool:
    """Whether ``path`` is one of the pages the read token guards."""
    return path in GUARDED or path.startswith("/status/")


def presented(header: str) -> bytes | None:
    """The token an ``Authorization`` header carries (bearer, or Basic's password)."""
    scheme, _, value = header.strip().partition(" ")
    value = value.strip()
    if scheme.lower() == "bearer":
        # A byte that is no UTF-8 comes as a lone surrogate (aiohttp's surrogateescape).
        return value.encode("utf-8", "surrogateescape")
    if scheme.lower() == "basic":
        try:
            decoded = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            return None
        return decoded.partition(b":")[2]
    return None


def read_guard(token: SecretStr | None) -> Middleware:
    """The middleware: a pass-through without a token, a 401 for a request without it."""
    expected = token.get_secret_value().encode() if token is not None else None

    @web.middleware
    async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
        if expected is None or not guarded(request.path):
            return await handler(request)
        given = presented(request.headers.get("Authorization", ""))
        if given is not None and hmac.compare_digest(given, expected):
            return await handler(request)
        return web.json_response(
            {"error": "this page needs RAILGUARD_READ_TOKEN (bearer, or Basic auth's password)"},
            status=401,
            headers={"WWW-Authenticate": 'Basic realm="railguard", charset="UTF-8"'},
        )

    return guard
