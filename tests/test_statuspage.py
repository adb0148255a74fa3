"""The HTML status page, read back with the stdlib's HTML parser as a browser would see it."""

from __future__ import annotations

import copy
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from html.parser import HTMLParser
from typing import Any

import pytest

from monitor.statuspage import _duration, _policy, _summary, _value, render

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
    return parse(render(document, **options))


# -- the sample document -------------------------------------------------------------------


def history(values: Sequence[float | None], end: float = NOW - 0.5) -> list[list[float | None]]:
    """One sample a second, the last at ``end``."""
    start = end - len(values) + 1
    return [[start + i, v] for i, v in enumerate(values)]


def rule(
    signal: str, op: str, threshold: float, values: Sequence[float | None], **state: Any
) -> dict[str, Any]:
    """A rule's state as the daemon reports it, inactive unless ``state`` says otherwise."""
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
    }
    return fields | state


ERRORS: list[float | None] = [0.01] * 40 + [None] * 3 + [0.0] * 5 + [0.3, 0.41, 0.45, 0.48]
BREACHING = 4  # the values above 0.05 in ERRORS
POLICIES = {
    "production": {"auto_rollback": True, "severity": "critical", "delivery": "immediate"},
    "staging": {"auto_rollback": True, "severity": "warning", "delivery": "digest"},
    "preview": {"auto_rollback": False, "severity": "info", "delivery": "off"},
}


def service(name: str, tier: str, rules: dict[str, Any], rail: Any = None) -> dict[str, Any]:
    """A service as its worker reports it: one tick a second, 120 so far."""
    policy = POLICIES.get(tier, POLICIES["preview"])
    about = {"name": name, "tier": tier, "interval": 1.0, "ticks": 120, "policy": policy}
    return about | {"signals": {}, "rules": rules, "railway": rail}


def railway(active: str, good: str, **extra: Any) -> dict[str, Any]:
    """Railway's view: ``active`` live for 30s, ``good`` verified 100s ago."""
    deployed = {"id": f"dep-{active}", "release": active, "status": "SUCCESS"}
    verified = {"id": f"dep-{good}", "release": good, "verified_at": NOW - 100}
    return {
        "active": deployed | {"created_at": NOW - 40, "live_at": NOW - 30},
        "known_good": verified | {"reason": "served 10s with every rule inactive (bake 10s)"},
        "frozen": None,
        "rollback": None,
    } | extra


def health(values: Sequence[float | None], **state: Any) -> dict[str, Any]:
    return rule("health", "<", 1.0, values, **state)


def document() -> dict[str, Any]:
    """Three tiers (listed out of order), a firing rule, a rollback, a frozen service."""
    rollback = {"id": 3, "state": "deploying", "from": "dep-v2", "to": "dep-v1"}
    rollback |= {"from_release": "v2", "to_release": "v1", "rule": "error-rate"}
    firing = rule("error_rate", ">", 0.05, ERRORS, phase="firing", since=NOW - 13)
    web = service(
        "web-production",
        "production",
        {"error-rate": firing, "health": health([1.0] * 60)},
        railway("v2", "v1", rollback=rollback | {"decided_at": NOW - 12}),
    )
    frozen = {"reason": "loop breaker", "actor": "auto", "at": NOW - 300, "until": None}
    api = service(
        "api-production",
        "production",
        {"health": health([1.0] * 60)},
        railway("v8", "v7", frozen=frozen),
    )
    growing = [0.6 + i / 100 for i in range(35)]
    pending = rule("memory", ">", 0.9, growing, phase="pending", since=NOW - 4)
    staging = service("web-staging", "staging", {"memory": pending}, railway("v3", "v2"))
    blind = health([1.0] * 20 + [None] * 10, blind=True)
    preview = service("web-pr-42", "preview", {"health": blind})
    timed_out = {"signal": "health", "at": NOW - 0.5, "value": None, "reason": "timed out"}
    preview["signals"] = {"health": timed_out}
    return {
        "version": "0.1.0",
        "generated_at": NOW,
        "services": [staging, web, preview, api],
        "timeline": [
            event(NOW - 3, "rollback_succeeded", "ok", "rollback #2 succeeded: v5 → v4"),
            event(NOW - 12, "rollback_started", "warning", "rollback #3 started: v2 → v1"),
            event(NOW - 13, "rule_firing", "critical", "error-rate firing"),
            event(NOW - 100, "deployment_verified", "info", "v1 known-good"),
        ],
    }


