"""The HTML status page, read back with the stdlib's HTML parser as a browser would see it."""

from __future__ import annotations

import copy
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from html.parser import HTMLParser
from typing import Any
from urllib.parse import quote

import pytest

from monitor.status import shown
from monitor.statuspage import (
    duration,
    policy,
    render_service,
    render_summary,
    summary_line,
    summary_row,
)

NOW = 1700000123.5  # 2023-11-14 22:15:23.5Z
VOID = {"meta", "link", "br", "hr", "img", "input", "wbr", "col", "area", "base", "source"}


# -- a small DOM ---------------------------------------------------------------------------


@dataclass
class Node:
    tag: str
    attrs: dict[str, str] = field(default_factory=dict)
    children: list[Node | str] = field(default_factory=list)

    @property
    def classes(self) -> set[str]:
        return set(self.attrs.get("class", "").split())

    @property
    def text(self) -> str:
        """The text content, whitespace collapsed."""
        return " ".join("".join(self._texts()).split())

    def _texts(self) -> Iterator[str]:
        for child in self.children:
            yield from [child] if isinstance(child, str) else child._texts()

    def iter(self) -> Iterator[Node]:
        for child in self.children:
            if isinstance(child, Node):
                yield child
                yield from child.iter()

    def all(self, tag: str | None = None, cls: str = "", **attrs: str) -> list[Node]:
        """Descendants by tag, classes (space-separated, all required) and attributes."""
        wanted = set(cls.split())
        return [
            n
            for n in self.iter()
            if (tag is None or n.tag == tag)
            and wanted <= n.classes
            and all(n.attrs.get(k.replace("_", "-")) == v for k, v in attrs.items())
        ]

    def one(self, tag: str | None = None, cls: str = "", **attrs: str) -> Node:
        found = self.all(tag, cls, **attrs)
        assert len(found) == 1, f"{len(found)} matches for {tag} {cls} {attrs}"
        return found[0]

    def by_id(self, ident: str) -> Node:
        return self.one(id=ident)


class TreeBuilder(HTMLParser):
    """Builds Nodes and insists every element is closed in order (well-formed enough)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.root = Node("#document")
        self.stack = [self.root]
        self.doctype = ""

    def handle_decl(self, decl: str) -> None:
        self.doctype = decl

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        node = Node(tag, {k: v or "" for k, v in attrs})
        self.stack[-1].children.append(node)
        if tag not in VOID:
            self.stack.append(node)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.stack[-1].children.append(Node(tag, {k: v or "" for k, v in attrs}))

    def handle_endtag(self, tag: str) -> None:
        assert self.stack[-1].tag == tag, f"</{tag}> closes <{self.stack[-1].tag}>"
        self.stack.pop()

    def handle_data(self, data: str) -> None:
        self.stack[-1].children.append(data)


def parse(page: str) -> Node:
    builder = TreeBuilder()
    builder.feed(page)
    builder.close()
    assert builder.stack == [builder.root], f"unclosed: {[n.tag for n in builder.stack]}"
    assert builder.doctype.lower() == "doctype html"
    return builder.root


def page(document: dict[str, Any], **options: Any) -> Node:
    """The page of one service."""
    return parse(render_service(document, **options))


def summary_page(document: dict[str, Any], **options: Any) -> Node:
    rows = [summary_row(s) for s in document["services"]]
    return parse("".join(render_summary(document, rows, **options)))


# -- the sample documents ------------------------------------------------------------------


def history(values: Sequence[float | None], end: float = NOW - 0.5) -> list[list[float | None]]:
    """One sample a second, the last at ``end``."""
    start = end - len(values) + 1
    return [[start + i, v] for i, v in enumerate(values)]


def rule(
    signal: str, op: str, threshold: float, values: Sequence[float | None], **state: Any
) -> dict[str, Any]:
    """A rule's state as the daemon reports it, inactive unless ``state`` says otherwise."""
    last = values[-1] if values else None
    fields: dict[str, Any] = {
        "rule": f"{signal} {op} {threshold:g} for 3s",
        "signal": signal,
        "op": op,
        "threshold": threshold,
        "for": 3.0,
        "phase": "inactive",
        "since": None,
        "blind": False,
        "history": history(values),
        "value": last,
        "value_shown": shown(signal, last, None),
        "threshold_shown": shown(signal, threshold, None),
    }
    return fields | state


