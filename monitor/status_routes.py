"""/status over HTTP: the summary at ``/status``, one service at ``/status/<service>``.

JSON for machines, the HTML page for people (``Accept``, or ``?format=``). The summary is
written in pieces that yield to the event loop between them (see
:mod:`monitor.status_summary`), so a request for thousands of services never holds up the
probe ticks for more than a piece's work.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterable

from aiohttp import web

from monitor.status import Observed, find_worker, service_document
from monitor.status_summary import Summary, charts_of, encode_summary, finite

PARAMETERS = frozenset({"format", "tier", "service", "history"})
TRUE, FALSE = frozenset({"1", "true", "yes"}), frozenset({"0", "false", "no"})
HEADERS = {"Vary": "Accept", "Cache-Control": "no-store"}
ROWS = 50  # summary rows rendered (the first time) between two yields to the loop
PIECE = 32 * 1024  # characters of HTML written (and the loop let go) at a time

SUMMARY_KEY = web.AppKey("status_summary", Summary)
OBSERVED_KEY = web.AppKey("status_observed", Observed)


class BadQuery(Exception):
    """A /status request that cannot be answered: ``{"error": message}`` with ``status``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def wants_html(request: web.Request) -> bool:
    """``?format=html|json`` decides; else a browser (text/html before JSON) gets the page."""
    chosen = request.query.get("format")
    if chosen in ("html", "json"):
        return chosen == "html"
    accept = request.headers.get("Accept", "")
    html, json = accept.find("text/html"), accept.find("application/json")
    return html != -1 and (json == -1 or html < json)


def _one(request: web.Request, name: str) -> str | None:
    values = request.query.getall(name, [])
    if len(values) > 1:
        raise BadQuery(400, f"parameter {name!r} given {len(values)} times: give it once")
    return values[0] if values else None


def _history(request: web.Request, default: bool) -> bool:
    value = _one(request, "history")
    if value is None:
        return default
    if value.lower() in TRUE | FALSE:
        return value.lower() in TRUE
    raise BadQuery(400, f"history must be 1 or 0, not {value[:40]!r}")


def _check(request: web.Request) -> None:
    unknown = sorted(set(request.query) - PARAMETERS)
    if unknown:
        known = ", ".join(sorted(PARAMETERS))
        raise BadQuery(400, f"unknown parameter {unknown[0][:40]!r} (known: {known})")
    chosen = _one(request, "format")
    if chosen is not None and chosen not in ("html", "json"):
        raise BadQuery(400, f"format must be html or json, not {chosen[:40]!r}")


def _error(e: BadQuery) -> web.Response:
    return web.json_response({"error": e.message}, status=e.status, headers=HEADERS)


async def summary(request: web.Request) -> web.StreamResponse:
    """``GET /status``: every service in a line, worst first (``?service=`` for one)."""
    try:
        _check(request)
        service = _one(request, "service")
        if service is not None:
            return await _detail(request, service)
        tier = _one(request, "tier")
        history = _history(request, False)
        status_summary = request.app[SUMMARY_KEY]
        if tier is not None and tier not in status_summary.tiers():
            known = ", ".join(sorted(status_summary.tiers()))
            raise BadQuery(400, f"unknown tier {tier[:40]!r} (tiers: {known})")
    except BadQuery as e:
        return _error(e)
    document, parts = await status_summary.build(tier=tier)
    document = finite(document)
    response = web.StreamResponse(headers=HEADERS)
    if wants_html(request):
        from monitor.statuspage import render_summary, summary_row

        rendered = 0
        for part in parts:
            if part.html is None:  # rendered once, then reused until the service changes
                part.html = summary_row(part.entry)
                rendered += 1
                if rendered % ROWS == 0:
                    await asyncio.sleep(0)
        await asyncio.sleep(0)
        response.content_type = "text/html"
        response.charset = "utf-8"
        rows = [p.html for p in parts if p.html is not None]
        await _write(request, response, _pieces(render_summary(document, rows)))
    else:
        response.content_type = "application/json"
        charts = charts_of(request.app[OBSERVED_KEY].workers) if history else None
        await _write(request, response, encode_summary(document, parts, charts))
    return response


async def _write(
    request: web.Request, response: web.StreamResponse, pieces: Iterable[bytes]
) -> None:
    # Each piece is a few milliseconds of work: let the ticks run between two.
    try:
        await response.prepare(request)
        if request.method != "HEAD":  # a streamed response's body is not held back for one
            for piece in pieces:
                await response.write(piece)
                await asyncio.sleep(0)
        await response.write_eof()
    except ConnectionResetError:  # the client left mid-stream: no one to answer
        pass


def _pieces(fragments: Iterable[str]) -> Iterable[bytes]:
    """A template's many small strings as pieces of about :data:`PIECE` characters."""
    held: list[str] = []
    size = 0
    for fragment in fragments:
        held.append(fragment)
        size += len(fragment)
        if size >= PIECE:
            yield "".join(held).encode()
            held, size = [], 0
    yield "".join(held).encode()


async def service(request: web.Request) -> web.StreamResponse:
    """``GET /status/<service>``: one service in full."""
    try:
        _check(request)
        if _one(request, "service") is not None or _one(request, "tier") is not None:
            raise BadQuery(400, "service and tier are for /status, not /status/<service>")
        return await _detail(request, request.match_info["service"])
    except BadQuery as e:
        return _error(e)


async def _detail(request: web.Request, name: str) -> web.Response:
    if _one(request, "tier") is not None:
        raise BadQuery(400, "give service or tier, not both")
    history = _history(request, True)
    daemon = request.app[OBSERVED_KEY]
    worker = find_worker(daemon, name)
    if worker is None:
        raise BadQuery(404, f"no service called {name[:100]!r}")
    document = finite(await service_document(daemon, worker, history=history))
    if wants_html(request):
        from monitor.statuspage import render_service

        page = render_service(document)
        return web.Response(text=page, content_type="text/html", headers=HEADERS)
    body = json.dumps(document, allow_nan=False)
    return web.Response(text=body, content_type="application/json", headers=HEADERS)


async def no_page(request: web.Request) -> web.Response:
    """Any other path under /status/ (``/status/``, ``/status/web/``): a 404 that says so."""
    shown = request.path[:100]
    message = f"no page {shown!r}: the summary is /status, a service /status/<service>"
    return _error(BadQuery(404, message))


def mount(app: web.Application, daemon: Observed) -> None:
    """Serve /status and /status/<service> from ``daemon``'s state."""
    from monitor.statuspage import compile_templates

    compile_templates()  # now, not in the first request (tens of milliseconds)
    app[OBSERVED_KEY] = daemon
    app[SUMMARY_KEY] = Summary(daemon)
    app.router.add_get("/status", summary)
    app.router.add_get("/status/{service}", service)
    app.router.add_get("/status/{rest:.*}", no_page)
