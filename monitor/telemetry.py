"""Prometheus metrics (an own CollectorRegistry, passed in) and structlog setup.

The metrics are :mod:`monitor.series` families: the same names, types, help and labels as
prometheus_client's Counter, Gauge, Histogram and Info would give, registered on the
registry like them, but cheap to scrape at thousands of services (:meth:`Metrics.exposition`).
"""

from __future__ import annotations

import logging
import sys
from typing import Any, Literal, TextIO

import structlog
from aiohttp.http_exceptions import HttpProcessingError
from prometheus_client import CollectorRegistry, disable_created_metrics

from monitor import __version__
from monitor.series import Counter, Family, Gauge, Histogram, Info, render

# Probes answer in milliseconds when healthy and in seconds when not.
PROBE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
LAG_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0)
DEPLOY_BUCKETS = (10.0, 30.0, 60.0, 90.0, 120.0, 180.0, 300.0, 600.0, 1200.0)


class Metrics:
    """Every metric railguard exports, registered on one registry."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        # `_created` series double the exposition and nobody alerts on them (railguard's own
        # families have none; this keeps them off prometheus_client's, e.g. the sample app's).
        disable_created_metrics()  # type: ignore[no-untyped-call]
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        r = self.registry
        service = ["service", "tier"]
        self.info = Info("railguard_build", "railguard's version.", registry=r)
        self.info.info({"version": __version__})
        # Per tier, not per service: a histogram per service is 15 series each, and at a
        # thousand services rendering /metrics would cost more than probing.
        self.probe_duration = Histogram(
            "railguard_probe_duration_seconds",
            "Time taken by a source to take its samples.",
            ["tier", "source"],
            buckets=PROBE_BUCKETS,
            registry=r,
        )
        self.probes = Counter(
            "railguard_probes_total",
            "Samples taken, by outcome (healthy, failing, breaching, ok, unknown).",
            [*service, "signal", "outcome"],
            registry=r,
        )
        self.signal_value = Gauge(
            "railguard_signal_value",
            "Latest value of each signal (NaN while UNKNOWN).",
            [*service, "signal"],
            registry=r,
        )
        self.rule_state = Gauge(
            "railguard_rule_state",
            "Each rule's state: 0 inactive, 1 pending, 2 firing.",
            [*service, "rule"],
            registry=r,
        )
        self.rule_blind = Gauge(
            "railguard_rule_blind",
            "1 while a rule has had no known sample for longer than its max_gap.",
            [*service, "rule"],
            registry=r,
        )
        self.rule_transitions = Counter(
            "railguard_rule_transitions_total",
            "Rule transitions (pending, firing, resolved, reset, blind, sight_restored).",
            [*service, "rule", "transition"],
            registry=r,
        )
        self.tick_errors = Counter(
            "railguard_tick_errors_total",
            "Ticks that failed with an unexpected error, by exception type.",
            [*service, "error"],
            registry=r,
        )
        self.ticks_skipped = Counter(
            "railguard_ticks_skipped_total",
            "Ticks skipped because the previous one overran the interval.",
            service,
            registry=r,
        )
        self.scheduler_lag = Histogram(
            "railguard_scheduler_lag_seconds",
            "How late each tick started compared with its schedule.",
            buckets=LAG_BUCKETS,
            registry=r,
        )
        self.source_unknown = Counter(
            "railguard_source_unknown_total",
            "Samples a source could not take (UNKNOWN), by source.",
            [*service, "source"],
            registry=r,
        )
        self.railway_requests = Counter(
            "railguard_railway_requests_total",
            "Requests to Railway's API by operation and outcome (ok, graphql_error, "
            "auth_error, rate_limited, server_error, network_error).",
            ["operation", "outcome"],
            registry=r,
        )
        self.railway_request_duration = Histogram(
            "railguard_railway_request_duration_seconds",
            "Time taken by one request to Railway's API (each attempt).",
            ["operation"],
            buckets=PROBE_BUCKETS,
            registry=r,
        )
        self.railway_budget_remaining = Gauge(
            "railguard_railway_budget_remaining",
            "Requests left in the hourly budget (railguard's own count, corrected by "
            "Railway's X-RateLimit-Remaining).",
            registry=r,
        )
        self.railway_budget_reserve = Gauge(
            "railguard_railway_budget_reserve",
            "Requests of the hourly budget kept for rollback and verification.",
            registry=r,
        )
        self.railway_polling_slowed = Gauge(
            "railguard_railway_polling_slowed",
            "1 while routine polling waits for budget instead of running on schedule.",
            registry=r,
        )
        self.railway_budget_waits = Counter(
            "railguard_railway_budget_waits_total",
            "Times a request waited for budget, by priority (routine, critical).",
            ["priority"],
            registry=r,
        )
        self.deployment_duration = Histogram(
            "railguard_deployment_duration_seconds",
            "Deployment time: created to SUCCESS (target under 5 minutes).",
            service,
            buckets=DEPLOY_BUCKETS,
            registry=r,
        )
        self.rollbacks = Counter(
            "railguard_rollbacks_total",
            "Rollbacks by trigger (auto, manual) and outcome (succeeded, failed, dry_run, "
            "abandoned).",
            [*service, "trigger", "outcome"],
            registry=r,
        )
        self.rollback_held = Counter(
            "railguard_rollback_held_total",
            "Automatic rollbacks a guard held back, by guard.",
            [*service, "guard"],
            registry=r,
        )
        self.rollback_duration = Histogram(
            "railguard_rollback_duration_seconds",
            "Rollback time: decision to the replacement serving healthily (target under 2m); "
            "rebuilds are in railguard_rebuild_duration_seconds.",
            service,
            buckets=DEPLOY_BUCKETS,
            registry=r,
        )
        self.rebuild_duration = Histogram(
            "railguard_rebuild_duration_seconds",
            "Deploy time of a rebuild (no rollback image was left): its deployment created to "
            "SUCCESS (goal under 5 minutes).",
            service,
            buckets=DEPLOY_BUCKETS,
            registry=r,
        )
        self.rollback_decision = Histogram(
            "railguard_rollback_decision_seconds",
            "From a rule firing to the rollback mutation being sent, less Railway's latency.",
            buckets=LAG_BUCKETS,
            registry=r,
        )
        self.frozen = Gauge(
            "railguard_frozen", "1 while automatic rollback is frozen.", service, registry=r
        )
        self.known_good = Gauge(
            "railguard_known_good_releases",
            "Known-good releases railguard could roll back to.",
            service,
            registry=r,
        )
        self.alerts_queued = Counter(
            "railguard_alerts_queued_total",
            "Notifications queued, by channel.",
            ["channel"],
            registry=r,
        )
        self.alerts_sent = Counter(
            "railguard_alerts_sent_total",
            "Notifications delivered, by channel.",
            ["channel"],
            registry=r,
        )
        self.alerts_retried = Counter(
            "railguard_alerts_retried_total",
            "Delivery attempts that failed and will be retried, by channel.",
            ["channel"],
            registry=r,
        )
        self.alerts_failed = Counter(
            "railguard_alerts_failed_total",
            "Notifications given up (the channel refused them for good), by channel.",
            ["channel"],
            registry=r,
        )
        self.outbox_pending = Gauge(
            "railguard_outbox_pending",
            "Notifications waiting in the outbox, by channel.",
            ["channel"],
            registry=r,
        )
        self.alerts_suppressed = Counter(
            "railguard_alerts_suppressed_total",
            "Events not sent at once, by tier and why (off, digest, held, duplicate).",
            ["tier", "reason"],
            registry=r,
        )
        self.services = Gauge(
            "railguard_services", "Services being guarded, by tier.", ["tier"], registry=r
        )
        self.probes_in_flight = Gauge(
            "railguard_probes_in_flight", "Probes running right now.", registry=r
        )
        self.up = Gauge(
            "railguard_up", "1 while the scheduler runs, 0 while shutting down.", registry=r
        )
        self.task_restarts = Counter(
            "railguard_task_restarts_total",
            "Long-running loops restarted by the supervisor after an error or an exit.",
            ["task"],
            registry=r,
        )
        # High availability (DATABASE_URL): which replica leads, under which epoch.
        self.leader = Gauge(
            "railguard_leader", "1 while this replica leads (acts), 0 on a standby.", registry=r
        )
        self.lease_epoch = Gauge(
            "railguard_lease_epoch",
            "The lease epoch this replica leads under (0: none).",
            registry=r,
        )
        self.leader_takeovers = Counter(
            "railguard_leader_takeovers_total", "Times this replica became the leader.", registry=r
        )
        self.lease_look_failures = Counter(
            "railguard_lease_look_failures_total",
            "Looks at the lease that PostgreSQL did not answer.",
            registry=r,
        )
        self.not_leader = Counter(
            "railguard_not_leader_total",
            "Writes the store refused because this replica no longer held the lease.",
            ["task"],
            registry=r,
        )
        self.families: tuple[Family[Any], ...] = tuple(
            v for v in vars(self).values() if isinstance(v, Family)
        )

    def forget_service(self, name: str) -> int:
        """Remove every series labelled ``service=name`` (a service no longer guarded);
        returns how many."""
        return sum(family.forget("service", name) for family in self.families)

    async def exposition(self) -> bytes:
        """Every family in the text format, rendered on the loop in slices of a few
        milliseconds (a thread would hold the GIL for the whole of it)."""
        return await render(self.families)


LogFormat = Literal["auto", "json", "console"]


def configure_logging(
    fmt: LogFormat = "auto", level: str = "info", stream: TextIO | None = None
) -> None:
    """JSON lines for machines; key=value on a terminal (``auto`` picks by isatty)."""
    stream = stream if stream is not None else sys.stderr
    if fmt == "auto":
        fmt = "console" if stream.isatty() else "json"
    renderer: structlog.typing.Processor
    if fmt == "json":
        renderer = structlog.processors.JSONRenderer()
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=stream.isatty())
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        logger_factory=structlog.PrintLoggerFactory(stream),
        cache_logger_on_first_use=False,
    )
    root = logging.getLogger()
    for handler in [h for h in root.handlers if isinstance(h, LibraryLogs)]:
        root.removeHandler(handler)
    root.addHandler(LibraryLogs())
    root.setLevel(logging.WARNING)


_LEVELS = (logging.DEBUG, logging.INFO, logging.WARNING, logging.ERROR, logging.CRITICAL)


class LibraryLogs(logging.Handler):
    """What libraries log through the standard library (aiohttp, asyncio) as railguard's own
    lines, in the same format. A request aiohttp's parser refused (a request line over 8 KB,
    a NUL in a header: answered 400 before any railguard code runs) is the client's doing:
    one warning naming it, not a traceback."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            error = record.exc_info[1] if record.exc_info else None
            fields: dict[str, Any] = {"logger": record.name}
            try:
                event = record.getMessage()
            except Exception:  # its arguments do not fit its message: both, as they are
                event = f"{record.msg!s} {record.args!r}"
            # structlog knows the standard levels only: a library's own is the one below it.
            level = max((n for n in _LEVELS if n <= record.levelno), default=logging.DEBUG)
            if isinstance(error, HttpProcessingError) and 400 <= (error.code or 400) < 500:
                event, level = "bad HTTP request refused", logging.WARNING
                # Its first line only: the next ones quote the refused bytes, which may be
                # an Authorization or Cookie header's secret.
                reason = str(error.message).strip().splitlines()[:1] or [type(error).__name__]
                fields.update(status=error.code or 400, error=reason[0].rstrip(":")[:200])
            elif record.exc_info:
                fields["exc_info"] = record.exc_info
            structlog.get_logger("railguard.library").log(level, event, **fields)
        except Exception:  # a log line must never take anything down
            self.handleError(record)