ERRORS: list[float | None] = [0.01] * 40 + [None] * 3 + [0.0] * 5 + [0.3, 0.41, 0.45, 0.48]
BREACHING = 4  # the values above 0.05 in ERRORS
POLICY = {
    "auto_rollback": True,
    "severity": "critical",
    "delivery": "immediate",
    "next_digest": None,
}


def railway(**extra: Any) -> dict[str, Any]:
    """v2 active (verified 20s ago), v1 the rollback target, v0 BAD."""
    return {
        "active": {
            "id": "dep-v2",
            "release": "v2",
            "status": "SUCCESS",
            "created_at": NOW - 40,
            "live_at": NOW - 30,
            "verdict": "good",
            "verified_at": NOW - 20,
        },
        "known_good": {
            "id": "dep-v2",
            "release": "v2",
            "verified_at": NOW - 20,
            "reason": "served 10s with every rule inactive (bake 10s)",
        },
        "rollback_target": {"id": "dep-v1", "release": "v1", "verified_at": NOW - 900},
        "bad": [{"id": "dep-v0", "release": "v0", "at": NOW - 3600, "reason": "rolled back"}],
        "frozen": None,
        "rollback": None,
        "guards": {
            "auto_rollback": True,
            "cooldown": 900.0,
            "cooldown_until": None,
            "max_rollbacks_per_day": 3,
            "rollbacks_last_24h": 1,
            "budget_left": 2,
            "frozen_until": None,
        },
    } | extra


def detail(**service: Any) -> dict[str, Any]:
    """web-production, its error rate firing, on Railway, with a short timeline."""
    firing = rule("error_rate", ">", 0.05, ERRORS, phase="firing", since=NOW - 13)
    memory = rule("memory", ">", 0.9, [0.5, 0.52])
    sizes = {"usage_bytes": 266 * 2**20, "limit_bytes": 512 * 2**20}
    memory["value_shown"] = shown("memory", 0.52, sizes)
    about = {
        "name": "web-production",
        "tier": "production",
        "interval": 1.0,
        "ticks": 120,
        "policy": POLICY,
        "signals": {},
        "rules": {"error-rate": firing, "memory-high": memory},
        "railway": railway(),
    }
    return {
        "version": "0.1.0",
        "generated_at": NOW,
        "leadership": {"role": "single"},
        "railway_budget": {"per_hour": 1000, "left": 640, "reserve": 200, "slowed": False},
        "service": about | service,
        "timeline": [
            event(NOW - 13, "rule_firing", "critical", "error-rate firing"),
            event(NOW - 100, "deployment_verified", "info", "v2 known-good"),
        ],
    }


def event(at: float, kind: str, level: str, title: str, **extra: Any) -> dict[str, Any]:
    """A timeline entry about web-production."""
    about = {"service": "web-production", "tier": "production", "detail": "by rule error-rate"}
    return {"at": at, "kind": kind, "level": level, "title": title} | about | extra


def entry(name: str, tier: str, state: str, **extra: Any) -> dict[str, Any]:
    """A service in the summary."""
    about = {"name": name, "tier": tier, "state": state, "firing": [], "release": "v1"}
    flags = {"frozen": False, "maintenance": False, "rollback_in_progress": False}
    return about | flags | {"verdict": "good", "on_railway": True} | extra


def summary() -> dict[str, Any]:
    """Four services, worst first, as the summary sends them."""
    services = [
        entry("web-production", "production", "firing", firing=["error-rate"], verdict="bad"),
        entry("web-staging", "staging", "pending", rollback_in_progress=True),
        entry("api-production", "production", "ok", frozen=True, maintenance=True),
        entry("web-pr-42", "preview", "ok", release=None, verdict=None, on_railway=False),
    ]
    zero = {"firing": 0, "pending": 0, "blind": 0, "ok": 0}
    return {
        "version": "0.1.0",
        "generated_at": NOW,
        "leadership": {"role": "single"},
        "railway_budget": None,
        "counts": {
            "services": 4,
            "by_state": zero | {"firing": 1, "pending": 1, "ok": 2},
            "by_tier": {
                "production": zero | {"firing": 1, "ok": 1},
                "staging": zero | {"pending": 1},
                "preview": zero | {"ok": 1},
            },
            "frozen": 1,
            "rollbacks_in_progress": 1,
            "maintenance": 1,
        },
        "tiers": {"staging": {"next_digest": NOW + 3600}},
        "services": services,
        "timeline": [event(NOW - 13, "rule_firing", "critical", "error-rate firing")],
    }


