"""``POST /webhooks/railway/<secret>``: Railway's deploy webhooks, as a hint to look now.

Railway does not sign its webhooks, so the secret path segment (RAILGUARD_WEBHOOK_SECRET,
compared in constant time; unset: the route answers 404 like any unknown path) is the only
check, and the body is only a hint: it is logged and makes the poller look at Railway now
(at most one early poll per half interval). What railguard believes still comes from
Railway's API. The body must still be what Railway sends, a JSON object (UTF-8, at most
64 KiB); anything else is a 400 or 413 ``{"error": ...}`` and polls nothing. Its fields are
read leniently: Railway's shapes change.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import structlog
from aiohttp import web
from pydantic import SecretStr

from monitor.admin import Problem, error, parse_json, read_limited

if TYPE_CHECKING:
    from monitor.railway.poller import RailwayPoller

log = structlog.get_logger("railguard.webhook")

WEBHOOK_MAX_BYTES = 64 * 1024


def _loggable(text: str) -> str:
    """At most 100 characters that can be logged as UTF-8 (a lone surrogate cannot)."""
    return text[:100].encode("utf-8", "replace").decode("utf-8")


def webhook_hint(data: Mapping[str, Any]) -> dict[str, str]:
    """What a webhook body says, leniently: Railway's shapes change and nothing acts on it."""
    hint: dict[str, str] = {}
    # The older payload is flat; the newer one nests the objects under "resource".
    resource = data.get("resource")
    for source in (data, resource if isinstance(resource, dict) else {}):
        for key in ("type", "status"):
            if isinstance(source.get(key), str):
                hint[key] = _loggable(source[key])
        for key in ("service", "deployment", "environment"):
            value = source.get(key)
            if isinstance(value, dict):
                for sub in ("id", "name"):
                    if isinstance(value.get(sub), str):
                        hint[f"{key}_{sub}"] = _loggable(value[sub])
    return hint


class WebhookReceiver:
    """Railway's deploy webhooks for one daemon."""

    def __init__(
        self, secret: SecretStr | None, poller: Callable[[], RailwayPoller | None]
    ) -> None:
        self._secret = secret.get_secret_value().encode() if secret else None
        self.poller = poller

    def mount(self, app: web.Application) -> None:
        """Add the webhook route to ``app``."""
        app.router.add_post("/webhooks/railway/{secret}", self.webhook)

    async def webhook(self, request: web.Request) -> web.Response:
        """A deploy webhook: a hint to poll Railway now; always re-checked against the API."""
        given = request.match_info["secret"].encode("utf-8", "surrogateescape")
        if self._secret is None or not hmac.compare_digest(given, self._secret):
            raise web.HTTPNotFound()  # the same answer as for a path that does not exist
        try:
            data = parse_json(request, await read_limited(request, WEBHOOK_MAX_BYTES))
        except Problem as e:
            return error(e.status, e.message)
        if not isinstance(data, dict):
            kind = type(data).__name__
            return error(400, f"body: expected a JSON object, as Railway sends (got a JSON {kind})")
        poller = self.poller()
        if poller is None:
            outcome = "no Railway services to poll"
        elif poller.refresh():
            outcome = "polling Railway now"
        else:
            outcome = "an early poll ran moments ago: the next one will tell"
        log.info("railway webhook", refresh=outcome, **webhook_hint(data))
        return web.json_response({"accepted": True, "refresh": outcome}, status=202)