def event(at: float, kind: str, level: str, title: str, **extra: Any) -> dict[str, Any]:
    """A timeline entry about web-production."""
    about = {"service": "web-production", "tier": "production", "detail": "by rule error-rate"}
    return {"at": at, "kind": kind, "level": level, "title": title} | about | extra


@pytest.fixture
def doc() -> dict[str, Any]:
    return document()


def find(document: dict[str, Any], name: str) -> dict[str, Any]:
    """The service called ``name`` in ``document`` (to change it before rendering)."""
    return next(s for s in document["services"] if s["name"] == name)


def error_rate_row(root: Node) -> Node:
    return root.by_id("service-web-production").one("tr", "rule", data_rule="error-rate")


# -- the page ------------------------------------------------------------------------------


def test_a_complete_page_with_nothing_fetched_and_nothing_run(doc: dict[str, Any]) -> None:
    root = page(doc)
    assert root.one("html").attrs["lang"] == "en"
    assert root.one("meta", charset="utf-8")
    assert root.one("style")
    assert not root.all("script")
    assert not [n for n in root.iter() if "src" in n.attrs or "href" in n.attrs]
    assert root.one("head").one("title").text.startswith("railguard · 4 services · 1 firing")


def test_header_names_version_time_and_what_is_wrong(doc: dict[str, Any]) -> None:
    header = page(doc).one("header", "page")
    assert header.one(cls="version").text == "0.1.0"
    assert header.one("time").text == "2023-11-14 22:15:23Z"
    assert header.one("time").attrs["datetime"] == "2023-11-14T22:15:23Z"
    assert header.by_id("summary").text == (
        "4 services · 1 firing · 1 pending · 1 blind · 1 rollback in progress · 1 frozen"
    )
    assert "reloads every 10s" in header.text


def test_tiers_in_order_with_their_policies_in_words(doc: dict[str, Any]) -> None:
    tiers = page(doc).all("section", "tier")
    assert [t.attrs["id"] for t in tiers] == ["tier-production", "tier-staging", "tier-preview"]
    assert [t.one(cls="policy").text for t in tiers] == [
        "automatic rollback · critical · alerts immediately",
        "automatic rollback · warning · daily digest",
        "watch only · info · no alerts",
    ]
    assert [s.attrs["id"] for s in tiers[0].all("article", "service")] == [
        "service-web-production",
        "service-api-production",
    ]


def test_other_tiers_follow_in_order_of_first_appearance() -> None:
    services = [
        service(n, t, {})
        for n, t in [("a", "canary"), ("b", "staging"), ("c", "batch"), ("d", "production")]
    ]
    services.append(service("e", "", {}))
    root = page({"generated_at": NOW, "services": services})
    assert [t.attrs["id"] for t in root.all("section", "tier")] == [
        "tier-production",
        "tier-staging",
        "tier-canary",
        "tier-batch",
        "tier-untiered",
    ]


def test_a_tier_whose_services_disagree_shows_each_policy() -> None:
    quiet = service("b", "production", {}) | {"policy": POLICIES["preview"]}
    root = page({"generated_at": NOW, "services": [service("a", "production", {}), quiet]})
    assert root.one(cls="policy").text == (
        "automatic rollback · critical · alerts immediately | watch only · info · no alerts"
    )


@pytest.mark.parametrize(
    ("name", "active", "good"),
    [("web-production", "v2", "v1"), ("api-production", "v8", "v7"), ("web-staging", "v3", "v2")],
)
def test_each_card_shows_active_and_known_good_release(
    doc: dict[str, Any], name: str, active: str, good: str
) -> None:
    card = page(doc).by_id(f"service-{name}")
    assert card.one(cls="release active").one(cls="label").text == active
    assert card.one(cls="release active").one("code").text == f"dep-{active}"
    assert card.one(cls="release known-good").one(cls="label").text == good
    assert "verified 1m40s ago" in card.one(cls="release known-good").text
    assert "since 30s ago" in card.one(cls="release active").text