def error_rate_row(root: Node) -> Node:
    return root.by_id("service-web-production").one("tr", "rule", data_rule="error-rate")


# -- the summary page ----------------------------------------------------------------------


def test_a_complete_page_with_nothing_fetched_and_nothing_run() -> None:
    for root in (summary_page(summary()), page(detail())):
        assert root.one("html").attrs["lang"] == "en"
        assert root.one("meta", charset="utf-8")
        assert root.one("style")
        assert not root.all("script")
        assert not [n for n in root.iter() if "src" in n.attrs]
        # Links stay on this railguard: to the summary and to each service's page.
        hrefs = {n.attrs["href"] for n in root.iter() if "href" in n.attrs}
        assert all(h.startswith("/status") for h in hrefs), hrefs
        assert "prefers-color-scheme:dark" in root.one("style").text.replace(" ", "")


def test_summary_lists_services_worst_first_linking_to_each() -> None:
    root = summary_page(summary())
    assert root.one("head").one("title").text == (
        "railguard · 4 services · 1 firing · 1 pending · 1 rollback in progress · 1 frozen · "
        "1 in maintenance"
    )
    rows = root.by_id("services").all("tr", "service")
    assert [(r.attrs["id"], r.attrs["data-state"]) for r in rows] == [
        ("service-web-production", "firing"),
        ("service-web-staging", "pending"),
        ("service-api-production", "ok"),
        ("service-web-pr-42", "ok"),
    ]
    assert rows[0].one("a").attrs["href"] == "/status/web-production"
    assert rows[0].one("td", "firing").text == "error-rate"
    assert rows[0].one("td", "release").text == "v1 BAD"
    assert rows[1].one("td", "flags").text == "rollback in progress"
    assert rows[2].one("td", "flags").text == "frozen maintenance"
    assert rows[3].one("td", "release").text == "not on Railway"
    counts = root.by_id("counts")
    assert counts.one(data_tier="production").text == "production 1 firing 1 ok"
    assert "next digest 23:15:23 UTC" in counts.one(data_tier="staging").text


def test_summary_header_says_who_leads_and_what_broke() -> None:
    doc = summary() | {"store_error": "connection refused"}
    header = summary_page(doc).one("header", "page")
    assert header.by_id("leadership").text == "single replica (no DATABASE_URL): it leads"
    assert header.one("p", "store-error").text == "store unreadable: connection refused"
    assert not header.all(id="railway-budget")


def test_an_empty_summary() -> None:
    doc = summary() | {"services": [], "timeline": [], "counts": {"services": 0}}
    texts = [n.text for n in summary_page(doc).all(cls="empty")]
    assert texts == ["No services are being watched.", "Nothing has happened yet."]


# -- the service page ----------------------------------------------------------------------


def test_the_verified_active_release_is_the_known_good_one() -> None:
    releases = page(detail()).one("section", "releases")
    active = releases.one("dd", "release active")
    assert active.one(cls="release-label").text == "v2"
    assert [b.text for b in active.all(cls="badge")] == ["SUCCESS", "verified good"]
    assert "verified 20s ago" in active.text
    known = releases.one("dd", "release known-good")
    assert known.text.startswith("v2 dep-v2 (the active release) verified 20s ago")
    assert releases.one("dd", "rollback-target").text == "v1 dep-v1 verified 15m ago"
    assert releases.one("dd", "release bad").text == "v0 dep-v0 1h ago: rolled back"


def test_releases_with_nothing_known_yet() -> None:
    bare = railway(active=None, known_good=None, rollback_target=None, bad=[])
    releases = page(detail(railway=bare)).one("section", "releases")
    assert releases.one("dd", "active").text == "unknown (Railway not read yet)"
    assert releases.one("dd", "known-good").text == "none verified yet"
    assert releases.one("dd", "rollback-target").text.startswith("none")
    assert releases.one("dd", "bad").text == "none"
    off = page(detail(railway=None)).one("section", "releases")
    assert off.one(cls="not-on-railway").text.startswith("not on Railway")


