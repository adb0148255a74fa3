"""The status pages: the /status documents rendered as HTML for people.

Written for whoever opens them at 3 a.m.: no JavaScript, nothing fetched from elsewhere (the
CSS and the charts are inline), so they work through any proxy and as saved files, light or
dark as the reader's system prefers. The templates are in ``monitor/templates/``, rendered
by jinja2 with autoescape on, so every value from a document is escaped where it lands.
Pure functions of a document: relative times are measured from its ``generated_at``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from jinja2 import Environment, PackageLoader
from markupsafe import Markup

from monitor.leadership import leadership_text
from monitor.model import Op, Signal, format_duration
from monitor.railway.statuses import ENDED, FAILED, SUCCESS

LEVELS = ("critical", "warning", "ok", "info")
STATES = ("firing", "pending", "blind", "ok")
BASE = "/status"
_DELIVERY = {"immediate": "alerts immediately", "digest": "daily digest", "off": "no alerts"}
_VERDICT = {"good": "verified good", "bad": "BAD", "unverified": "not verified yet"}
# Badge tones for Railway's deployment statuses; anything else is on its way (or asleep).
_DEPLOY_TONE = {SUCCESS: "ok"} | dict.fromkeys(FAILED, "firing") | dict.fromkeys(ENDED, "blind")
TWO_VALUED = ("health", "deployment")
RATES = ("error_rate", "memory")  # 1 or 0: charted from 0 to 1, said in words
_W, _H = 300, 72  # chart size in px
_LEFT, _RIGHT, _TOP, _BOTTOM = 46, 296, 4, 58  # the plot area inside it


def render_summary(
    document: Mapping[str, Any], rows: Sequence[Markup], *, refresh: int | None = 10
) -> Iterator[str]:
    """The summary page for the /status summary document, in fragments (to stream);
    ``rows``: the services' rows (:func:`summary_row`), worst first."""
    template = _env().get_template("summary.html")
    context = {
        "doc": {"counts": {"by_tier": {}}, "tiers": {}} | dict(document),
        "rows": rows,
        "line": summary_line(document),
        "refresh": refresh,
        "levels": LEVELS,
    }
    return template.generate(context)


def compile_templates() -> None:
    """Load and compile every page's template, so no request pays for it."""
    for name in ("summary.html", "summary_row.html", "service.html"):
        _env().get_template(name)


def summary_row(service: Mapping[str, Any]) -> Markup:
    """One service's row on the summary page (HTML, its values escaped)."""
    return Markup(_env().get_template("summary_row.html").render(s=service))


def render_service(document: Mapping[str, Any], *, refresh: int | None = 10) -> str:
    """The page of one service, for the /status/<service> document."""
    service: Mapping[str, Any] = document["service"]
    now = float(document["generated_at"])
    rules: Mapping[str, Mapping[str, Any]] = service.get("rules") or {}
    signals: Mapping[str, Mapping[str, Any]] = service.get("signals") or {}
    charts = [_rule_view(n, r, signals.get(str(r.get("signal"))), now) for n, r in rules.items()]
    states = {c["tone"] for c in charts}
    context = {
        "doc": dict(document, base=BASE),
        "now": now,
        "state": next((s for s in STATES if s in states), "ok"),
        "charts": charts,
        "refresh": refresh,
        "levels": LEVELS,
    }
    return _env().get_template("service.html").render(context)


def summary_line(document: Mapping[str, Any]) -> str:
    """``3 services · 1 firing · 1 rollback in progress``: zero counts are left out."""
    counts: Mapping[str, Any] = document.get("counts") or {}
    by_state: Mapping[str, int] = counts.get("by_state") or {}
    total = int(counts.get("services", 0))
    parts = [plural(total, "service")]
    for state in ("firing", "pending", "blind"):
        if by_state.get(state):
            parts.append(f"{by_state[state]} {state}")
    if count := counts.get("rollbacks_in_progress"):
        parts.append(f"{plural(count, 'rollback')} in progress")
    if count := counts.get("frozen"):
        parts.append(f"{count} frozen")
    if count := counts.get("maintenance"):
        parts.append(f"{count} in maintenance")
    if total and len(parts) == 1:
        parts.append("all clear")
    return " · ".join(parts)