def test_releases_without_labels_or_without_deployments(doc: dict[str, Any]) -> None:
    rail = find(doc, "web-production")["railway"]
    rail["active"] |= {"release": None, "status": "DEPLOYING", "live_at": None}
    rail["known_good"] = None
    card = page(doc).by_id("service-web-production")
    active = card.one(cls="release active")
    assert active.one(cls="label").text == "dep-v2"
    assert active.one(cls="badge pending").text == "DEPLOYING"
    assert "since 40s ago" in active.text  # not live yet: since it was created
    assert card.one(cls="release known-good none").text == "known good none verified yet"

    rail["active"] = None
    rail["known_good"] = {"id": "dep-v1", "release": "v1", "verified_at": None}
    card = page(doc).by_id("service-web-production")
    assert card.one(cls="release active none").text == "active unknown"
    assert "verified at an unknown time" in card.one(cls="release known-good").text
    assert not card.one(cls="release known-good").all(cls="why")


@pytest.mark.parametrize(
    ("status", "tone"),
    [("SUCCESS", "ok"), ("FAILED", "firing"), ("CRASHED", "firing"), ("BUILDING", "pending")],
)
def test_deployment_status_badge_tone(doc: dict[str, Any], status: str, tone: str) -> None:
    find(doc, "web-production")["railway"]["active"]["status"] = status
    active = page(doc).by_id("service-web-production").one(cls="release active")
    assert active.one(cls=f"badge {tone}").text == status


def test_service_not_on_railway_is_watched_only(doc: dict[str, Any]) -> None:
    card = page(doc).by_id("service-web-pr-42")
    assert card.one(cls="not-on-railway").text == "not on Railway: watched only"
    assert not card.all(cls="release")


def test_frozen_service_has_a_badge_and_the_reason(doc: dict[str, Any]) -> None:
    card = page(doc).by_id("service-api-production")
    assert card.one("header").one(cls="badge frozen").text == "frozen"
    assert card.one(cls="frozen-reason").text == (
        "automatic rollback frozen: loop breaker (by auto, 5m ago)"
    )
    assert not page(doc).by_id("service-web-production").all(cls="frozen")


def test_frozen_until_a_time_by_nobody_in_particular(doc: dict[str, Any]) -> None:
    find(doc, "api-production")["railway"]["frozen"] = {
        "reason": "deploy freeze",
        "until": NOW + 3600,
    }
    reason = page(doc).by_id("service-api-production").one(cls="frozen-reason")
    assert reason.text == (
        "automatic rollback frozen: deploy freeze (at an unknown time until 23:15:23 UTC)"
    )


def test_unfinished_rollback_is_spelled_out(doc: dict[str, Any]) -> None:
    rollback = page(doc).by_id("service-web-production").one(cls="rollback")
    assert rollback.one("strong").text == "rollback #3 deploying: v2 → v1"
    assert "rule error-rate, decided 12s ago" in rollback.text


def test_rollback_without_labels_names_deployments(doc: dict[str, Any]) -> None:
    rail = find(doc, "web-production")["railway"]
    rail["rollback"] |= {"from_release": None, "to_release": None, "rule": None}
    rollback = page(doc).by_id("service-web-production").one(cls="rollback")
    assert rollback.one("strong").text == "rollback #3 deploying: dep-v2 → dep-v1"
    assert "rule" not in rollback.text


# -- rules ---------------------------------------------------------------------------------


def test_firing_rule_row(doc: dict[str, Any]) -> None:
    row = error_rate_row(page(doc))
    assert row.attrs["data-phase"] == "firing"
    assert row.one(cls="badge firing").text == "firing"
    assert row.one("td", "condition").text == "error_rate > 0.05 for 3s"
    assert row.one("td", "since").text == "firing for 13s"
    assert page(doc).by_id("service-web-production").attrs["data-state"] == "firing"