def test_guards_cooldown_budget_freeze() -> None:
    guards = railway()["guards"] | {"cooldown_until": NOW + 300, "frozen_until": NOW + 7200}
    frozen = {"reason": "incident 42", "actor": "ana", "at": NOW - 60, "until": NOW + 7200}
    root = page(detail(railway=railway(guards=guards, frozen=frozen)))
    section = root.by_id("guards")
    assert section.one("dd", "cooldown").text == "until 22:20:23 UTC (5m left)"
    assert section.one("dd", "budget-left").text == "2 of 3 left (1 used in the last 24h)"
    assert section.one("dd", "frozen-until").text == "until 2023-11-15 00:15:23 UTC"
    assert root.by_id("frozen").text.startswith("automatic rollback frozen: incident 42")
    idle = page(detail()).by_id("guards")
    assert idle.one("dd", "cooldown").text == "none (15m after each automatic rollback)"
    assert idle.one("dd", "frozen-until").text == "no"


def window(name: str, starts: float, ends: float) -> dict[str, Any]:
    about = {"name": name, "starts_at": starts, "ends_at": ends}
    return about | {"reason": "db upgrade", "zone": "Europe/Paris"}


def test_maintenance_windows_when_the_document_has_them() -> None:
    maintenance = {
        "active": window("nightly", NOW - 60, NOW + 3540),
        "next": window("weekly", NOW + 86400, NOW + 90000),
    }
    root = page(detail(maintenance=maintenance))
    assert root.by_id("maintenance-active").text == (
        "maintenance window nightly open until 23:14:23 UTC (Europe/Paris): automatic rollback "
        "held · db upgrade"
    )
    row = root.by_id("guards").one("dd", "maintenance")
    assert row.text.startswith("open nightly 22:14:23 → 23:14:23 UTC (Europe/Paris): db upgrade")
    assert root.by_id("maintenance-next").text == (
        "next: weekly 2023-11-15 22:15:23 → 2023-11-15 23:15:23 UTC (Europe/Paris): db upgrade"
    )
    quiet = page(detail(maintenance={"active": None, "next": None})).by_id("guards")
    assert quiet.one("dd", "maintenance").text == "none open"
    assert not page(detail()).by_id("guards").all("dd", "maintenance")


def test_rules_show_the_value_and_threshold_in_their_units() -> None:
    root = page(detail())
    row = error_rate_row(root)
    assert row.attrs["data-phase"] == "firing"
    assert row.one("td", "state").text == "firing"
    assert row.one("td", "value").text == "48%"
    assert row.one("td", "threshold").text == "> 5%"
    assert row.one("td", "since").text == "firing for 13s"
    assert row.one(cls="why").text == "error_rate > 5% for 3s"
    memory = root.one("tr", "rule", data_rule="memory-high")
    assert memory.one("td", "value").text == "266 MiB of 512 MiB (52%)"
    assert memory.one("td", "threshold").text == "> 90%"


def test_the_page_says_the_budget_the_digest_and_the_policy() -> None:
    root = page(detail(policy=POLICY | {"delivery": "digest", "next_digest": NOW + 3600}))
    assert root.by_id("railway-budget").text == (
        "Railway API budget: 640 of 1000 requests left this hour (200 kept for rollbacks)"
    )
    assert "next digest 23:15:23 UTC (1h from now)" in root.by_id("guards").text
    assert root.by_id("summary").text.startswith("firing production · automatic rollback")


def test_a_blind_rule_says_why() -> None:
    blind = rule("health", "<", 1.0, [1.0, None], blind=True, phase="pending")
    signals = {"health": {"value": None, "reason": "timed out"}}
    row = page(detail(rules={"health": blind}, signals=signals)).one("tr", "rule")
    assert row.attrs["data-state"] == "blind"
    assert "unknown: timed out" in row.one("td", "name").text


def test_a_service_without_rules() -> None:
    assert page(detail(rules={})).one("article").one(cls="empty").text == "No rules."


# -- the charts ----------------------------------------------------------------------------


