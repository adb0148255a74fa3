"""The emulator's image retention and rebuilds (emulator_images), over real HTTP."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from monitor.clock import FakeClock
from monitor.sandbox.emulator_model import Deployment, EmulatorError
from monitor.sandbox.railway_emulator import RailwayEmulator

TOKEN = "account-token"
HOUR = 3600.0
ROLLOUT = (("INITIALIZING", 2.0), ("BUILDING", 30.0), ("DEPLOYING", 8.0))
CAN = "query C($id: String!) { deployment(id: $id) { canRollback } }"
ROLLBACK = "mutation Roll($id: String!) { deploymentRollback(id: $id) }"
DEPLOY = """mutation Deploy($environmentId: String!, $serviceId: String!, $commitSha: String) {
  serviceInstanceDeployV2(
    environmentId: $environmentId, serviceId: $serviceId, commitSha: $commitSha
  )
}"""


@dataclass
class World:
    emu: RailwayEmulator
    clock: FakeClock
    session: aiohttp.ClientSession
    server: TestServer
    env: str
    staging: str
    web: str
    old: Deployment  # built 80h ago
    good: Deployment  # 30h ago
    current: Deployment  # 1h ago

    async def gql(self, query: str, variables: dict[str, Any]) -> dict[str, Any]:
        url = self.server.make_url("/graphql/v2")
        payload = {"query": query, "variables": variables}
        headers = {"Authorization": f"Bearer {TOKEN}"}
        async with self.session.post(url, json=payload, headers=headers) as response:
            body: dict[str, Any] = json.loads(await response.text())
            return body

    async def can_rollback(self, deployment: Deployment) -> bool:
        answer = await self.gql(CAN, {"id": deployment.id})
        return bool(answer["data"]["deployment"]["canRollback"])

    async def control(self, path: str, body: Any) -> tuple[int, Any]:
        url = self.server.make_url(f"/_emulator/{path}")
        async with self.session.post(url, json=body) as response:
            return response.status, await response.json()


@pytest.fixture
async def world(clock: FakeClock) -> AsyncIterator[World]:
    emu = RailwayEmulator(clock, tokens=[TOKEN], rollout=ROLLOUT)
    project = emu.add_project("shop")
    env = emu.add_environment(project.id, "production")
    staging = emu.add_environment(project.id, "staging")
    web = emu.add_service(project.id, "web")
    now = clock.time()

    def at(hours: float, release: str, **meta: Any) -> Deployment:
        meta = {"release": release, "commitHash": f"sha-{release}", **meta}
        return emu.add_deployment(web.id, env.id, meta=meta, created_at=now - hours * HOUR)

    old, good = at(80, "v1"), at(30, "v2", imageDigest="sha256:aaa")
    current = at(1, "v3")
    server = TestServer(emu.app, host="127.0.0.1")
    async with server, aiohttp.ClientSession() as session:
        yield World(emu, clock, session, server, env.id, staging.id, web.id, old, good, current)
    await emu.aclose()


async def test_without_a_retention_every_image_is_kept(world: World) -> None:
    assert world.emu.images.hours is None
    assert [await world.can_rollback(d) for d in (world.old, world.good)] == [True, True]


@pytest.mark.parametrize(
    ("hours", "old", "good"), [(24.0, False, False), (72.0, False, True), (360.0, True, True)]
)
async def test_images_older_than_the_retention_cannot_be_rolled_back_to(
    world: World, hours: float, old: bool, good: bool
) -> None:
    world.emu.set_image_retention(hours)
    assert (await world.can_rollback(world.old), await world.can_rollback(world.good)) == (
        old,
        good,
    )


async def test_an_image_expires_as_the_clock_moves_and_the_rollback_is_refused(
    world: World,
) -> None:
    world.emu.set_image_retention(31)
    assert await world.can_rollback(world.good)
    await world.clock.advance(HOUR)
    assert not await world.can_rollback(world.good)
    refused = await world.gql(ROLLBACK, {"id": world.good.id})
    assert refused["errors"][0]["message"] == "Deployment cannot be rolled back"
    assert world.emu.deployments[world.good.id].can_rollback  # the flag itself: unchanged
    state = world.emu.state()
    shown = {d["id"]: d["canRollback"] for d in state["deployments"]}
    assert (shown[world.good.id], state["imageRetentionHours"]) == (False, 31)


async def test_a_deployment_made_without_a_rollback_image_stays_so(world: World) -> None:
    world.emu.set_deployment(world.current.id, can_rollback=False)
    assert not await world.can_rollback(world.current)


async def test_a_rebuild_builds_the_commit_again_and_goes_live(world: World) -> None:
    world.emu.set_image_retention(24)
    variables = {"environmentId": world.env, "serviceId": world.web, "commitSha": "sha-v2"}
    answer = await world.gql(DEPLOY, variables)
    new = world.emu.deployments[answer["data"]["serviceInstanceDeployV2"]]
    assert new.meta["release"] == "v2"
    assert new.meta["commitHash"] == "sha-v2"
    assert new.meta["imageDigest"] not in ("sha256:aaa", None)  # a build makes a new image
    seen = []
    for step in (0.0, 2.0, 30.0, 8.0):
        await world.clock.advance(step)
        seen.append(new.status)
    assert seen == ["INITIALIZING", "BUILDING", "DEPLOYING", "SUCCESS"]
    assert world.emu.active[(world.web, world.env)] == new.id
    assert await world.can_rollback(new)  # a fresh image
    (call,) = world.emu.mutation_calls("serviceInstanceDeployV2")
    assert (call.ok, call.arguments) == (True, variables)


async def test_a_commit_never_seen_deploys_bare_and_none_deploys_the_latest(
    world: World,
) -> None:
    unseen = {"environmentId": world.env, "serviceId": world.web, "commitSha": "f00"}
    bare = await world.gql(DEPLOY, unseen)
    assert world.emu.deployments[bare["data"]["serviceInstanceDeployV2"]].meta == {
        "commitHash": "f00"
    }
    latest = await world.gql(DEPLOY, {"environmentId": world.env, "serviceId": world.web})
    built = world.emu.deployments[latest["data"]["serviceInstanceDeployV2"]]
    assert built.meta["commitHash"] == "f00"  # the newest deployment's commit: the branch head


async def test_a_rebuild_in_an_environment_without_source_is_refused(world: World) -> None:
    answer = await world.gql(DEPLOY, {"environmentId": world.staging, "serviceId": world.web})
    assert answer["data"] is None
    assert answer["errors"][0]["message"] == "No commit to deploy: the service has no source"
    elsewhere = {"environmentId": world.staging, "serviceId": world.web, "commitSha": "sha-v1"}
    built = await world.gql(DEPLOY, elsewhere)  # the commit is the service's, in any environment
    new = world.emu.deployments[built["data"]["serviceInstanceDeployV2"]]
    assert (new.environment_id, new.meta["release"]) == (world.staging, "v1")


async def test_the_control_api_sets_the_retention(world: World) -> None:
    assert await world.control("retention", {"hours": 72}) == (201, {"hours": 72.0})
    assert not await world.can_rollback(world.old)
    assert await world.control("retention", {"hours": None}) == (201, {"hours": None})
    assert await world.can_rollback(world.old)
    status, body = await world.control("retention", {"hours": 0})
    assert (status, body["errors"][0]["field"]) == (400, "hours")
    status, _ = await world.control("retention", {})
    assert status == 400  # hours is required: null says "for ever"


@pytest.mark.parametrize("hours", [0.0, -1.0, float("inf"), float("nan")])
def test_the_model_refuses_a_retention_that_means_nothing(world: World, hours: float) -> None:
    with pytest.raises(EmulatorError, match="positive"):
        world.emu.set_image_retention(hours)