def plural(count: int, noun: str) -> str:
    """``1 service``, ``2 services``."""
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


_ENV: Environment | None = None


def _env() -> Environment:
    global _ENV  # one Environment (its compiled templates) for the process
    if _ENV is None:
        env = Environment(
            loader=PackageLoader("monitor", "templates"),
            autoescape=True,
        )
        env.filters |= {
            "moment": moment,
            "clock": clock,
            "ago": ago,
            "duration": duration,
            "leadership": lambda section: leadership_text(section),
            "service_url": lambda name: f"{BASE}/{quote(str(name), safe='')}",
            "verdict": lambda v: _VERDICT.get(str(v), str(v)),
            "policy": policy,
            "delivery": lambda d: _DELIVERY.get(str(d), str(d)),
            "tone": lambda status: _DEPLOY_TONE.get(str(status), "pending"),
            "window": window,
        }
        _ENV = env
    return _ENV


def policy(p: Mapping[str, Any]) -> str:
    """``automatic rollback · critical · alerts immediately``."""
    delivery = str(p.get("delivery", ""))
    words = [
        "automatic rollback" if p.get("auto_rollback") else "watch only",
        str(p.get("severity", "")),
        _DELIVERY.get(delivery, delivery),
    ]
    return " · ".join(w for w in words if w)


def moment(at: object) -> Markup:
    """A ``<time>`` with the UTC date and time."""
    if not isinstance(at, int | float):
        return Markup("at an unknown time")
    when = datetime.fromtimestamp(at, UTC)
    full = f"{when:%Y-%m-%d %H:%M:%S}Z"
    return Markup('<time datetime="{}" title="{}">{}</time>').format(
        f"{when:%Y-%m-%dT%H:%M:%SZ}", full, full
    )


def clock(at: object, now: float) -> Markup:
    """``22:15:20`` in a ``<time>``, the date in front when not on ``now``'s (UTC) day."""
    if not isinstance(at, int | float):
        return Markup("—")
    when, today = datetime.fromtimestamp(at, UTC), datetime.fromtimestamp(now, UTC)
    text = f"{when:%H:%M:%S}" if when.date() == today.date() else f"{when:%Y-%m-%d %H:%M:%S}"
    return Markup('<time datetime="{}" title="{}">{}</time>').format(
        f"{when:%Y-%m-%dT%H:%M:%SZ}", f"{when:%Y-%m-%d %H:%M:%S}Z", text
    )


def ago(at: object, now: float) -> Markup:
    """``12s ago`` (``at`` a Unix time) in a ``<time>``, or ``at an unknown time``."""
    if not isinstance(at, int | float):
        return Markup("at an unknown time")
    when = datetime.fromtimestamp(at, UTC)
    return Markup('<time datetime="{}" title="{}">{} ago</time>').format(
        f"{when:%Y-%m-%dT%H:%M:%SZ}", f"{when:%Y-%m-%d %H:%M:%S}Z", duration(now - at)
    )


def duration(seconds: object) -> str:
    """``754.2`` -> ``12m34s``: whole seconds are all a person needs; never negative."""
    if not isinstance(seconds, int | float):
        return "?"
    whole = max(0, round(seconds))
    return format_duration(whole) if whole else "0s"


def window(w: object, now: float) -> Markup:
    """A maintenance window in words: ``nightly 02:00 → 03:00 UTC (Europe/Paris): reason``."""
    if not isinstance(w, Mapping):
        return Markup("—")
    text = Markup("<strong>{}</strong> {} → {} UTC").format(
        w.get("name", "?"), clock(w.get("starts_at"), now), clock(w.get("ends_at"), now)
    )
    if w.get("zone"):
        text += Markup(" ({})").format(w["zone"])
    if w.get("reason"):
        text += Markup(": {}").format(w["reason"])
    return text