def test_chart_has_a_scale_a_threshold_and_breaches() -> None:
    svg = error_rate_row(page(detail())).one("svg", "chart")
    assert svg.one("title").text == ("error_rate over the last 51s; threshold 5%; last value 48%")
    assert svg.one("text", "ymax").text == "52.8%"  # the peak and a tenth
    assert svg.one("text", "ymin").text == "0%"
    assert (svg.one("text", "xmin").text, svg.one("text", "xmax").text) == ("\u221251s", "now")
    assert svg.one("text", "limit").text == "5%"
    assert len(svg.all("line", "threshold")) == 1
    assert len(svg.all("polyline", "series")) == 2  # the unknowns break the line
    assert len(svg.all("circle", "point breach")) == BREACHING
    assert len(svg.all("circle", "point")) == len([v for v in ERRORS if v is not None])
    assert len(svg.all("line", "unknown")) == ERRORS.count(None)


def chart(r: dict[str, Any]) -> Node:
    return page(detail(rules={"r": r})).one("svg", "chart")


def test_points_stay_inside_the_plot() -> None:
    svg = chart(rule("error_rate", ">", 0.05, [0.0, 0.5, 0.2]))
    ys = [float(c.attrs["cy"]) for c in svg.all("circle")]
    xs = [float(c.attrs["cx"]) for c in svg.all("circle")]
    assert min(ys) == pytest.approx(58 - 0.5 / 0.55 * 54, abs=0.1)
    assert max(ys) == 58.0
    assert (min(xs), max(xs)) == (46.0, 296.0)
    # Values far below the threshold: the threshold sets the scale, and its line is inside.
    svg = chart(rule("memory", ">", 0.5, [0.0, 0.1]))
    assert float(svg.one("line", "threshold").attrs["y1"]) == pytest.approx(
        58 - 0.5 / 0.825 * 54, abs=0.1
    )


def test_health_chart_is_zero_to_one_in_words() -> None:
    svg = chart(rule("health", "<", 1.0, [1.0, 0.0, 1.0]))
    assert float(svg.one("line", "threshold").attrs["y1"]) == 4.0
    assert (svg.one("text", "ymax").text, svg.one("text", "ymin").text) == ("healthy", "failing")
    assert not svg.all("text", "limit")  # it would sit on the values
    assert len(svg.all("circle", "point breach")) == 1


@pytest.mark.parametrize(
    ("op", "breaching"),
    [(">", 1), (">=", 2), ("<", 1), ("<=", 2), ("==", 1), ("!=", 2), ("~", 0)],
)
def test_points_are_red_exactly_when_they_breach(op: str, breaching: int) -> None:
    svg = chart(rule("error_rate", op, 0.05, [0.0, 0.05, 0.1]))
    assert len(svg.all("circle", "point breach")) == breaching


@pytest.mark.parametrize("values", [[], [0.2]])
def test_too_few_samples_for_a_chart(values: Sequence[float | None]) -> None:
    svg = chart(rule("error_rate", ">", 0.05, values))
    assert svg.one("text").text == "no samples yet"
    assert not svg.all("polyline")


def test_a_baseline_rule_without_a_baseline() -> None:
    r = rule("latency_p95", ">", 0.5, [0.2, 0.3], baseline_rule=True, limit=None)
    r |= {"threshold_shown": None, "compared": "waiting for a baseline"}
    row = page(detail(rules={"p95": r})).one("tr", "rule")
    assert row.one("td", "threshold").text == "no baseline yet"
    assert "waiting for a baseline" in row.one("td", "name").text
    assert not row.all("line", "threshold")


# -- escaping and options ------------------------------------------------------------------


def test_everything_from_the_documents_is_escaped() -> None:
    evil = "<script>alert(1)</script>"
    rules = {f"r{evil}": rule("error_rate", ">", 0.05, [0.1, 0.2], rule=evil)}
    doc = detail(name=f"web{evil}", rules=rules)
    doc["service"]["railway"]["known_good"]["reason"] = evil
    doc["timeline"][0] |= {"title": evil, "detail": evil}
    source = render_service(doc)
    assert evil not in source
    root = parse(source)
    assert not root.all("script")
    assert root.by_id(f"service-web{evil}")
    assert root.one("tr", "rule").attrs["data-rule"] == f"r{evil}"
    assert root.by_id("timeline").all("td", "title")[0].text == evil
    doc = summary()
    doc["services"][0]["name"] = f'"><img src=x>{evil}'
    source = "".join(render_summary(doc, [summary_row(s) for s in doc["services"]]))
    assert evil not in source
    root = parse(source)
    assert not root.all("img")
    link = root.by_id("services").all("a")[0]
    assert link.attrs["href"] == "/status/" + quote(doc["services"][0]["name"], safe="")


