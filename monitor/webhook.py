"""``POST /webhooks/railway/<secret>``: Railway's deploy webhooks, as a hint to look now.

Railway does not sign its webhooks, so the secret path segment (RAILGUARD_WEBHOOK_SECRET,
compared in constant time; unset: the route answers 404 like any unknown path) is the only
check, and the body is only a hint: it is logged and makes the poller look at Railway now
(at most one early poll per half interval). What railguard believes still comes from
Railway's API.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Callable
from typing import TYPE_CHECKING

import structlog
from aiohttp import web
from pydantic import SecretStr

from monitor.admin import error

if TYPE_CHECKING:
    from monitor.railway.poller import RailwayPoller

log = structlog.get_logger("railguard.webhook")

WEBHOOK_MAX_BYTES = 64 * 1024


def webhook_hint(raw: bytes) -> dict[str, str]:
    """What a webhook body says, leniently: Railway's shapes change and nothing acts on it."""
    try:
        data = json.loads(raw)
    except ValueError:  # UnicodeDecodeError is a ValueError
        return {"body": raw[:200].decode("utf-8", "replace")}
    if not isinstance(data, dict):
        return {"body": f"JSON {type(data).__name__}"}
    hint: dict[str, str] = {}
    # The older payload is flat; the newer one nests the objects under "resource".
    resource = data.get("resource")
    for source in (data, resource if isinstance(resource, dict) else {}):
        for key in ("type", "status"):
            if isinstance(source.get(key), str):
                hint[key] = source[key][:100]
        for key in ("service", "deployment", "environment"):
            value = source.get(key)
            if isinstance(value, dict):
                for sub in ("id", "name"):
                    if isinstance(value.get(sub), str):
                        hint[f"{key}_{sub}"] = value[sub][:100]
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
        if (request.content_length or 0) > WEBHOOK_MAX_BYTES:
            return error(413, f"the body is over {WEBHOOK_MAX_BYTES} bytes")
        raw = bytearray()
        while chunk := await request.content.readany():
            raw += chunk
            if len(raw) > WEBHOOK_MAX_BYTES:
                return error(413, f"the body is over {WEBHOOK_MAX_BYTES} bytes")
        poller = self.poller()
        if poller is None:
            outcome = "no Railway services to poll"
        elif poller.refresh():
            outcome = "polling Railway now"
        else:
            outcome = "an early poll ran moments ago: the next one will tell"
        log.info("railway webhook", refresh=outcome, **webhook_hint(bytes(raw)))
        return web.json_response({"accepted": True, "refresh": outcome}, status=202)