def _rule_view(
    name: str, rule: Mapping[str, Any], latest: Mapping[str, Any] | None, now: float
) -> dict[str, Any]:
    """What a rule's row shows: its badge (blind hides a stale phase) and its chart."""
    phase = str(rule.get("phase", "inactive"))
    tone = "blind" if rule.get("blind") else phase if phase in ("pending", "firing") else "ok"
    reason = None
    if latest is not None and latest.get("value") is None and latest.get("reason"):
        reason = latest["reason"]
    signal, op, limit = str(rule.get("signal")), str(rule.get("op")), rule.get("threshold_shown")
    condition = None if not limit else f"{op} {limit}"
    if signal in TWO_VALUED and op == "<" and rule.get("threshold") == 1.0:
        condition = show(signal, 0.0)  # "failing", which "< healthy" only hints at
    text = str(rule.get("rule", ""))
    if not rule.get("baseline_rule") and condition:
        # The rule in the unit it was written in (5%, not 0.05).
        text = f"{signal} {condition} for {duration(rule.get('for'))}"
    return {
        "name": name,
        "text": text,
        "condition": condition,
        "rule": rule,
        "tone": tone,
        "word": phase if phase in ("pending", "firing") else "ok",
        "unknown_reason": reason,
        "chart": chart(rule),
    }


def show(signal: str, value: float) -> str:
    """A value in its signal's unit (``5%``, ``812ms``, ``healthy``)."""
    try:
        return Signal(signal).show(value)
    except ValueError:
        return f"{value:g}"


def chart(rule: Mapping[str, Any]) -> dict[str, Any]:
    """The geometry of a rule's chart: its values over time against its threshold, with the
    scale written on it (the top and bottom values, the time span, the threshold)."""
    signal = str(rule.get("signal", ""))
    # A baseline rule's limit moves with its baseline (and is unknown without one).
    limit = rule.get("limit", rule.get("threshold"))
    threshold = float(limit) if isinstance(limit, int | float) else None
    history = [(float(t), None if v is None else float(v)) for t, v in rule.get("history") or []]
    base: dict[str, Any] = {
        "width": _W,
        "height": _H,
        "left": _LEFT,
        "right": _RIGHT,
        "top": _TOP,
        "bottom": _BOTTOM,
    }
    if len(history) < 2:
        return base | {"empty": True, "title": f"{signal}: no samples yet"}
    t0, t1 = history[0][0], history[-1][0]
    known = [v for _, v in history if v is not None]
    highest = max(known, default=0.0)
    if signal in TWO_VALUED:
        top = 1.0
    else:
        top = max((threshold or 0.0) * 1.5, highest) * 1.1
        if signal in RATES:  # a share: no need to draw room above 100%
            top = min(top, max(1.0, highest))
    top = top if top > 0 else 1.0
    try:
        op: Op | None = Op(str(rule.get("op")))
    except ValueError:
        op = None  # an operator this page does not know: draw the values, colour none

    def x(t: float) -> float:
        return round(_LEFT + (t - t0) / ((t1 - t0) or 1.0) * (_RIGHT - _LEFT), 1)

    def y(v: float) -> float:
        return round(_BOTTOM - min(max(v, 0.0), top) / top * (_BOTTOM - _TOP), 1)

    # An unknown sample breaks the line: joining across it would invent values.
    runs: list[list[str]] = [[]]
    points, unknowns = [], []
    for t, v in history:
        if v is None:
            runs.append([])
            unknowns.append(x(t))
            continue
        runs[-1].append(f"{x(t)},{y(v)}")
        breach = op is not None and threshold is not None and op.breaches(v, threshold)
        points.append((x(t), y(v), breach))
    last = history[-1][1]
    shown_limit = "none yet" if threshold is None else show(signal, threshold)
    title = (
        f"{signal} over the last {duration(t1 - t0)}; threshold {shown_limit}; "
        f"last value {'unknown' if last is None else show(signal, last)}"
    )
    return base | {
        "empty": False,
        "title": title,
        "runs": [" ".join(r) for r in runs if len(r) > 1],
        "points": points,
        "unknowns": unknowns,
        "ty": None if threshold is None else y(threshold),
        # The threshold's label above its line, or below it when the line is at the top.
        "ly": None if threshold is None else _label_y(y(threshold)),
        "limit": None if threshold is None else show(signal, threshold),
        # On a two-valued signal the line sits on the values: its label would hide them.
        "limit_label": signal not in TWO_VALUED,
        "ymax": show(signal, top) if signal not in TWO_VALUED else show(signal, 1.0),
        "ymin": show(signal, 0.0),
        "span": duration(t1 - t0),
    }


def _label_y(line: float) -> float:
    return line - 2 if line - 2 >= _TOP + 9 else line + 10