@pytest.mark.parametrize(("refresh", "content"), [({}, "10"), ({"refresh": 30}, "30")])
def test_refresh(refresh: dict[str, Any], content: str) -> None:
    root = page(detail(), **refresh)
    assert root.one("meta", http_equiv="refresh").attrs["content"] == content


def test_no_refresh() -> None:
    root = summary_page(summary(), refresh=None)
    assert not root.all("meta", http_equiv="refresh")
    assert "reloads" not in root.one("header", "page").text


def test_render_does_not_change_its_input() -> None:
    doc = detail()
    before = copy.deepcopy(doc)
    render_service(doc)
    assert doc == before


# -- formatting ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("signal", "value", "detail_", "text"),
    [
        ("health", 1.0, None, "healthy"),
        ("health", 0.0, None, "failing"),
        ("deployment", 0.0, None, "crashing"),
        ("error_rate", 0.05, None, "5%"),
        ("error_rate", 0.4823, None, "48.2%"),
        ("memory", 0.9, None, "90%"),
        ("memory", 0.5, {"usage_bytes": 2**29, "limit_bytes": 2**30}, "512 MiB of 1024 MiB (50%)"),
        ("memory", 0.5, {"usage_bytes": 2**29, "limit_bytes": 0}, "50%"),
        ("latency_p95", 0.25, None, "250ms"),
        ("latency_p95", None, None, "unknown"),
        ("odd", 0.25, None, "0.25"),
    ],
)
def test_values_in_the_units_rules_are_written_in(
    signal: str, value: float | None, detail_: dict[str, Any] | None, text: str
) -> None:
    assert shown(signal, value, detail_) == text


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0.0, "0s"), (0.4, "0s"), (-5.0, "0s"), (12.3, "12s"), (90.0, "1m30s"), ("x", "?")],
)
def test_durations(seconds: Any, text: str) -> None:
    assert duration(seconds) == text


@pytest.mark.parametrize(
    ("p", "text"),
    [
        (POLICY, "automatic rollback · critical · alerts immediately"),
        ({"delivery": "digest", "severity": "warning"}, "watch only · warning · daily digest"),
        ({"delivery": "hourly"}, "watch only · hourly"),  # a newer daemon's: said as it is
        ({}, "watch only"),
    ],
)
def test_policy_in_words(p: dict[str, Any], text: str) -> None:
    assert policy(p) == text


def test_summary_line() -> None:
    assert summary_line({"counts": {"services": 0}}) == "0 services"
    one = {"counts": {"services": 1, "by_state": {"ok": 1}}}
    assert summary_line(one) == "1 service · all clear"


def test_a_health_rule_reads_in_words() -> None:
    row = page(detail(rules={"health-failing": rule("health", "<", 1.0, [1.0, 0.0])})).one(
        "tr", "rule"
    )
    assert row.one("td", "threshold").text == "failing"
    assert row.one(cls="why").text == "health failing for 3s"


def test_a_share_is_not_drawn_above_100_percent() -> None:
    svg = chart(rule("memory", ">", 0.9, [0.2, 0.3]))
    assert svg.one("text", "ymax").text == "100%"
    # Its threshold is near the top: the label goes under the line, not off the chart.
    line = float(svg.one("line", "threshold").attrs["y1"])
    assert float(svg.one("text", "limit").attrs["y"]) == pytest.approx(line + 10)


def test_odd_values_in_a_document_are_said_not_fatal() -> None:
    from monitor.statuspage import ago, clock, moment, show, window

    assert str(moment(None)) == str(ago("soon", NOW)) == "at an unknown time"
    assert str(clock(None, NOW)) == str(window("nightly", NOW)) == "—"
    bare = window({"name": "w", "starts_at": NOW, "ends_at": NOW + 60}, NOW)
    assert parse_fragment(str(bare)) == "w 22:15:23 → 22:16:23 UTC"
    assert show("odd", 0.25) == "0.25"


def parse_fragment(html: str) -> str:
    return parse(f"<!DOCTYPE html><p>{html}</p>").one("p").text