def test_pending_and_inactive_rows(doc: dict[str, Any]) -> None:
    root = page(doc)
    staging = root.by_id("service-web-staging")
    assert staging.one("tr", "rule").attrs["data-phase"] == "pending"
    assert staging.one(cls="badge pending").text == "pending"
    assert staging.one("td", "since").text == "pending for 4s"
    assert staging.attrs["data-state"] == "pending"
    api = root.by_id("service-api-production")
    assert api.one("tr", "rule").one(cls="badge ok").text == "ok"
    assert api.one("td", "since").text == "—"
    assert api.attrs["data-state"] == "ok"


@pytest.mark.parametrize("phase", ["inactive", "pending", "firing"])
def test_a_blind_rule_shows_blind_whatever_its_phase(doc: dict[str, Any], phase: str) -> None:
    find(doc, "web-pr-42")["rules"]["health"] |= {"phase": phase, "since": NOW - 61}
    card = page(doc).by_id("service-web-pr-42")
    row = card.one("tr", "rule", data_rule="health")
    assert row.attrs["data-phase"] == phase
    assert row.one(cls="badge").text == "blind"
    assert row.one(cls="badge").classes == {"badge", "blind"}
    assert row.one("td", "since").text.endswith("for 1m1s")
    assert row.one(cls="why").text == "unknown: timed out"
    assert card.attrs["data-state"] == "blind"


def test_a_service_without_rules(doc: dict[str, Any]) -> None:
    find(doc, "web-pr-42").update(rules={}, interval=None)
    card = page(doc).by_id("service-web-pr-42")
    assert card.one(cls="empty").text == "No rules."
    assert card.one(cls="meta").text == "120 ticks"
    assert page(doc).by_id("service-web-production").one(cls="meta").text == "every 1s · 120 ticks"


# -- charts --------------------------------------------------------------------------------


def test_chart_draws_values_threshold_and_unknowns(doc: dict[str, Any]) -> None:
    svg = error_rate_row(page(doc)).one("svg", "chart")
    assert svg.attrs["width"] == "220"
    assert svg.attrs["height"] == "48"
    assert svg.one("title").text == ("error_rate over the last 51s; threshold 5%; last value 48%")
    assert len(svg.all("line", "threshold")) == 1
    assert len(svg.all("polyline", "series")) == 2  # the unknowns break the line
    assert len(svg.all("circle", "point breach")) == BREACHING
    assert len(svg.all("circle", "point")) == len([v for v in ERRORS if v is not None])
    assert len(svg.all("line", "unknown")) == ERRORS.count(None)


def test_chart_points_stay_inside_and_threshold_sits_on_the_scale() -> None:
    # Values peak at 0.5, so the top of the scale is 0.55 and every point fits.
    svg = chart(one_rule("error_rate", ">", 0.05, [0.0, 0.5, 0.2]))
    ys = [float(c.attrs["cy"]) for c in svg.all("circle")]
    xs = [float(c.attrs["cx"]) for c in svg.all("circle")]
    assert min(ys) == pytest.approx(44 - 0.5 / 0.55 * 40, abs=0.05)  # 4px margins
    assert max(ys) == pytest.approx(44.0)
    assert (min(xs), max(xs)) == (4.0, 216.0)
    # Values far below it: the threshold (times two) sets the scale instead.
    svg = chart(one_rule("memory", ">", 0.5, [0.0, 0.1]))
    threshold = svg.one("line", "threshold")
    assert float(threshold.attrs["y1"]) == pytest.approx(44 - 0.5 / 1.1 * 40, abs=0.05)


def test_health_chart_scale_is_zero_to_one() -> None:
    svg = chart(one_rule("health", "<", 1.0, [1.0, 0.0, 1.0]))
    assert float(svg.one("line", "threshold").attrs["y1"]) == pytest.approx(4.0)
    assert len(svg.all("circle", "point breach")) == 1
    assert svg.one("title").text == (
        "health over the last 2s; threshold healthy; last value healthy"
    )


