"""The local sandbox: the Railway emulator and a sample app per tier that serves whichever
release the emulator has active in that tier's environment.

One project ("shop") with one service ("web") in three environments, as a Railway project
with preview, staging and production would have. A release is a label in a deployment's
``meta`` (``{"release": "v2"}``); ``behaviour`` says what the app does while it serves a
release (sample app control fields: ``mode``, ``error_ratio``, ``memory_bytes``...). When
railguard rolls back on the emulator, the app switches to the restored release at once, as
Railway's router would. A deployment put to sleep (``PATCH deployments/{id}`` with
``status = "SLEEPING"``) puts its app to sleep, and the request that wakes the app wakes it.
The app echoes the deployment it plays (id and commit), as an app echoing Railway's variables
would; a release whose behaviour sets ``overlap`` keeps the one it replaced answering that long.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

from aiohttp import web

from monitor.clock import Clock
from monitor.sandbox.emulator_model import Deployment, EmulatorModel
from monitor.sandbox.railway_emulator import RailwayEmulator
from monitor.sandbox.sample_app import STATE_KEY, WAKE_KEY, create_app

TOKEN = "sandbox-token"
SERVICE_ID = "svc-web"
# A push takes 3s to serve; a rollback reuses the image and skips the build: 1.5s.
ROLLOUT = (("INITIALIZING", 0.5), ("BUILDING", 1.5), ("DEPLOYING", 1.0))
# What a release does unless its behaviour says otherwise: healthy, and no deploy overlap.
HEALTHY: dict[str, Any] = {
    "mode": "ok",
    "error_ratio": 0.0,
    "memory_bytes": 100 * 2**20,
    "overlap": 0.0,
    "overlap_ratio": 1.0,
}


class Sandbox:
    """The emulator and the tiers' apps on 127.0.0.1 (ports chosen by the OS)."""

    def __init__(
        self,
        clock: Clock,
        tiers: Sequence[str],
        *,
        behaviour: Mapping[str, Mapping[str, Any]] | None = None,
        rollout: Sequence[tuple[str, float]] = ROLLOUT,
        requests_per_hour: int = 10_000,
    ) -> None:
        self.clock = clock
        self.tiers = tuple(tiers)
        self.behaviour: dict[str, Mapping[str, Any]] = dict(behaviour or {})
        self.emulator = RailwayEmulator(clock, tokens=[TOKEN], rollout=rollout)
        self.emulator.set_faults(rate_limit=requests_per_hour)  # Railway's Pro plan by default
        self.apps = {tier: create_app(release="-", clock=clock) for tier in self.tiers}
        self.urls: dict[str, str] = {}
        self.api_url = ""
        self._runners: list[web.AppRunner] = []
        project = self.emulator.add_project("shop", id="prj-shop")
        self.emulator.add_service(project.id, "web", id=SERVICE_ID)
        for tier in self.tiers:
            self.emulator.add_environment(project.id, tier, id=environment_id(tier))
            link_sleep(self.emulator, self.apps[tier], SERVICE_ID, environment_id(tier))
        self.emulator.on_activate.append(self._follow)

    async def start(self) -> None:
        """Serve the emulator and the apps."""
        self.api_url = await self._serve(self.emulator.app) + "/graphql/v2"
        for tier, app in self.apps.items():
            self.urls[tier] = await self._serve(app)

    async def _serve(self, app: web.Application) -> str:
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        self._runners.append(runner)  # cleaned up by close() even if the bind fails
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        return f"http://127.0.0.1:{runner.addresses[0][1]}"

    @property
    def environ(self) -> dict[str, str]:
        """What railguard needs to reach the sandbox: the API, a token, the apps' URLs."""
        urls = {f"{tier.upper()}_URL": url for tier, url in self.urls.items()}
        return {"RAILWAY_API_URL": self.api_url, "RAILWAY_API_TOKEN": TOKEN, **urls}

    def release(self, tier: str, release: str, *, ago: float) -> Deployment:
        """A release that went live ``ago`` seconds before now (history, no rollout)."""
        return self.emulator.add_deployment(
            SERVICE_ID,
            environment_id(tier),
            meta={"release": release},
            created_at=self.clock.time() - ago,
        )

    def deploy(self, tier: str, release: str) -> Deployment:
        """Push ``release`` to ``tier``: it builds, deploys, then serves (on the clock)."""
        return self.emulator.deploy(SERVICE_ID, environment_id(tier), meta={"release": release})

    def active(self, tier: str) -> Deployment | None:
        """The deployment serving ``tier`` now."""
        active = self.emulator.active.get((SERVICE_ID, environment_id(tier)))
        return None if active is None else self.emulator.deployments[active]

    def active_release(self, tier: str) -> str | None:
        """The release serving ``tier`` now."""
        active = self.active(tier)
        return None if active is None else str(active.meta.get("release"))

    def _follow(self, deployment: Deployment) -> None:
        tier = self.emulator.environments[deployment.environment_id].name
        if tier not in self.apps:
            return
        release = str(deployment.meta.get("release", "-"))
        self.apps[tier][STATE_KEY].update(
            {**HEALTHY, **self.behaviour.get(release, {}), **plays(deployment.id, deployment.meta)}
        )

    async def close(self) -> None:
        """Stop rollouts, the apps and the emulator."""
        await self.emulator.aclose()
        runners, self._runners = self._runners[::-1], []
        await asyncio.gather(*(r.cleanup() for r in runners), return_exceptions=True)


def link_sleep(
    emulator: EmulatorModel, app: web.Application, service_id: str, environment_id: str
) -> None:
    """Serverless, both ways: Railway putting the service's deployment to sleep puts the app
    to sleep, and the request that wakes the app wakes the deployment (SUCCESS again)."""
    key = (service_id, environment_id)

    def fall_asleep(deployment: Deployment) -> None:
        if (deployment.service_id, deployment.environment_id) == key:
            app[STATE_KEY].update({"asleep": True})

    def woken() -> None:
        active = emulator.active.get(key)
        if active is not None:
            emulator.wake(active)

    emulator.on_sleep.append(fall_asleep)
    app[WAKE_KEY].append(woken)


def plays(deployment_id: str, meta: Mapping[str, Any]) -> dict[str, Any]:
    """The sample app's identity fields for a deployment: what Railway would set in its
    ``RAILWAY_DEPLOYMENT_ID`` and ``RAILWAY_GIT_COMMIT_SHA``, and its release label."""
    commit = meta.get("commitHash")
    return {
        "release": str(meta.get("release", "-")),
        "deployment_id": deployment_id,
        "commit": commit if isinstance(commit, str) else "",
    }


def environment_id(tier: str) -> str:
    """The emulated environment id of a tier (the demo config names it)."""
    return f"env-{tier}"
