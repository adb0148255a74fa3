"""The status page: the /status document rendered as one HTML page for people.

Written for whoever opens it at 3 a.m.: no JavaScript, nothing fetched from elsewhere (the
CSS and the charts are inline), so it works through any proxy and as a saved file. A pure
function of the document: every relative time is measured from its ``generated_at``.
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from monitor.leadership import leadership_text
from monitor.model import Op, format_duration, show_seconds
from monitor.railway.statuses import ENDED, FAILED, SUCCESS

TIER_ORDER = ("production", "staging", "preview")

_DELIVERY = {"immediate": "alerts immediately", "digest": "daily digest", "off": "no alerts"}
_LEVELS = ("critical", "warning", "ok", "info")
# Badge tones for Railway's deployment statuses; anything else is on its way (or asleep).
_DEPLOY_TONE = {SUCCESS: "ok"} | dict.fromkeys(FAILED, "firing") | dict.fromkeys(ENDED, "blind")
# The order a card takes its colour from: the worst rule wins.
_STATES = ("firing", "pending", "blind", "ok")

_NONE = "—"  # in a cell with nothing to say, so an empty cell never looks like a bug
_W, _H, _PAD = 220, 48, 4  # chart size in px, and the margin that keeps dots unclipped

_CSS = """
:root{--bg:#f5f6f8;--card:#fff;--line:#d9dde3;--text:#1f2328;--muted:#5b6570;--ok:#1a7f37;
--ok-bg:#dafbe1;--warn:#8a5a00;--warn-bg:#fff1c2;--bad:#c4212c;--bad-bg:#ffe4e2;--grey:#57606a;
--grey-bg:#e8ebef;--blue:#0550ae;--blue-bg:#ddf4ff}
*{box-sizing:border-box}
body{margin:0;background:var(--bg);color:var(--text);font:14px/1.45 system-ui,-apple-system,
"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif}
main{max-width:1760px;margin:0 auto;padding:20px 24px 48px}
code,td.condition{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:12px}
header.page{display:flex;flex-wrap:wrap;align-items:baseline;gap:4px 20px;margin-bottom:8px}
header.page h1{margin:0;font-size:22px}.version{color:var(--muted);font-size:14px;font-weight:400}
.summary{font-size:16px;font-weight:600;margin:0}
.generated{color:var(--muted);margin:0;flex-basis:100%}h2{font-size:17px;margin:28px 0 4px}
.policy{color:var(--muted);margin:0 0 12px}
.cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(min(100%,780px),1fr));gap:16px}
article.service{background:var(--card);border:1px solid var(--line);border-top:4px solid var(--ok);
border-radius:8px;padding:14px 16px}
article.service[data-state=firing]{border-top-color:var(--bad)}
article.service[data-state=pending]{border-top-color:#d4a72c}
article.service[data-state=blind]{border-top-color:var(--grey)}
article.service h3{margin:0;font-size:16px;display:inline}
article.service header{display:flex;flex-wrap:wrap;align-items:center;gap:6px 10px}
.meta,.muted,.when,.why{color:var(--muted)}.meta{font-size:12px;margin-left:auto}
.releases{margin:10px 0;display:grid;gap:4px}
.release .role{display:inline-block;width:96px;color:var(--muted);white-space:nowrap}
.release .label{font-weight:600;margin-right:4px}.release .why{font-size:12px;margin-left:100px}
.frozen-reason,.rollback{margin:8px 0;padding:6px 10px;border-radius:6px}
.frozen-reason{background:var(--blue-bg);color:var(--blue)}
.rollback{background:var(--warn-bg);color:var(--warn)}
.badge{display:inline-block;padding:1px 8px;border-radius:10px;font-size:12px;font-weight:600}
.badge.ok{background:var(--ok-bg);color:var(--ok)}
.badge.pending{background:var(--warn-bg);color:var(--warn)}
.badge.firing{background:var(--bad-bg);color:var(--bad)}
.badge.blind{background:var(--grey-bg);color:var(--grey)}
.badge.frozen{background:var(--blue-bg);color:var(--blue)}
table{border-collapse:collapse;width:100%}
th{text-align:left;font-size:12px;font-weight:600;color:var(--muted);padding:4px 6px;
border-bottom:1px solid var(--line)}
td{padding:6px;border-bottom:1px solid #eef0f3;vertical-align:middle}
tr:last-child td{border-bottom:0}td.since{white-space:nowrap}
td.since{color:var(--muted)}td.condition .why{font-family:system-ui,sans-serif}
.scroll{overflow-x:auto}table.rules{table-layout:fixed;min-width:660px}
table.rules th:nth-child(1){width:18%}
table.rules th:nth-child(2){width:84px}table.rules th:nth-child(4){width:15%}
table.rules th:nth-child(5){width:232px}td.name{font-weight:600;overflow-wrap:anywhere}
svg.chart{display:block;background:#fafbfc;border-radius:4px}
.chart .series{fill:none;stroke:#3d4752;stroke-width:1.25}.chart .point{fill:#3d4752}
.chart .point.breach{fill:var(--bad)}
.chart .threshold{stroke:var(--bad);stroke-width:1;stroke-dasharray:4 3;opacity:.7}
.chart .unknown{stroke:#9aa3ad;stroke-width:1.5}.chart .axis{stroke:var(--line)}
.chart text{font-size:11px;fill:var(--muted)}.empty{color:var(--muted)}
#timeline{min-width:640px;background:var(--card);border:1px solid var(--line);border-radius:8px}
#timeline td.time{white-space:nowrap;border-left:4px solid var(--line)}
#timeline tr.critical td.time{border-left-color:var(--bad)}
#timeline tr.warning td.time{border-left-color:#d4a72c}
#timeline tr.ok td.time{border-left-color:var(--ok)}
#timeline tr.info td.time{border-left-color:var(--blue)}#timeline td.title{font-weight:600}
"""


def render(status: Mapping[str, Any], *, refresh: int | None = 10) -> str:
    """The HTML page for the /status document; ``refresh``: reload every N seconds, or never."""
    now = float(status["generated_at"])
    services: list[Mapping[str, Any]] = list(status.get("services") or [])
    summary = _summary(services)
    tiers = [_tier_section(tier, members, now) for tier, members in _by_tier(services)]
    if not services:
        tiers = ['<p class="empty">No services are being watched.</p>']
    meta = "" if refresh is None else f'<meta http-equiv="refresh" content="{int(refresh)}">\n'
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"{meta}<title>railguard · {_e(summary)}</title>\n<style>{_CSS}</style>\n</head>\n"
        f"<body>\n<main>\n{_header(status, summary, now, refresh)}\n"
        + "\n".join(tiers)
        + f"\n{_timeline(status.get('timeline') or [], now)}\n</main>\n</body>\n</html>\n"
    )


def _e(value: object) -> str:
    return html.escape(str(value))


def _header(status: Mapping[str, Any], summary: str, now: float, refresh: int | None) -> str:
    reload = "" if refresh is None else f" · reloads every {format_duration(refresh)}"
    leadership = leadership_text(status.get("leadership"))
    problem = status.get("store_error")
    store = "" if not problem else f'<p class="store-error">store unreadable: {_e(problem)}</p>\n'
    return (
        '<header class="page">\n'
        f'<h1>railguard <span class="version">{_e(status.get("version", ""))}</span></h1>\n'
        f'<p class="summary" id="summary">{_e(summary)}</p>\n'
        f'<p class="generated">generated {_time(now)}{reload}</p>\n'
        f'<p class="leadership" id="leadership">{_e(leadership)}</p>\n'
        f"{store}</header>"
    )


def _summary(services: Sequence[Mapping[str, Any]]) -> str:
    """``3 services · 1 firing · 1 rollback in progress``: zero counts are left out."""
    rules = [r for s in services for r in (s.get("rules") or {}).values()]
    railway = [s.get("railway") or {} for s in services]
    parts = [_plural(len(services), "service")]
    for phase in ("firing", "pending"):
        if count := sum(r.get("phase") == phase for r in rules):
            parts.append(f"{count} {phase}")
    if count := sum(bool(r.get("blind")) for r in rules):
        parts.append(f"{count} blind")
    if count := sum(bool(r.get("rollback")) for r in railway):
        parts.append(f"{_plural(count, 'rollback')} in progress")
    if count := sum(bool(r.get("frozen")) for r in railway):
        parts.append(f"{count} frozen")
    if services and len(parts) == 1:
        parts.append("all clear")
    return " · ".join(parts)


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def _by_tier(services: Iterable[Mapping[str, Any]]) -> list[tuple[str, list[Mapping[str, Any]]]]:
    """Services grouped by tier: the known tiers first, the rest in order of appearance."""
    groups: dict[str, list[Mapping[str, Any]]] = {}
    for service in services:
        groups.setdefault(str(service.get("tier") or "untiered"), []).append(service)
    known = [t for t in TIER_ORDER if t in groups]
    return [(t, groups[t]) for t in known + [t for t in groups if t not in TIER_ORDER]]


def _policy(policy: Mapping[str, Any]) -> str:
    """``automatic rollback · critical · alerts immediately``."""
    delivery = str(policy.get("delivery", ""))
    words = [
        "automatic rollback" if policy.get("auto_rollback") else "watch only",
        str(policy.get("severity", "")),
        _DELIVERY.get(delivery, delivery),
    ]
    return " · ".join(w for w in words if w)


def _tier_section(tier: str, services: Sequence[Mapping[str, Any]], now: float) -> str:
    # A tier sets the policy, so its services agree; should they not, each policy is shown.
    policies = dict.fromkeys(_policy(s.get("policy") or {}) for s in services)
    cards = "\n".join(_service_card(s, now) for s in services)
    return (
        f'<section class="tier" id="tier-{_e(tier)}">\n<h2>{_e(tier)}</h2>\n'
        f'<p class="policy">{_e(" | ".join(policies))}</p>\n'
        f'<div class="cards">\n{cards}\n</div>\n</section>'
    )


def _service_card(service: Mapping[str, Any], now: float) -> str:
    name = str(service.get("name", ""))
    rules: Mapping[str, Mapping[str, Any]] = service.get("rules") or {}
    railway: Mapping[str, Any] | None = service.get("railway")
    states = {_state(r)[0] for r in rules.values()}
    state = next((s for s in _STATES if s in states), "ok")
    head = [f"<h3>{_e(name)}</h3>"]
    parts = []
    if railway is None:
        parts.append('<p class="releases not-on-railway">not on Railway: watched only</p>')
    else:
        if frozen := railway.get("frozen"):
            head.append('<span class="badge frozen">frozen</span>')
            parts.append(_frozen(frozen, now))
        parts.append(_releases(railway, now))
        if rollback := railway.get("rollback"):
            parts.append(_rollback(rollback, now))
    interval = service.get("interval")
    every = f"every {format_duration(float(interval))} · " if interval else ""
    head.append(f'<span class="meta">{every}{_plural(int(service.get("ticks", 0)), "tick")}</span>')
    signals: Mapping[str, Mapping[str, Any]] = service.get("signals") or {}
    rows = [_rule_row(n, r, signals.get(str(r.get("signal"))), now) for n, r in rules.items()]
    table = (
        '<div class="scroll"><table class="rules">\n<thead><tr><th>rule</th><th>state</th>'
        "<th>condition</th><th>since</th><th>recent values</th></tr></thead>\n<tbody>\n"
        + "\n".join(rows)
        + "\n</tbody>\n</table></div>"
        if rows
        else '<p class="empty">No rules.</p>'
    )
    return (
        f'<article class="service" id="service-{_e(name)}" data-state="{state}">\n'
        f"<header>{' '.join(head)}</header>\n" + "\n".join([*parts, table]) + "\n</article>"
    )


def _frozen(frozen: Mapping[str, Any], now: float) -> str:
    until = frozen.get("until")
    when = f" until {_time(until, _clock(until, now) + ' UTC')}" if until is not None else ""
    by = f"by {frozen['actor']}, " if frozen.get("actor") else ""
    return (
        f'<p class="frozen-reason">automatic rollback frozen: {_e(frozen.get("reason", ""))} '
        f'<span class="when">({_e(by)}{_ago(frozen.get("at"), now)}{when})</span></p>'
    )


def _releases(railway: Mapping[str, Any], now: float) -> str:
    active, good = railway.get("active"), railway.get("known_good")
    rows = [_release("active", None, "unknown"), _release("known-good", None, "none verified yet")]
    if active:
        tone = _DEPLOY_TONE.get(str(active.get("status")), "pending")
        badge = f'<span class="badge {tone}">{_e(active.get("status", "?"))}</span>'
        since = _ago(active.get("live_at") or active.get("created_at"), now)
        rows[0] = _release("active", active, f'{badge} <span class="when">since {since}</span>')
    if good:
        why = f'<div class="why">{_e(good["reason"])}</div>' if good.get("reason") else ""
        verified = f'<span class="when">verified {_ago(good.get("verified_at"), now)}</span>'
        rows[1] = _release("known-good", good, verified + why)
    return '<div class="releases">\n' + "\n".join(rows) + "\n</div>"


def _release(kind: str, deployment: Mapping[str, Any] | None, more: str) -> str:
    """One release line: role, label, deployment id, then ``more`` (HTML; plain text when
    there is no ``deployment``)."""
    role = f'<span class="role">{kind.replace("-", " ")}</span>'
    if deployment is None:
        return f'<div class="release {kind} none">{role} <span class="muted">{more}</span></div>'
    ident = str(deployment.get("id", "?"))
    label = deployment.get("release") or ident
    return (
        f'<div class="release {kind}">{role} <span class="label">{_e(label)}</span> '
        f'<code class="deployment">{_e(ident)}</code> {more}</div>'
    )


def _rollback(rollback: Mapping[str, Any], now: float) -> str:
    moved = f"{rollback.get('from_release') or rollback.get('from')} → "
    moved += str(rollback.get("to_release") or rollback.get("to"))
    rule = f"rule {rollback['rule']}, " if rollback.get("rule") else ""
    return (
        f'<p class="rollback"><strong>rollback #{_e(rollback.get("id", "?"))} '
        f"{_e(rollback.get('state', '?'))}: {_e(moved)}</strong> "
        f'<span class="when">({_e(rule)}decided {_ago(rollback.get("decided_at"), now)})</span></p>'
    )


def _state(rule: Mapping[str, Any]) -> tuple[str, str]:
    """(badge class, badge text): blindness hides the phase, since the phase is stale."""
    if rule.get("blind"):
        return "blind", "blind"
    phase = str(rule.get("phase", "inactive"))
    return (phase, phase) if phase in ("pending", "firing") else ("ok", "ok")


def _rule_row(
    name: str, rule: Mapping[str, Any], latest: Mapping[str, Any] | None, now: float
) -> str:
    tone, text = _state(rule)
    phase = str(rule.get("phase", "inactive"))
    since = rule.get("since")
    word = phase if phase in ("pending", "firing") else "ok"
    since_text = f"{word} for {_duration(now - float(since))}" if since is not None else _NONE
    condition = _e(rule.get("rule", ""))
    compared = rule.get("compared")
    if rule.get("baseline_rule") and isinstance(compared, str) and compared:
        condition += f'<div class="why">{_e(compared)}</div>'  # "p95 812ms vs baseline ..."
    # Why the rule cannot see is what a person needs next to a blind badge.
    if latest is not None and latest.get("value") is None and latest.get("reason"):
        condition += f'<div class="why">unknown: {_e(latest["reason"])}</div>'
    return (
        f'<tr class="rule" data-rule="{_e(name)}" data-phase="{_e(phase)}" data-state="{tone}">'
        f'<td class="name">{_e(name)}</td>'
        f'<td class="state"><span class="badge {tone}">{text}</span></td>'
        f'<td class="condition">{condition}</td><td class="since">{since_text}</td>'
        f'<td class="chart">{_chart(rule)}</td></tr>'
    )


def _chart(rule: Mapping[str, Any]) -> str:
    """The rule's recent values against its threshold, as an inline SVG."""
    signal = str(rule.get("signal", ""))
    # A baseline rule's limit moves with its baseline (and is unknown without one).
    limit = rule.get("limit", rule.get("threshold"))
    threshold = float(limit) if isinstance(limit, int | float) else None
    history = [(float(t), None if v is None else float(v)) for t, v in rule.get("history") or []]
    svg = f'<svg class="chart" width="{_W}" height="{_H}" viewBox="0 0 {_W} {_H}" role="img">'
    if len(history) < 2:
        text = f'<text x="{_W / 2}" y="{_H / 2 + 4}" text-anchor="middle">no samples yet</text>'
        return f"{svg}<title>{_e(signal)}: no samples yet</title>{text}</svg>"
    t0, t1 = history[0][0], history[-1][0]
    known = [v for _, v in history if v is not None]
    top = 1.0 if signal == "health" else max((threshold or 0.0) * 2, max(known, default=0.0)) * 1.1
    top = top if top > 0 else 1.0
    try:
        op: Op | None = Op(str(rule.get("op")))
    except ValueError:
        op = None  # an operator this page does not know: draw the values, colour none

    def x(t: float) -> float:
        return _PAD + (t - t0) / ((t1 - t0) or 1.0) * (_W - 2 * _PAD)

    def y(v: float) -> float:
        return _H - _PAD - min(max(v, 0.0), top) / top * (_H - 2 * _PAD)

    # An unknown sample breaks the line: joining across it would invent values.
    runs: list[list[str]] = [[]]
    marks = []
    for t, v in history:
        if v is None:
            runs.append([])
            marks.append(
                f'<line class="unknown" x1="{x(t):.1f}" y1="{_H - 5}" x2="{x(t):.1f}" y2="{_H}"/>'
            )
            continue
        runs[-1].append(f"{x(t):.1f},{y(v):.1f}")
        breach = ""
        if op is not None and threshold is not None and op.breaches(v, threshold):
            breach = " breach"
        marks.append(f'<circle class="point{breach}" cx="{x(t):.1f}" cy="{y(v):.1f}" r="1.5"/>')
    lines = [f'<polyline class="series" points="{" ".join(r)}"/>' for r in runs if len(r) > 1]
    last = history[-1][1]
    shown = "none yet" if threshold is None else _value(signal, threshold)
    title = (
        f"{signal} over the last {_duration(t1 - t0)}; threshold {shown}; "
        f"last value {'unknown' if last is None else _value(signal, last)}"
    )
    line = ""
    if threshold is not None:
        ty = f"{y(threshold):.1f}"
        line = f'<line class="threshold" x1="0" y1="{ty}" x2="{_W}" y2="{ty}"/>'
    return (
        f"{svg}<title>{_e(title)}</title>"
        f'<line class="axis" x1="0" y1="{_H - _PAD}" x2="{_W}" y2="{_H - _PAD}"/>'
        + line
        + "".join(lines + marks)
        + "</svg>"
    )


def _timeline(entries: Sequence[Mapping[str, Any]], now: float) -> str:
    if not entries:
        body = '<p class="empty">Nothing has happened yet.</p>'
    else:
        rows = "\n".join(_event_row(e, now) for e in entries)
        body = (
            '<div class="scroll"><table id="timeline">\n<thead><tr><th>time (UTC)</th><th>tier</th>'
            "<th>service</th><th>event</th><th>detail</th></tr></thead>\n"
            f"<tbody>\n{rows}\n</tbody>\n</table></div>"
        )
    return f'<section class="timeline">\n<h2>Timeline</h2>\n{body}\n</section>'


def _event_row(entry: Mapping[str, Any], now: float) -> str:
    level = str(entry.get("level"))
    level = level if level in _LEVELS else "info"
    at = float(entry.get("at", now))
    cells = [
        _time(at, _clock(at, now)),
        _e(entry.get("tier") or _NONE),
        _e(entry.get("service") or _NONE),
        _e(entry.get("title", "")),
        _e(entry.get("detail", "")),
    ]
    names = ("time", "tier", "service", "title", "detail")
    tds = "".join(f'<td class="{n}">{c}</td>' for n, c in zip(names, cells, strict=True))
    kind = _e(entry.get("kind", ""))
    return f'<tr class="event {level}" data-kind="{kind}" data-level="{level}">{tds}</tr>'


def _time(at: float, text: str = "") -> str:
    """A ``<time>`` showing ``text`` (by default the UTC date and time, also its tooltip)."""
    moment = datetime.fromtimestamp(at, UTC)
    full = f"{moment:%Y-%m-%d %H:%M:%S}Z"
    return f'<time datetime="{moment:%Y-%m-%dT%H:%M:%SZ}" title="{full}">{text or full}</time>'


def _clock(at: float, now: float) -> str:
    """``22:15:20``, with the date in front when ``at`` is not on ``now``'s (UTC) day."""
    moment, today = datetime.fromtimestamp(at, UTC), datetime.fromtimestamp(now, UTC)
    return f"{moment:%H:%M:%S}" if moment.date() == today.date() else f"{moment:%Y-%m-%d %H:%M:%S}"


def _ago(at: object, now: float) -> str:
    """``12s ago`` (``at`` a Unix time), or ``at an unknown time``."""
    if not isinstance(at, int | float):
        return "at an unknown time"
    return _time(at, f"{_duration(now - at)} ago")


def _duration(seconds: float) -> str:
    """``754.2`` -> ``12m34s``: whole seconds are all a person needs; never negative."""
    whole = max(0, round(seconds))
    return format_duration(whole) if whole else "0s"


def _value(signal: str, value: float) -> str:
    """A value as a person reads it: health in words, fractions as percentages."""
    if signal == "health":
        return {1.0: "healthy", 0.0: "failing"}.get(value, f"{value:g}")
    if signal == "deployment":
        return {1.0: "running", 0.0: "crashing"}.get(value, f"{value:g}")
    if signal in ("error_rate", "memory"):
        return f"{round(value * 100, 1):g}%"
    if signal.startswith("latency_"):
        return show_seconds(value)
    return f"{value:g}"