def test_all_zero_history_still_has_a_scale() -> None:
    svg = chart(one_rule("error_rate", ">", 0.0, [0.0, 0.0]))
    assert {c.attrs["cy"] for c in svg.all("circle")} == {"44.0"}


@pytest.mark.parametrize(
    ("op", "breaching"),
    [(">", 1), (">=", 2), ("<", 1), ("<=", 2), ("==", 1), ("!=", 2), ("~", 0)],
)
def test_points_are_red_exactly_when_they_breach(op: str, breaching: int) -> None:
    svg = chart(one_rule("error_rate", op, 0.05, [0.0, 0.05, 0.1]))
    assert len(svg.all("circle", "point breach")) == breaching
    assert len(svg.all("circle", "point")) == 3


@pytest.mark.parametrize(
    ("values", "polylines", "points"),
    [
        ([0.1, None, 0.2, 0.1], 1, 3),  # a lone point before the gap is a dot, not a line
        ([None, None], 0, 0),
        ([0.1, 0.1, None, 0.1, 0.1, None, 0.1, 0.1], 3, 6),
    ],
)
def test_unknown_samples_break_the_line(
    values: Sequence[float | None], polylines: int, points: int
) -> None:
    svg = chart(one_rule("error_rate", ">", 0.05, values))
    assert len(svg.all("polyline")) == polylines
    assert len(svg.all("circle")) == points
    last = "unknown" if values[-1] is None else "10%"
    assert svg.one("title").text.endswith(f"last value {last}")


@pytest.mark.parametrize("values", [[], [0.2]])
def test_too_few_samples_for_a_chart(values: Sequence[float | None]) -> None:
    svg = chart(one_rule("error_rate", ">", 0.05, values))
    assert svg.one("text").text == "no samples yet"
    assert not svg.all("polyline")


def chart(document: dict[str, Any]) -> Node:
    """The page's only chart."""
    return page(document).one("svg", "chart")


def one_rule(
    signal: str, op: str, threshold: float, values: Sequence[float | None]
) -> dict[str, Any]:
    """A document with one service and one rule (parse it and look at the chart)."""
    rules = {"r": rule(signal, op, threshold, values)}
    return {"generated_at": NOW, "services": [service("svc", "production", rules)]}


# -- the timeline --------------------------------------------------------------------------


def test_timeline_rows_in_document_order(doc: dict[str, Any]) -> None:
    rows = page(doc).by_id("timeline").all("tr", "event")
    assert [r.attrs["data-kind"] for r in rows] == [
        "rollback_succeeded",
        "rollback_started",
        "rule_firing",
        "deployment_verified",
    ]
    assert [r.one("td", "title").text for r in rows] == [e["title"] for e in doc["timeline"]]
    assert [r.classes - {"event"} for r in rows] == [{"ok"}, {"warning"}, {"critical"}, {"info"}]
    first = rows[0]
    assert first.one("td", "time").text == "22:15:20"
    assert first.one("td", "tier").text == "production"
    assert first.one("td", "service").text == "web-production"
    assert first.one("td", "detail").text == "by rule error-rate"


def test_timeline_dates_other_days_and_fills_gaps(doc: dict[str, Any]) -> None:
    doc["timeline"] = [
        event(NOW - 86400, "frozen", "loud", "automatic rollback frozen", tier=None, service=None)
    ]
    row = page(doc).by_id("timeline").one("tr", "event")
    assert row.one("td", "time").text == "2023-11-13 22:15:23"
    assert row.one("td", "tier").text == row.one("td", "service").text == "—"
    assert row.attrs["data-level"] == "info"  # an unknown level is shown as information


def test_empty_document() -> None:
    root = page({"version": "0.1.0", "generated_at": NOW, "services": [], "timeline": []})
    assert root.by_id("summary").text == "0 services"
    assert not root.all("section", "tier")
    assert not root.all(id="timeline")
    texts = [n.text for n in root.all("p", "empty")]
    assert texts == ["No services are being watched.", "Nothing has happened yet."]


# -- escaping and options ------------------------------------------------------------------


