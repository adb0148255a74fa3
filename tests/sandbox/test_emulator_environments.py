"""PR environments in the emulator: created and deleted through the control API, listed by
``project.environments(isEphemeral: true)`` as Railway lists them."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from monitor.clock import FakeClock
from monitor.railway.environments import DOCUMENT, PrEnvironment, read_environments
from monitor.sandbox.railway_emulator import RailwayEmulator

TOKEN = "account-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
ALL = """query A($p: String!) { project(id: $p) {
  environments { edges { node { id name isEphemeral } } } } }"""
DEPLOYMENTS = """query D($s: String!, $e: String!) {
  deployments(input: {serviceId: $s, environmentId: $e}) { edges { node { id status } } } }"""


@pytest.fixture
async def emu() -> AsyncIterator[tuple[RailwayEmulator, TestServer, aiohttp.ClientSession]]:
    emulator = RailwayEmulator(FakeClock(start=1_700_000_000.0), tokens=[TOKEN])
    server = TestServer(emulator.app, host="127.0.0.1")
    async with server, aiohttp.ClientSession() as session:
        yield emulator, server, session
    await emulator.aclose()


async def call(
    server: TestServer, session: aiohttp.ClientSession, method: str, path: str, body: Any = None
) -> tuple[int, Any]:
    async with session.request(method, server.make_url(f"/_emulator/{path}"), json=body) as r:
        return r.status, await r.json()


async def gql(
    server: TestServer, session: aiohttp.ClientSession, query: str, variables: dict[str, Any]
) -> Any:
    url = server.make_url("/graphql/v2")
    payload = {"query": query, "variables": variables}
    async with session.post(url, json=payload, headers=AUTH) as response:
        body = await response.json()
    assert "errors" not in body, body
    return body["data"]


async def test_a_pr_environment_comes_and_goes_with_its_deployments(
    emu: tuple[RailwayEmulator, TestServer, aiohttp.ClientSession],
) -> None:
    emulator, server, session = emu
    _, project = await call(server, session, "POST", "projects", {"name": "shop"})
    pid = project["id"]
    body = {"projectId": pid, "name": "production"}
    _, production = await call(server, session, "POST", "environments", body)
    _, web = await call(server, session, "POST", "services", {"projectId": pid, "name": "web"})
    status, pr = await call(
        server,
        session,
        "POST",
        "environments",
        {"projectId": pid, "name": "web-pr-7", "ephemeral": True},
    )
    assert status == 201
    assert pr["ephemeral"] is True
    deploy = {"serviceId": web["id"], "environmentId": pr["id"], "meta": {"release": "pr-7"}}
    status, deployment = await call(server, session, "POST", "deployments", deploy)
    assert status == 201

    listing = read_environments(await gql(server, session, DOCUMENT, {"project": pid}))
    assert listing.environments == (PrEnvironment(pr["id"], "web-pr-7"),)
    assert listing.complete
    every = await gql(server, session, ALL, {"p": pid})
    flags = {
        e["node"]["name"]: e["node"]["isEphemeral"]
        for e in every["project"]["environments"]["edges"]
    }
    assert flags == {"production": False, "web-pr-7": True}
    ids = {"s": web["id"], "e": pr["id"]}
    found = await gql(server, session, DEPLOYMENTS, ids)
    assert [e["node"]["id"] for e in found["deployments"]["edges"]] == [deployment["id"]]

    status, gone = await call(server, session, "DELETE", f"environments/{pr['id']}")
    assert (status, gone["name"]) == (200, "web-pr-7")
    listing = read_environments(await gql(server, session, DOCUMENT, {"project": pid}))
    assert listing.environments == ()
    assert (await gql(server, session, DEPLOYMENTS, ids))["deployments"]["edges"] == []
    assert deployment["id"] not in emulator.deployments
    assert (web["id"], pr["id"]) not in emulator.active
    assert production["id"] in emulator.environments

    status, missing = await call(server, session, "DELETE", f"environments/{pr['id']}")
    assert status == 404
    assert missing["errors"][0]["message"] == "Environment not found"


async def test_a_project_token_sees_only_its_own_environment(
    emu: tuple[RailwayEmulator, TestServer, aiohttp.ClientSession],
) -> None:
    emulator, server, session = emu
    project = emulator.add_project("shop")
    production = emulator.add_environment(project.id, "production")
    emulator.add_environment(project.id, "web-pr-7", ephemeral=True)
    token = emulator.add_project_token(project.id, production.id)
    url = server.make_url("/graphql/v2")
    payload = {"query": DOCUMENT, "variables": {"project": project.id}}
    async with session.post(url, json=payload, headers={"Project-Access-Token": token}) as r:
        body = await r.json()
    assert read_environments(body["data"]).environments == ()
