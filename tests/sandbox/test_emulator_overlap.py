"""The emulator's deploy overlap (RAILWAY_DEPLOYMENT_OVERLAP_SECONDS): the replaced deployment
keeps serving (SUCCESS) for the overlap after its replacement went live, then is REMOVED."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest

from monitor.clock import FakeClock
from monitor.sandbox.emulator_model import Deployment
from monitor.sandbox.railway_emulator import RailwayEmulator

ROLLOUT = (("BUILDING", 3.0), ("DEPLOYING", 2.0))


@dataclass
class World:
    emu: RailwayEmulator
    clock: FakeClock
    env: str
    web: str
    current: Deployment


@pytest.fixture
async def world(clock: FakeClock) -> AsyncIterator[World]:
    emu = RailwayEmulator(clock, rollout=ROLLOUT)
    project = emu.add_project("shop")
    env = emu.add_environment(project.id, "production")
    web = emu.add_service(project.id, "web")
    current = emu.add_deployment(web.id, env.id, meta={"release": "v1"})
    yield World(emu, clock, env.id, web.id, current)
    await emu.aclose()


async def test_without_an_overlap_the_replaced_deployment_is_removed_at_once(
    world: World,
) -> None:
    new = world.emu.deploy(world.web, world.env, meta={"release": "v2"})
    await world.clock.advance(5.0)
    assert (new.status, world.current.status) == ("SUCCESS", "REMOVED")


async def test_the_replaced_deployment_serves_through_the_overlap_then_is_removed(
    world: World,
) -> None:
    world.emu.overlap[world.web] = 20.0
    new = world.emu.deploy(world.web, world.env, meta={"release": "v2"})
    await world.clock.advance(5.0)
    assert (new.status, world.current.status) == ("SUCCESS", "SUCCESS")
    # Both serve; the active one is the newest that went live (what railguard judges).
    assert world.emu.active[(world.web, world.env)] == new.id
    await world.clock.advance(19.0)
    assert world.current.status == "SUCCESS"
    await world.clock.advance(1.0)
    assert world.current.status == "REMOVED"


async def test_a_deployment_made_active_again_in_its_overlap_is_not_removed(
    world: World,
) -> None:
    world.emu.overlap[world.web] = 20.0
    new = world.emu.deploy(world.web, world.env, meta={"release": "v2"})
    await world.clock.advance(5.0)
    world.emu.overlap[world.web] = 0.0
    world.emu._activate(world.current, at=world.clock.time())  # a rollback to it, say
    await world.clock.advance(30.0)
    assert (world.current.status, new.status) == ("SUCCESS", "REMOVED")