def test_everything_from_the_document_is_escaped(doc: dict[str, Any]) -> None:
    evil = "<script>alert(1)</script>"
    web = find(doc, "web-production")
    web["name"] = f"web{evil}"
    web["rules"] = {f"r{evil}": web["rules"]["error-rate"] | {"rule": evil}}
    web["railway"]["known_good"]["reason"] = evil
    find(doc, "api-production")["railway"]["frozen"]["reason"] = (
        f'"><img src=x onerror=alert(1)>{evil}'
    )
    doc["timeline"][0] |= {"title": evil, "detail": evil}
    source = render(doc)
    assert evil not in source
    root = parse(source)
    assert not root.all("script")
    assert not root.all("img")
    card = root.by_id(f"service-web{evil}")
    assert card.one("h3").text == f"web{evil}"
    assert card.one("tr", "rule").attrs["data-rule"] == f"r{evil}"
    assert card.one("td", "condition").text == evil
    assert card.one(cls="why").text == evil
    assert root.by_id("timeline").all("td", "title")[0].text == evil


@pytest.mark.parametrize(("refresh", "content"), [({}, "10"), ({"refresh": 30}, "30")])
def test_refresh(doc: dict[str, Any], refresh: dict[str, Any], content: str) -> None:
    root = page(doc, **refresh)
    assert root.one("meta", http_equiv="refresh").attrs["content"] == content


def test_no_refresh(doc: dict[str, Any]) -> None:
    root = page(doc, refresh=None)
    assert not root.all("meta", http_equiv="refresh")
    assert "reloads" not in root.one("header", "page").text


def test_render_does_not_change_its_input(doc: dict[str, Any]) -> None:
    before = copy.deepcopy(doc)
    render(doc)
    assert doc == before


# -- formatting ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("signal", "value", "text"),
    [
        ("health", 1.0, "healthy"),
        ("health", 0.0, "failing"),
        ("health", 0.5, "0.5"),
        ("deployment", 1.0, "running"),
        ("deployment", 0.0, "crashing"),
        ("error_rate", 0.05, "5%"),
        ("error_rate", 0.482, "48.2%"),
        ("error_rate", 0.4823, "48.2%"),
        ("error_rate", 0.0, "0%"),
        ("error_rate", 1.0, "100%"),
        ("memory", 0.9, "90%"),
        ("memory", 1.25, "125%"),
        ("latency", 0.25, "0.25"),
    ],
)
def test_values_as_people_read_them(signal: str, value: float, text: str) -> None:
    assert _value(signal, value) == text


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0.0, "0s"),
        (0.4, "0s"),
        (-5.0, "0s"),  # a clock a little ahead: never "in -5s"
        (1.0, "1s"),
        (12.3, "12s"),
        (60.0, "1m"),
        (90.0, "1m30s"),
        (3725.0, "1h2m5s"),
    ],
)
def test_durations(seconds: float, text: str) -> None:
    assert _duration(seconds) == text


@pytest.mark.parametrize(
    ("policy", "text"),
    [
        (POLICIES["production"], "automatic rollback · critical · alerts immediately"),
        (POLICIES["staging"], "automatic rollback · warning · daily digest"),
        (POLICIES["preview"], "watch only · info · no alerts"),
        ({"delivery": "hourly"}, "watch only · hourly"),  # a newer daemon's: said as it is
        ({}, "watch only"),
    ],
)
def test_policy_in_words(policy: dict[str, Any], text: str) -> None:
    assert _policy(policy) == text


@pytest.mark.parametrize(
    ("services", "text"),
    [
        ([], "0 services"),
        ([service("a", "production", {})], "1 service · all clear"),
        (
            [
                service("a", "production", {"r": {"phase": "firing"}, "s": {"phase": "firing"}}),
                service("b", "staging", {}, railway("v2", "v1", rollback={"id": 1})),
                service("c", "staging", {}, railway("v2", "v1", rollback={"id": 2})),
            ],
            "3 services · 2 firing · 2 rollbacks in progress",
        ),
    ],
)
def test_summary(services: list[dict[str, Any]], text: str) -> None:
    assert _summary(services) == text
