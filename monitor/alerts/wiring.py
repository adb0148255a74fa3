"""Alerting started by the daemon: the channels, the outbox that feeds them, the router and
the digest, each loop under the supervisor (apart from daemon.py, which keeps the lifecycle).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from monitor.daemon import Daemon
    from monitor.store import Store


async def start_alerts(daemon: Daemon, store: Store) -> None:
    """Channels, the outbox that feeds them, the router and the digest, on ``store``."""
    from monitor.alerts.channels import build_channel, channel_name
    from monitor.alerts.digest import Digest
    from monitor.alerts.outbox import Outbox
    from monitor.alerts.router import Router

    assert daemon.session is not None
    configs = {channel_name(c, i): c for i, c in enumerate(daemon.plan.config.channels)}
    channels = {n: build_channel(c, n, daemon.session, daemon.clock) for n, c in configs.items()}
    daemon.outbox = Outbox(
        store, channels, clock=daemon.clock, metrics=daemon.metrics, acting=daemon.acting
    )
    status_url = daemon.plan.config.status_url
    services = {s.name: s for s in daemon.plan.services}
    router = Router(
        store,
        daemon.outbox,
        configs,
        services,
        clock=daemon.clock,
        metrics=daemon.metrics,
        status_url=status_url,
        acting=daemon.acting,
        decided=None if daemon.controller is None else daemon.controller.decided_through,
    )
    digest = Digest(
        store,
        daemon.outbox,
        configs,
        daemon.plan.services,
        clock=daemon.clock,
        status_url=status_url,
        acting=daemon.acting,
    )
    daemon.router, daemon.digest = router, digest
    await daemon.outbox.start(daemon.supervisor)
    daemon.supervisor.start(
        "alert-router",
        router.run,
        alive=lambda: router.last_beat,
        stall_after=3 * router.poll_every + 120.0,
    )
    daemon.supervisor.start(
        "alert-digest", digest.run, alive=lambda: digest.last_beat, stall_after=240.0
    )
