"""The Railway emulator, over real HTTP: the GraphQL API, faults, the log and the control API."""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from monitor.clock import FakeClock
from monitor.sandbox.emulator_model import (
    Deployment,
    EmulatorError,
    EmulatorModel,
    EmulatorNotFound,
    iso,
)
from monitor.sandbox.railway_emulator import Faults, RailwayEmulator
from monitor.sandbox.sample_app import STATE_KEY, create_app
from monitor.sandbox.sandbox import link_sleep
from tests.helpers import until

TOKEN = "account-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
LIST = """
query List($input: DeploymentListInput!, $first: Int, $after: String) {
  deployments(input: $input, first: $first, after: $after) {
    edges { cursor node { id status createdAt updatedAt canRollback staticUrl meta
                          serviceId environmentId projectId } }
    pageInfo { hasNextPage hasPreviousPage startCursor endCursor }
  }
}"""
ROLLBACK = "mutation Roll($id: String!) { deploymentRollback(id: $id) }"
STATUS = "query S($id: String!) { deployment(id: $id) { id status meta canRollback } }"
INSTANCES = "query I($id: String!) { deployment(id: $id) { status instances { id status } } }"


@dataclass
class World:
    """A seeded account: production and staging of a shop, and an unrelated project."""

    emu: RailwayEmulator
    clock: FakeClock
    project: str
    prod: str
    staging: str
    web: str
    worker: str
    v1: Deployment
    v2: Deployment
    v3: Deployment
    stage: Deployment
    foreign: Deployment


@dataclass
class Reply:
    status: int
    body: dict[str, Any]
    headers: Any

    @property
    def messages(self) -> list[str]:
        return [e["message"] for e in self.body.get("errors", [])]


class Client:
    """Posts GraphQL to the emulator over a real socket."""

    def __init__(self, server: TestServer, session: aiohttp.ClientSession) -> None:
        self.server = server
        self.session = session

    async def gql(
        self,
        query: str,
        variables: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> Reply:
        payload = {"query": query, "variables": variables or {}, **extra}
        url = self.server.make_url("/graphql/v2?source=railguard-tests")
        hdrs = AUTH if headers is None else headers
        async with self.session.post(url, json=payload, headers=hdrs) as response:
            text = await response.text()
            is_json = response.content_type == "application/json"
            return Reply(
                response.status, json.loads(text) if is_json else {"text": text}, response.headers
            )

    async def control(self, method: str, path: str, body: Any = None) -> Reply:
        url = self.server.make_url(f"/_emulator/{path}")
        async with self.session.request(method, url, json=body) as response:
            return Reply(response.status, await response.json(), response.headers)


@pytest.fixture
def clock() -> FakeClock:
    """A clock on a round hour, so metric buckets line up with the seeded times."""
    return FakeClock(start=1_699_999_200.0)


@pytest.fixture
def world(clock: FakeClock) -> World:
    emu = RailwayEmulator(
        clock, tokens=[TOKEN], rollout=(("INITIALIZING", 2), ("BUILDING", 5), ("DEPLOYING", 8))
    )
    now = clock.time()
    project = emu.add_project("shop")
    prod = emu.add_environment(project.id, "production")
    staging = emu.add_environment(project.id, "staging")
    web = emu.add_service(project.id, "web")
    worker = emu.add_service(project.id, "worker")
    v1 = emu.add_deployment(web.id, prod.id, meta={"image": "web:v1"}, created_at=now - 7200)
    v2 = emu.add_deployment(web.id, prod.id, meta={"image": "web:v2"}, created_at=now - 3600)
    v3 = emu.add_deployment(web.id, prod.id, meta={"image": "web:v3"}, created_at=now - 60)
    stage = emu.add_deployment(web.id, staging.id, meta={"image": "web:v4"}, created_at=now - 30)
    emu.add_deployment(worker.id, prod.id, status="FAILED", created_at=now - 10)
    other = emu.add_project("other")
    other_env = emu.add_environment(other.id, "production")
    other_svc = emu.add_service(other.id, "api")
    foreign = emu.add_deployment(other_svc.id, other_env.id)
    return World(
        emu, clock, project.id, prod.id, staging.id, web.id, worker.id, v1, v2, v3, stage, foreign
    )


@pytest.fixture
async def client(world: World) -> AsyncIterator[Client]:
    server = TestServer(world.emu.app, host="127.0.0.1")
    async with server, aiohttp.ClientSession() as session:
        yield Client(server, session)


def ids(reply: Reply, alias: str = "deployments") -> list[str]:
    return [e["node"]["id"] for e in reply.body["data"][alias]["edges"]]


# -- auth --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param({}, id="missing"),
        pytest.param({"Authorization": "Bearer wrong"}, id="wrong-bearer"),
        pytest.param({"Authorization": TOKEN}, id="no-scheme"),
        pytest.param({"Project-Access-Token": TOKEN}, id="account-token-as-project-token"),
    ],
)
async def test_unauthenticated_requests_get_not_authorized_in_an_errors_array(
    client: Client, world: World, headers: dict[str, str]
) -> None:
    reply = await client.gql(LIST, {"input": {"serviceId": world.web}}, headers=headers)
    assert reply.status == 200
    assert reply.body["data"] is None
    assert reply.messages == ["Not Authorized"]
    assert reply.body["errors"][0]["path"] == ["deployments"]


async def test_project_token_sees_only_its_environment(client: Client, world: World) -> None:
    token = world.emu.add_project_token(world.project, world.prod)
    headers = {"Project-Access-Token": token}
    mine = await client.gql(LIST, {"input": {"projectId": world.project}}, headers=headers)
    assert set(ids(mine)) == {world.v1.id, world.v2.id, world.v3.id} | {
        d.id for d in world.emu.deployments.values() if d.service_id == world.worker
    }
    for input_ in ({"environmentId": world.staging}, {"projectId": world.foreign.project_id}):
        refused = await client.gql(LIST, {"input": input_}, headers=headers)
        assert refused.messages == ["Not Authorized"], input_
    other = await client.gql(STATUS, {"id": world.foreign.id}, headers=headers)
    assert other.messages == ["Not Authorized"]
    rollback = await client.gql(ROLLBACK, {"id": world.stage.id}, headers=headers)
    assert rollback.messages == ["Not Authorized"]
    # As a bearer token it is nothing; sent with a bearer token, the project token wins.
    as_bearer = await client.gql(STATUS, {"id": world.v1.id}, {"Authorization": f"Bearer {token}"})
    assert as_bearer.messages == ["Not Authorized"]
    both = await client.gql(STATUS, {"id": world.stage.id}, {**AUTH, **headers})
    assert both.messages == ["Not Authorized"]


def test_project_token_needs_an_environment_of_that_project(world: World) -> None:
    with pytest.raises(EmulatorError) as caught:
        world.emu.add_project_token(world.foreign.project_id, world.prod)
    assert caught.value.field == "environmentId"


# -- request errors ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "variables", "expected"),
    [
        pytest.param("query {", {}, "Syntax Error", id="syntax"),
        pytest.param(
            '{ deployment(id: "x") { nope } }', {}, "Cannot query field 'nope'", id="field"
        ),
        pytest.param(
            '{ metrics(deploymentId: "d", startDate: "2024-01-01T00:00:00Z",'
            " measurements: [MEMORY_USAGE_GB]) { measurement } }",
            {},
            "Unknown argument 'deploymentId' on field 'Query.metrics'",
            id="unknown-argument",
        ),
        pytest.param(
            '{ deployments(input: {serviceId: "s"}, successfulOnly: true) { edges { cursor } } }',
            {},
            "Unknown argument 'successfulOnly'",
            id="no-successfulOnly",
        ),
        pytest.param(
            LIST, {"input": {"serviceId": "s"}, "first": "ten"}, "Int cannot represent", id="type"
        ),
        pytest.param(LIST, {}, "Variable '$input' of required type", id="missing-variable"),
        pytest.param(
            "subscription D($id: String!) { deployment(id: $id) { id } }",
            {"id": "x"},
            "WebSocket",
            id="subscription",
        ),
    ],
)
async def test_invalid_documents_are_http_400_with_graphql_messages(
    client: Client, world: World, query: str, variables: dict[str, Any], expected: str
) -> None:
    reply = await client.gql(query, variables)
    assert reply.status == 400
    assert any(expected in m for m in reply.messages), reply.messages
    assert "data" not in reply.body or reply.body["data"] is None
    assert world.emu.requests[-1].status == 400


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        pytest.param(b"not json", "JSON", id="not-json"),
        pytest.param(b'{"variables": {}}', "Must provide query string", id="no-query"),
        pytest.param(b'{"query": "{ __typename }", "variables": [1]}', "variables", id="vars"),
    ],
)
async def test_malformed_bodies_are_http_400(client: Client, payload: bytes, expected: str) -> None:
    url = client.server.make_url("/graphql/v2")
    async with client.session.post(url, data=payload, headers=AUTH) as response:
        assert response.status == 400
        assert expected in (await response.json())["errors"][0]["message"]


async def test_unknown_operation_name_is_a_request_error(client: Client) -> None:
    reply = await client.gql("query A { __typename }", operationName="B")
    assert reply.status == 400
    assert reply.messages == ["Unknown operation named 'B'."]


async def test_a_schema_field_the_emulator_lacks_says_so(client: Client) -> None:
    reply = await client.gql("{ me { id } }")
    assert reply.status == 200
    assert reply.messages == ["Query.me is not emulated"]


# -- queries -----------------------------------------------------------------------------------


async def test_deployments_are_newest_first_and_filtered(client: Client, world: World) -> None:
    by_service = await client.gql(
        LIST, {"input": {"serviceId": world.web, "environmentId": world.prod}}
    )
    assert ids(by_service) == [world.v3.id, world.v2.id, world.v1.id]
    node = by_service.body["data"]["deployments"]["edges"][0]["node"]
    assert node == {
        "id": world.v3.id,
        "status": "SUCCESS",
        "createdAt": iso(world.clock.time() - 60),
        "updatedAt": iso(world.clock.time() - 60),
        "canRollback": True,
        "staticUrl": "web-production.up.railway.app",
        "meta": {"image": "web:v3"},
        "serviceId": world.web,
        "environmentId": world.prod,
        "projectId": world.project,
    }
    statuses = [e["node"]["status"] for e in by_service.body["data"]["deployments"]["edges"]]
    assert statuses == ["SUCCESS", "REMOVED", "REMOVED"]

    removed = await client.gql(
        LIST, {"input": {"serviceId": world.web, "status": {"in": ["REMOVED"]}}}
    )
    assert ids(removed) == [world.v2.id, world.v1.id]
    not_removed = await client.gql(
        LIST, {"input": {"projectId": world.project, "status": {"notIn": ["REMOVED", "FAILED"]}}}
    )
    assert ids(not_removed) == [world.stage.id, world.v3.id]
    everything = await client.gql(LIST, {"input": {}})
    assert len(ids(everything)) == 6


async def test_deployments_paginate_with_first_and_after(client: Client, world: World) -> None:
    variables: dict[str, Any] = {"input": {"serviceId": world.web, "environmentId": world.prod}}
    page1 = await client.gql(LIST, variables | {"first": 2})
    info = page1.body["data"]["deployments"]["pageInfo"]
    assert ids(page1) == [world.v3.id, world.v2.id]
    assert info == {
        "hasNextPage": True,
        "hasPreviousPage": False,
        "startCursor": world.v3.id,
        "endCursor": world.v2.id,
    }
    page2 = await client.gql(LIST, variables | {"first": 2, "after": info["endCursor"]})
    assert ids(page2) == [world.v1.id]
    assert page2.body["data"]["deployments"]["pageInfo"]["hasNextPage"] is False
    last = await client.gql(
        "query($i: DeploymentListInput!, $b: String) { deployments(input: $i, last: 1, before: $b)"
        " { edges { node { id } } pageInfo { hasPreviousPage } } }",
        {"i": variables["input"], "b": world.v1.id},
    )
    assert ids(last) == [world.v2.id]
    bad = await client.gql(LIST, variables | {"after": "nope"})
    assert bad.messages == ["Invalid cursor for after: 'nope'"]
    negative = await client.gql(LIST, variables | {"first": -1})
    assert negative.messages == ["first must not be negative"]


async def test_deployment_by_id_and_unknown_id(client: Client, world: World) -> None:
    found = await client.gql(STATUS, {"id": world.v2.id})
    assert found.body["data"]["deployment"] == {
        "id": world.v2.id,
        "status": "REMOVED",
        "meta": {"image": "web:v2"},
        "canRollback": True,
    }
    missing = await client.gql(STATUS, {"id": "00000000-0000-4000-8000-000000000000"})
    assert missing.status == 200
    assert missing.body["data"] is None
    assert missing.messages == ["Deployment not found"]
    assert missing.body["errors"][0]["path"] == ["deployment"]


async def test_nested_objects_and_service_instance(client: Client, world: World) -> None:
    query = """
    query($p: String!, $s: String!, $e: String!, $d: String!) {
      project(id: $p) {
        name
        services { edges { node { name deployments(first: 1) { edges { node { id } } } } } }
        environments { edges { node { name } } }
      }
      service(id: $s) { name project { name } }
      environment(id: $e) { name deployments { edges { node { id } } } }
      serviceInstance(serviceId: $s, environmentId: $e) {
        serviceName latestDeployment { id } activeDeployments { id status }
      }
      deployment(id: $d) { service { name } environment { name } instances { status } url }
    }"""
    variables = {"p": world.project, "s": world.web, "e": world.prod, "d": world.v3.id}
    reply = await client.gql(query, variables)
    data = reply.body["data"]
    assert reply.messages == []
    assert data["project"]["name"] == "shop"
    assert [e["node"]["name"] for e in data["project"]["services"]["edges"]] == ["web", "worker"]
    assert data["project"]["services"]["edges"][0]["node"]["deployments"]["edges"] == [
        {"node": {"id": world.stage.id}}
    ]
    assert len(data["project"]["environments"]["edges"]) == 2
    assert data["service"] == {"name": "web", "project": {"name": "shop"}}
    assert len(data["environment"]["deployments"]["edges"]) == 4
    assert data["serviceInstance"] == {
        "serviceName": "web",
        "latestDeployment": {"id": world.v3.id},
        "activeDeployments": [{"id": world.v3.id, "status": "SUCCESS"}],
    }
    assert data["deployment"] == {
        "service": {"name": "web"},
        "environment": {"name": "production"},
        "instances": [{"status": "RUNNING"}],
        "url": "https://web-production.up.railway.app",
    }
    token = world.emu.add_project_token(world.project, world.prod)
    scoped = await client.gql(
        "query($e: String!) { environment(id: $e) { name } }",
        {"e": world.staging},
        {"Project-Access-Token": token},
    )
    assert scoped.messages == ["Not Authorized"]
    instance = await client.gql(
        "query($s: String!, $e: String!) { serviceInstance(serviceId: $s, environmentId: $e)"
        " { latestDeployment { id } } }",
        {"s": world.web, "e": world.foreign.environment_id},
    )
    assert instance.messages == ["ServiceInstance not found"]


METRICS = """
query M($s: String, $start: DateTime!, $end: DateTime, $g: [MetricTag!], $rate: Int) {
  metrics(serviceId: $s, startDate: $start, endDate: $end, sampleRateSeconds: $rate,
          measurements: [MEMORY_USAGE_GB, MEMORY_LIMIT_GB], groupBy: $g) {
    measurement tags { deploymentId serviceId environmentId } values { ts value }
  }
}"""


async def test_metrics_grouped_by_deployment(client: Client, world: World) -> None:
    emu, now = world.emu, world.clock.time()
    emu.set_memory(world.v2.id, 0.4, 1.0, at=now - 3600)
    emu.set_memory(world.v3.id, 0.5, 1.0, at=now - 60)
    emu.set_memory(world.v3.id, 0.95, 1.0, at=now - 25)
    variables = {
        "s": world.web,
        "start": iso(now - 120),
        "end": iso(now),
        "g": ["DEPLOYMENT_ID"],
        "rate": 30,
    }
    reply = await client.gql(METRICS, variables)
    results = {
        (r["measurement"], r["tags"]["deploymentId"]): r for r in reply.body["data"]["metrics"]
    }
    # v2 was removed when v3 went live (now - 60): its series ends there.
    start = int(now - 120)
    assert results[("MEMORY_USAGE_GB", world.v2.id)]["values"] == [
        {"ts": start, "value": 0.4},
        {"ts": start + 30, "value": 0.4},
    ]
    assert results[("MEMORY_USAGE_GB", world.v3.id)]["values"] == [
        {"ts": start + 60, "value": 0.5},
        {"ts": start + 90, "value": 0.5},
        {"ts": start + 120, "value": 0.95},
    ]
    assert results[("MEMORY_LIMIT_GB", world.v3.id)]["tags"]["serviceId"] == world.web
    assert len(results) == 4

    by_service = await client.gql(METRICS, variables | {"g": ["SERVICE_ID"], "s": None})
    usage = [r for r in by_service.body["data"]["metrics"] if r["measurement"] == "MEMORY_USAGE_GB"]
    assert [r["tags"]["serviceId"] for r in usage] == [world.web]
    assert [v["value"] for v in usage[0]["values"]] == [0.4, 0.4, 0.5, 0.5, 0.95]

    ungrouped = await client.gql(METRICS, variables | {"g": None, "end": None})
    assert ungrouped.body["data"]["metrics"][0]["tags"]["deploymentId"] is None


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        pytest.param({"g": ["REGION"]}, "groupBy REGION is not emulated", id="group"),
        pytest.param({"start": "yesterday"}, "Invalid DateTime for startDate", id="date"),
        pytest.param({"rate": 0}, "sampleRateSeconds must be positive", id="rate"),
        pytest.param(
            {"rate": 1, "start": "2000-01-01T00:00:00"}, "Too many data points", id="many"
        ),
    ],
)
async def test_metrics_argument_errors(
    client: Client, world: World, changes: dict[str, Any], expected: str
) -> None:
    variables = {"s": world.web, "start": iso(world.clock.time() - 60)} | changes
    reply = await client.gql(METRICS, variables)
    assert reply.status == 200
    assert len(reply.messages) == 1
    assert expected in reply.messages[0]


async def test_metrics_for_a_volume_are_empty(client: Client, world: World) -> None:
    query = (
        'query($start: DateTime!) { metrics(volumeId: "v", startDate: $start,'
        " measurements: [DISK_USAGE_GB]) { measurement } }"
    )
    reply = await client.gql(query, {"start": iso(world.clock.time() - 60)})
    assert reply.body["data"]["metrics"] == []


HTTP = """
query H($s: String!, $e: String!, $start: DateTime!, $end: DateTime!, $step: Int) {
  httpMetricsGroupedByStatus(serviceId: $s, environmentId: $e, startDate: $start,
                             endDate: $end, stepSeconds: $step) {
    statusCode samples { ts value }
  }
}"""


async def test_http_metrics_grouped_by_status_in_buckets(client: Client, world: World) -> None:
    emu, clock = world.emu, world.clock
    now = clock.time()
    emu.record_http(world.web, world.prod, 200, 30, at=now - 150)
    emu.record_http(world.web, world.prod, 404, 2, at=now - 100)
    emu.record_http(world.web, world.prod, 200, 7, at=now - 500)  # before the window
    emu.set_traffic(world.web, world.prod, 2.0, error_ratio=0.25, error_status=503, at=now - 90)
    emu.set_traffic(world.web, world.prod, 0.0, at=now - 30)
    reply = await client.gql(
        HTTP,
        {"s": world.web, "e": world.prod, "start": iso(now - 180), "end": iso(now), "step": 60},
    )
    series = {
        r["statusCode"]: r["samples"] for r in reply.body["data"]["httpMetricsGroupedByStatus"]
    }
    buckets = [now - 180, now - 120, now - 60]
    assert series == {
        200: [{"ts": int(b), "value": v} for b, v in zip(buckets, [30.0, 45.0, 45.0], strict=True)],
        404: [{"ts": int(b), "value": v} for b, v in zip(buckets, [0.0, 2.0, 0.0], strict=True)],
        503: [{"ts": int(b), "value": v} for b, v in zip(buckets, [0.0, 15.0, 15.0], strict=True)],
    }
    default_step = await client.gql(
        HTTP, {"s": world.web, "e": world.prod, "start": iso(now - 120), "end": iso(now)}
    )
    assert len(default_step.body["data"]["httpMetricsGroupedByStatus"][0]["samples"]) == 2
    unknown = await client.gql(
        HTTP, {"s": "nope", "e": world.prod, "start": iso(now - 60), "end": iso(now)}
    )
    assert unknown.messages == ["Service not found"]
    token = emu.add_project_token(world.project, world.prod)
    other_env = await client.gql(
        HTTP,
        {"s": world.web, "e": world.staging, "start": iso(now - 60), "end": iso(now)},
        {"Project-Access-Token": token},
    )
    assert other_env.messages == ["Not Authorized"]


async def test_aliased_fields_batch_in_one_request(client: Client, world: World) -> None:
    world.emu.set_memory(world.v3.id, 0.5, 1.0, at=world.clock.time() - 60)
    query = """
    query Tick($web: String!, $worker: String!, $prod: String!, $start: DateTime!) {
      a: deployments(input: {serviceId: $web, environmentId: $prod}, first: 1) {
        edges { node { id status } } }
      b: deployments(input: {serviceId: $worker, environmentId: $prod}, first: 1) {
        edges { node { id status } } }
      m1: metrics(serviceId: $web, environmentId: $prod, startDate: $start,
                  measurements: [MEMORY_USAGE_GB], groupBy: [DEPLOYMENT_ID]) {
        tags { deploymentId } values { value } }
    }"""
    variables = {
        "web": world.web,
        "worker": world.worker,
        "prod": world.prod,
        "start": iso(world.clock.time() - 60),
    }
    reply = await client.gql(query, variables)
    assert reply.status == 200
    data = reply.body["data"]
    assert ids(reply, "a") == [world.v3.id]
    assert data["b"]["edges"][0]["node"]["status"] == "FAILED"
    assert data["m1"] == [
        {"tags": {"deploymentId": world.v3.id}, "values": [{"value": 0.5}, {"value": 0.5}]}
    ]
    record = world.emu.requests[-1]
    assert (record.operation_name, record.operation_type) == ("Tick", "query")
    assert record.fields == ("deployments", "deployments", "metrics")
    assert len(world.emu.requests) == 1


# -- mutations ---------------------------------------------------------------------------------


async def test_rollback_creates_a_deployment_that_goes_live_on_the_clock(
    client: Client, world: World
) -> None:
    emu, clock = world.emu, world.clock
    reply = await client.gql(ROLLBACK, {"id": world.v2.id})
    assert reply.body == {"data": {"deploymentRollback": True}}
    assert len(emu.mutation_calls("deploymentRollback")) == 1

    latest = await client.gql(
        LIST, {"input": {"serviceId": world.web, "environmentId": world.prod}, "first": 1}
    )
    new = latest.body["data"]["deployments"]["edges"][0]["node"]
    assert new["id"] not in {world.v1.id, world.v2.id, world.v3.id}
    assert new["meta"] == {"image": "web:v2"}

    async def status(deployment_id: str) -> str:
        answer = await client.gql(STATUS, {"id": deployment_id})
        return str(answer.body["data"]["deployment"]["status"])

    # A rollback reuses the image: no BUILDING.
    seen = [await status(new["id"])]
    for step in (1.0, 1.0, 7.0, 1.0):
        await clock.advance(step)
        seen.append(await status(new["id"]))
    assert seen == ["INITIALIZING", "INITIALIZING", "DEPLOYING", "DEPLOYING", "SUCCESS"]
    assert await status(world.v3.id) == "REMOVED"
    assert emu.active[(world.web, world.prod)] == new["id"]


async def test_rollback_refusals(client: Client, world: World) -> None:
    world.emu.set_deployment(world.v1.id, can_rollback=False)
    refused = await client.gql(ROLLBACK, {"id": world.v1.id})
    assert refused.status == 200
    assert refused.body["data"] is None
    assert refused.messages == ["Deployment cannot be rolled back"]
    unknown = await client.gql(ROLLBACK, {"id": "nope"})
    assert unknown.messages == ["Deployment not found"]
    calls = world.emu.mutation_calls("deploymentRollback")
    assert [(c.ok, c.error) for c in calls] == [
        (False, "Deployment cannot be rolled back"),
        (False, "Deployment not found"),
    ]
    assert len(world.emu.deployments) == 6


async def test_failed_rollout_keeps_the_old_deployment(client: Client, world: World) -> None:
    world.emu.set_faults(deploy_outcome="FAILED")
    await client.gql(ROLLBACK, {"id": world.v2.id})
    await world.clock.advance(60)
    newest = world.emu.newest_first()[0]
    assert newest.status == "FAILED"
    assert world.emu.deployments[world.v3.id].status == "SUCCESS"


async def test_redeploy_builds_a_new_deployment(client: Client, world: World) -> None:
    reply = await client.gql(
        "mutation R($id: String!) { deploymentRedeploy(id: $id) { id status meta } }",
        {"id": world.v3.id},
    )
    new = reply.body["data"]["deploymentRedeploy"]
    assert new["status"] == "INITIALIZING"
    assert new["meta"] == {"image": "web:v3"}
    await world.clock.advance(2)
    assert world.emu.deployments[new["id"]].status == "BUILDING"
    await world.clock.advance(13)
    assert world.emu.deployments[new["id"]].status == "SUCCESS"
    assert world.emu.deployments[world.v3.id].status == "REMOVED"


async def test_restart_and_remove(client: Client, world: World) -> None:
    restart = "mutation($id: String!) { deploymentRestart(id: $id) }"
    reply = await client.gql(restart, {"id": world.v3.id})
    assert reply.body == {"data": {"deploymentRestart": True}}
    assert world.emu.deployments[world.v3.id].restarts == 1
    removed = await client.gql(restart, {"id": world.v1.id})
    assert removed.messages == ["Cannot restart a deployment that is REMOVED"]
    gone = await client.gql(
        "mutation($id: String!) { deploymentRemove(id: $id) }", {"id": world.v3.id}
    )
    assert gone.body == {"data": {"deploymentRemove": True}}
    assert world.emu.deployments[world.v3.id].status == "REMOVED"
    assert (world.web, world.prod) not in world.emu.active


async def test_closing_the_app_cancels_rollouts(world: World) -> None:
    server = TestServer(world.emu.app, host="127.0.0.1")
    async with server, aiohttp.ClientSession() as session:
        await Client(server, session).gql(ROLLBACK, {"id": world.v1.id})
    assert world.clock.sleepers == 0
    assert world.emu.newest_first()[0].status == "INITIALIZING"


# -- instances and crash loops -----------------------------------------------------------------


async def instances(client: Client, deployment_id: str) -> tuple[str, list[str]]:
    """The deployment's status and its instances' statuses, read over GraphQL."""
    reply = await client.gql(INSTANCES, {"id": deployment_id})
    node = reply.body["data"]["deployment"]
    return node["status"], [i["status"] for i in node["instances"]]


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        pytest.param("SUCCESS", ["RUNNING", "RUNNING"], id="success"),
        pytest.param("CRASHED", ["CRASHED", "CRASHED"], id="crashed"),
        pytest.param("SLEEPING", ["STOPPED", "STOPPED"], id="sleeping"),
        pytest.param("DEPLOYING", ["INITIALIZING", "INITIALIZING"], id="deploying"),
        pytest.param("BUILDING", [], id="building"),
        pytest.param("REMOVED", [], id="removed"),
        pytest.param("FAILED", [], id="failed"),
    ],
)
async def test_instances_follow_the_deployment_status(
    client: Client, world: World, status: str, expected: list[str]
) -> None:
    d = world.emu.add_deployment(world.worker, world.staging, status=status, replicas=2)
    assert await instances(client, d.id) == (status, expected)
    reply = await client.gql(INSTANCES, {"id": d.id})
    assert len({i["id"] for i in reply.body["data"]["deployment"]["instances"]}) == len(expected)


async def test_a_serverless_deployment_sleeps_in_its_slot_and_a_request_wakes_it(
    client: Client, world: World
) -> None:
    emu, clock, live = world.emu, world.clock, world.v3
    slept: list[str] = []
    emu.on_sleep.append(lambda d: slept.append(d.id))
    await clock.advance(30)
    emu.sleep(live.id)
    assert slept == [live.id]
    assert await instances(client, live.id) == ("SLEEPING", ["STOPPED"])
    assert emu.active[(world.web, world.prod)] == live.id  # still the active deployment
    await clock.advance(60)
    emu.wake(live.id)
    assert await instances(client, live.id) == ("SUCCESS", ["RUNNING"])
    reply = await client.gql(
        "query($id: String!) { deployment(id: $id) { statusUpdatedAt } }", {"id": live.id}
    )
    assert reply.body["data"]["deployment"]["statusUpdatedAt"] == iso(clock.time())
    emu.wake(live.id)  # awake already: nothing changes
    with pytest.raises(EmulatorError, match="only a serving one can sleep"):
        emu.sleep(world.v1.id)  # REMOVED
    patched = await client.control("PATCH", f"deployments/{live.id}", {"status": "SLEEPING"})
    assert patched.status == 200
    assert slept == [live.id, live.id]  # a PATCH to SLEEPING is a sleep like any other


async def test_the_sandbox_app_sleeps_and_wakes_with_its_deployment(world: World) -> None:
    emu = world.emu
    app = create_app(clock=world.clock)
    link_sleep(emu, app, world.web, world.prod)
    emu.sleep(world.v3.id)
    emu.sleep(world.stage.id)  # another environment: not this app's
    assert app[STATE_KEY].asleep
    async with TestServer(app, host="127.0.0.1") as server, aiohttp.ClientSession() as session:
        for expected in (502, 200):
            async with session.get(server.make_url("/health")) as response:
                assert response.status == expected
    assert world.v3.status == "SUCCESS"
    assert world.stage.status == "SLEEPING"


async def test_replicas_are_instances_and_a_rollback_keeps_them(
    client: Client, world: World
) -> None:
    emu = world.emu
    two = emu.add_deployment(world.worker, world.prod, replicas=2)
    reply = await client.gql(
        "query($s: String!, $e: String!) { serviceInstance(serviceId: $s, environmentId: $e)"
        " { numReplicas } }",
        {"s": world.worker, "e": world.prod},
    )
    assert reply.body["data"]["serviceInstance"] == {"numReplicas": 2}
    await client.gql(ROLLBACK, {"id": two.id})
    await world.clock.advance(10)
    new = emu.newest_first()[0]
    assert await instances(client, new.id) == ("SUCCESS", ["RUNNING", "RUNNING"])
    with pytest.raises(EmulatorError) as caught:
        emu.add_deployment(world.worker, world.prod, replicas=0)
    assert caught.value.field == "replicas"


async def test_a_crash_loop_restarts_the_instance_until_the_deployment_crashes(
    client: Client, world: World
) -> None:
    emu, clock, live = world.emu, world.clock, world.v3
    start = clock.time()
    before = (await client.gql(INSTANCES, {"id": live.id})).body["data"]["deployment"]
    emu.crash_loop(live.id, period=10, max_restarts=2)
    seen = []
    for step in (0, 10, 5, 5, 5, 5, 60):  # t = 0, 10, 15, 20, 25, 30, 90
        await clock.advance(step)
        seen.append((*await instances(client, live.id), live.restarts))
    assert seen == [
        ("SUCCESS", ["RUNNING"], 0),
        ("SUCCESS", ["RESTARTING"], 1),  # the first exit
        ("SUCCESS", ["RUNNING"], 1),
        ("SUCCESS", ["RESTARTING"], 2),
        ("SUCCESS", ["RUNNING"], 2),
        ("CRASHED", ["CRASHED"], 2),  # the exit after the last retry is final
        ("CRASHED", ["CRASHED"], 2),
    ]
    after = (await client.gql(INSTANCES, {"id": live.id})).body["data"]["deployment"]
    assert after["instances"][0]["id"] == before["instances"][0]["id"]
    assert live.updated_at == start + 30
    # Railway keeps the crashed deployment in its slot: no fallback to the one it replaced.
    assert emu.active[(world.web, world.prod)] == live.id
    assert world.v2.status == "REMOVED"
    active = await client.gql(
        "query($s: String!, $e: String!) { serviceInstance(serviceId: $s, environmentId: $e)"
        " { activeDeployments { id status instances { status } } } }",
        {"s": world.web, "e": world.prod},
    )
    assert active.body["data"]["serviceInstance"]["activeDeployments"] == [
        {"id": live.id, "status": "CRASHED", "instances": [{"status": "CRASHED"}]}
    ]
    assert emu.crash_loops == []
    assert clock.sleepers == 0


async def test_a_crash_loop_without_a_limit_runs_until_stopped(
    client: Client, world: World
) -> None:
    emu, clock, live = world.emu, world.clock, world.v3
    emu.crash_loop(live.id, period=4, max_restarts=None)
    assert [(c.deployment_id, c.period, c.max_restarts) for c in emu.crash_loops] == [
        (live.id, 4, None)
    ]
    await clock.advance(401)  # the 100th exit was at t = 400: still restarting
    assert await instances(client, live.id) == ("SUCCESS", ["RESTARTING"])
    assert live.restarts == 100
    updated_at = live.updated_at
    emu.stop_crash_loop(live.id)
    assert await instances(client, live.id) == ("SUCCESS", ["RUNNING"])
    await clock.advance(60)
    assert (live.restarts, live.updated_at) == (100, updated_at)
    assert emu.crash_loops == []
    assert clock.sleepers == 0
    emu.stop_crash_loop(live.id)  # nothing to stop: harmless


async def test_a_new_crash_loop_replaces_the_running_one(client: Client, world: World) -> None:
    emu, clock, live = world.emu, world.clock, world.v3
    emu.crash_loop(live.id, period=4, max_restarts=None)
    await clock.advance(4)
    emu.crash_loop(live.id, period=10, max_restarts=0)
    assert [(c.period, c.max_restarts) for c in emu.crash_loops] == [(10, 0)]
    assert await instances(client, live.id) == ("SUCCESS", ["RUNNING"])
    await clock.advance(9)
    assert (live.status, live.restarts) == ("SUCCESS", 1)
    await clock.advance(1)  # no retries: the first exit of the new loop crashes it
    assert await instances(client, live.id) == ("CRASHED", ["CRASHED"])
    assert emu.crash_loops == []


async def test_a_live_deployment_made_crashed_stays_active(client: Client, world: World) -> None:
    emu, live = world.emu, world.v3
    emu.crash_loop(live.id, max_restarts=None)
    emu.set_deployment(live.id, status="CRASHED")
    assert await instances(client, live.id) == ("CRASHED", ["CRASHED"])
    assert emu.active[(world.web, world.prod)] == live.id
    assert emu.crash_loops == []  # crashed for good: nothing restarts it
    restart = await client.gql(
        "mutation($id: String!) { deploymentRestart(id: $id) }", {"id": live.id}
    )
    assert restart.body == {"data": {"deploymentRestart": True}}
    assert await instances(client, live.id) == ("SUCCESS", ["RUNNING"])


async def test_a_crash_loop_ends_when_the_deployment_is_replaced(
    client: Client, world: World
) -> None:
    emu, clock, old = world.emu, world.clock, world.v3
    emu.crash_loop(old.id, period=3, max_restarts=None)
    await client.gql(ROLLBACK, {"id": world.v2.id})
    new = emu.newest_first()[0]
    assert await instances(client, new.id) == ("INITIALIZING", [])
    await clock.advance(2)
    assert await instances(client, new.id) == ("DEPLOYING", ["INITIALIZING"])
    await clock.advance(8)  # the rollback goes live and REMOVEs the crash-looping deployment
    assert await instances(client, new.id) == ("SUCCESS", ["RUNNING"])
    assert await instances(client, old.id) == ("REMOVED", [])
    assert emu.active[(world.web, world.prod)] == new.id
    restarts = old.restarts
    assert restarts == 3
    await clock.advance(60)
    assert old.restarts == restarts
    assert emu.crash_loops == []
    assert clock.sleepers == 0


async def test_crash_loop_refusals(world: World) -> None:
    emu = world.emu
    for deployment_id, kwargs, field in [
        (world.v1.id, {}, "deploymentId"),  # REMOVED: nothing runs to crash
        (world.v3.id, {"period": 0}, "period"),
        (world.v3.id, {"period": float("inf")}, "period"),
        (world.v3.id, {"max_restarts": -1}, "maxRestarts"),
    ]:
        with pytest.raises(EmulatorError) as caught:
            emu.crash_loop(deployment_id, **kwargs)
        assert caught.value.field == field, kwargs
    with pytest.raises(EmulatorNotFound):
        emu.crash_loop("nope")
    with pytest.raises(EmulatorNotFound):
        emu.stop_crash_loop("nope")
    assert emu.crash_loops == []


async def test_closing_the_model_ends_crash_loops(world: World) -> None:
    world.emu.crash_loop(world.v3.id, max_restarts=None)
    world.emu.crash_loop(world.stage.id, max_restarts=None)
    await world.clock.advance(0)  # let the loops start waiting for their first exit
    assert world.clock.sleepers == 2
    await world.emu.aclose()
    assert world.clock.sleepers == 0
    assert world.emu.crash_loops == []


# -- faults ------------------------------------------------------------------------------------


async def test_rate_limit_headers_and_429(client: Client, world: World) -> None:
    world.emu.set_faults(rate_limit=2, rate_window=60)
    first = await client.gql("{ __typename }")
    assert first.headers["X-RateLimit-Limit"] == "2"
    assert first.headers["X-RateLimit-Remaining"] == "1"
    reset = int(first.headers["X-RateLimit-Reset"])
    assert reset % 60 == 0
    assert 0 < reset - world.clock.time() <= 60
    second = await client.gql("{ __typename }")
    assert second.headers["X-RateLimit-Remaining"] == "0"
    limited = await client.gql("{ __typename }")
    assert limited.status == 429
    assert limited.headers["Retry-After"] == str(int(reset - world.clock.time()))
    assert limited.headers["X-RateLimit-Remaining"] == "0"
    other_caller = await client.gql("{ __typename }", headers={"Authorization": "Bearer x"})
    assert other_caller.status == 200
    await world.clock.advance(reset - world.clock.time())
    again = await client.gql("{ __typename }")
    assert again.status == 200
    assert [r.fault for r in world.emu.requests].count("rate-limit") == 1


@pytest.mark.parametrize(
    ("unit", "reading"),
    [
        ("unix", lambda end, now: end),
        ("seconds", lambda end, now: end - now),
        ("unix_ms", lambda end, now: end * 1000),
    ],
)
async def test_the_reset_header_comes_in_the_unit_asked_for(
    client: Client, world: World, unit: str, reading: Any
) -> None:
    world.emu.set_faults(rate_window=60, reset_unit=unit)
    now = world.clock.time()
    reply = await client.gql("{ __typename }")
    end = now - now % 60 + 60
    assert int(reply.headers["X-RateLimit-Reset"]) == math.ceil(reading(end, now))


async def test_the_request_log_keeps_the_source_but_never_a_token(
    client: Client, world: World
) -> None:
    headers = {**AUTH, "x-source": "railguard-tests", "Cookie": "session=1"}
    await client.gql("{ __typename }", headers=headers)
    [sent] = world.emu.requests
    assert sent.headers["x-source"] == "railguard-tests"
    assert sent.query == {"source": "railguard-tests"}
    assert {"authorization", "project-access-token", "cookie"}.isdisjoint(sent.headers)


async def test_next_requests_get_5xx(client: Client, world: World) -> None:
    world.emu.set_faults(error_count=2, error_status=502)
    url = client.server.make_url("/graphql/v2")
    statuses = []
    for _ in range(3):
        async with client.session.post(url, json={"query": "{ __typename }"}) as response:
            statuses.append(response.status)
            assert "X-RateLimit-Remaining" in response.headers
    assert statuses == [502, 502, 200]
    world.emu.set_faults(errorRatio=1.0)
    reply = await client.gql(ROLLBACK, {"id": world.v1.id})
    assert reply.status == 502
    assert world.emu.mutations == []
    last = world.emu.requests[-1]
    assert (last.operation_name, last.fields, last.fault) == (
        "Roll",
        ("deploymentRollback",),
        "error",
    )


async def test_dropped_connections(client: Client, world: World) -> None:
    world.emu.set_faults(drop_count=1)
    with pytest.raises(aiohttp.ServerDisconnectedError):
        await client.gql("{ __typename }")
    assert (await client.gql("{ __typename }")).status == 200
    assert [(r.status, r.fault) for r in world.emu.requests] == [(0, "drop"), (200, None)]


async def test_latency_waits_on_the_clock(client: Client, world: World) -> None:
    world.emu.set_faults(latency=5)
    pending = asyncio.ensure_future(client.gql("{ __typename }"))
    await until(lambda: world.clock.sleepers > 0, "the request to reach the server")
    assert not pending.done()
    await world.clock.advance(5)
    assert (await pending).status == 200


async def test_drop_after_applies_the_mutation_but_loses_the_answer(
    client: Client, world: World
) -> None:
    emu = world.emu
    emu.set_faults(drop_after_count=1, fault_operations=["Roll"])
    assert (await client.gql(STATUS, {"id": world.v3.id})).status == 200
    with pytest.raises(aiohttp.ServerDisconnectedError):
        await client.gql(ROLLBACK, {"id": world.v2.id})
    # Railway applied it: a new deployment of v2's release is rolling out.
    new = emu.newest_first()[0]
    assert (new.meta, new.status) == ({"image": "web:v2"}, "INITIALIZING")
    assert emu.faults.drop_after_count == 0
    log = (await client.control("GET", "requests")).body
    assert [(r["operationName"], r["status"], r["fault"]) for r in log["requests"]] == [
        ("S", 200, None),
        ("Roll", 0, "drop-after"),
    ]
    assert [(m["name"], m["arguments"], m["ok"]) for m in log["mutations"]] == [
        ("deploymentRollback", {"id": world.v2.id}, True)
    ]
    # Once used up, the same mutation is answered (and starts a second deployment).
    again = await client.gql(ROLLBACK, {"id": world.v2.id})
    assert again.body == {"data": {"deploymentRollback": True}}
    assert len(emu.deployments) == 8


async def test_drop_after_keeps_the_errors_of_what_ran(client: Client, world: World) -> None:
    world.emu.set_deployment(world.v1.id, can_rollback=False)
    world.emu.set_faults(drop_after_count=1)
    with pytest.raises(aiohttp.ServerDisconnectedError):
        await client.gql(ROLLBACK, {"id": world.v1.id})
    last = world.emu.requests[-1]
    assert (last.status, last.fault, last.errors) == (
        0,
        "drop-after",
        ("Deployment cannot be rolled back",),
    )
    assert [(m.ok, m.error) for m in world.emu.mutations] == [
        (False, "Deployment cannot be rolled back")
    ]


async def test_fault_operations_aim_the_error_and_drop_faults(client: Client, world: World) -> None:
    emu = world.emu
    emu.set_faults(drop_count=1, error_count=1, fault_operations=["Roll"])
    assert (await client.gql(STATUS, {"id": world.v3.id})).status == 200
    assert (await client.gql(LIST, {"input": {"serviceId": world.web}})).status == 200
    with pytest.raises(aiohttp.ServerDisconnectedError):
        await client.gql(ROLLBACK, {"id": world.v2.id})  # dropped before it ran
    assert emu.mutations == []
    assert (await client.gql(ROLLBACK, {"id": world.v2.id})).status == 503
    assert (await client.gql(ROLLBACK, {"id": world.v2.id})).status == 200
    assert [(r.operation_name, r.status, r.fault) for r in emu.requests] == [
        ("S", 200, None),
        ("List", 200, None),
        ("Roll", 0, "drop"),
        ("Roll", 503, "error"),
        ("Roll", 200, None),
    ]
    assert [m.name for m in emu.mutations] == ["deploymentRollback"]
    # The ratio is aimed too; an anonymous operation is never named in the list.
    emu.set_faults(error_ratio=1.0)
    assert (await client.gql("{ __typename }")).status == 200
    assert (await client.gql(ROLLBACK, {"id": world.v2.id})).status == 503
    emu.set_faults(fault_operations=None)
    assert (await client.gql("{ __typename }")).status == 503


def test_faults_are_validated(world: World) -> None:
    with pytest.raises(ValueError, match="errorRatio"):
        world.emu.set_faults(error_ratio=2)
    assert Faults.model_validate({"errorCount": 3}).error_count == 3


async def test_request_log_records_exactly_one_mutation(client: Client, world: World) -> None:
    await client.gql(LIST, {"input": {"serviceId": world.web}})
    await client.gql(ROLLBACK, {"id": world.v2.id})
    log = await client.control("GET", "requests")
    assert [r["operationType"] for r in log.body["requests"]] == ["query", "mutation"]
    assert log.body["requests"][1]["variables"] == {"id": world.v2.id}
    assert log.body["requests"][1]["operationName"] == "Roll"
    assert [(m["name"], m["arguments"]) for m in log.body["mutations"]] == [
        ("deploymentRollback", {"id": world.v2.id})
    ]
    cleared = await client.control("DELETE", "requests")
    assert cleared.body == {"requests": [], "mutations": []}


# -- control API -------------------------------------------------------------------------------


async def test_control_api_builds_a_world(client: Client, world: World) -> None:
    project = await client.control("POST", "projects", {"name": "demo"})
    assert project.status == 201
    pid = project.body["id"]
    env = (
        await client.control("POST", "environments", {"projectId": pid, "name": "production"})
    ).body
    svc = (await client.control("POST", "services", {"projectId": pid, "name": "api"})).body
    old = await client.control(
        "POST",
        "deployments",
        {
            "serviceId": svc["id"],
            "environmentId": env["id"],
            "meta": {"commitHash": "abc"},
            "createdAt": "2023-11-14T20:00:00Z",
        },
    )
    assert old.status == 201
    assert old.body["status"] == "SUCCESS"
    new = await client.control(
        "POST",
        "deployments",
        {"serviceId": svc["id"], "environmentId": env["id"], "id": "fixed-id"},
    )
    assert new.body["id"] == "fixed-id"
    assert world.emu.deployments[old.body["id"]].status == "REMOVED"
    patched = await client.control("PATCH", "deployments/fixed-id", {"status": "CRASHED"})
    assert patched.body["status"] == "CRASHED"
    for path, body in [
        ("memory", {"deploymentId": "fixed-id", "usageGb": 0.2, "limitGb": 0.5}),
        (
            "metrics",
            {"deploymentId": "fixed-id", "measurement": "CPU_USAGE", "value": 0.3, "at": 5},
        ),
        (
            "http",
            {"serviceId": svc["id"], "environmentId": env["id"], "statusCode": 500, "count": 3},
        ),
        (
            "traffic",
            {"serviceId": svc["id"], "environmentId": env["id"], "rps": 5, "errorRatio": 0.1},
        ),
    ]:
        reply = await client.control("POST", path, body)
        assert (reply.status, reply.body) == (201, {"ok": True}), path
    assert world.emu.metric_value(world.emu.deployments["fixed-id"], "CPU_USAGE", 10) == 0.3
    token = await client.control("POST", "tokens", {"projectId": pid, "environmentId": env["id"]})
    assert token.body["scope"] == "project"
    seen = await client.gql(
        STATUS, {"id": "fixed-id"}, headers={"Project-Access-Token": token.body["token"]}
    )
    assert seen.body["data"]["deployment"]["status"] == "CRASHED"
    account = await client.control("POST", "tokens", {"token": "t2"})
    assert account.body == {"token": "t2", "scope": "account"}
    state = await client.control("GET", "state")
    assert {p["name"] for p in state.body["projects"]} == {"shop", "other", "demo"}
    assert {
        "serviceId": svc["id"],
        "environmentId": env["id"],
        "deploymentId": "fixed-id",
    } in state.body["active"]


async def test_control_api_faults(client: Client, world: World) -> None:
    updated = await client.control("POST", "faults", {"errorCount": 1, "latency": 0})
    assert updated.body["errorCount"] == 1
    assert updated.body["rateLimit"] == 1000
    assert (updated.body["dropAfterCount"], updated.body["faultOperations"]) == (0, None)
    assert (await client.control("GET", "faults")).body == updated.body
    assert (await client.gql("{ __typename }")).status == 503


async def test_control_api_crash_loops(client: Client, world: World) -> None:
    live = world.v3.id
    started = await client.control(
        "POST", "crash-loops", {"deploymentId": live, "period": 2, "maxRestarts": None}
    )
    assert started.status == 201
    assert (started.body["id"], started.body["status"]) == (live, "SUCCESS")
    state = await client.control("GET", "state")
    assert state.body["crashLoops"] == [{"deploymentId": live, "period": 2.0, "maxRestarts": None}]
    await world.clock.advance(2)
    assert await instances(client, live) == ("SUCCESS", ["RESTARTING"])
    stopped = await client.control("DELETE", f"crash-loops/{live}")
    assert stopped.status == 200
    assert (stopped.body["restarts"], stopped.body["instances"][0]["status"]) == (1, "RUNNING")
    assert (await client.control("GET", "state")).body["crashLoops"] == []
    assert (await client.control("DELETE", f"crash-loops/{live}")).status == 200
    unknown = await client.control("DELETE", "crash-loops/nope")
    assert (unknown.status, unknown.body["errors"][0]["field"]) == (404, "deploymentId")
    removed = await client.control("POST", "crash-loops", {"deploymentId": world.v1.id})
    assert (removed.status, removed.body["errors"][0]["field"]) == (400, "deploymentId")
    defaults = await client.control("POST", "crash-loops", {"deploymentId": live})
    assert defaults.status == 201
    assert [(c.period, c.max_restarts) for c in world.emu.crash_loops] == [(5.0, 10)]
    await world.clock.advance(55)  # ten restarts, then the eleventh exit is final
    assert await instances(client, live) == ("CRASHED", ["CRASHED"])
    assert world.emu.deployments[live].restarts == 11


@pytest.mark.parametrize(
    ("path", "body", "status", "field"),
    [
        pytest.param("services", {"name": "x"}, 400, "projectId", id="missing"),
        pytest.param("projects", {"name": "x", "colour": "red"}, 400, "colour", id="extra"),
        pytest.param("projects", {"name": ""}, 400, "name", id="empty"),
        pytest.param("faults", {"errorRatio": 2}, 400, "errorRatio", id="ratio"),
        pytest.param("faults", {"deployOutcome": "MAYBE"}, 400, "deployOutcome", id="outcome"),
        pytest.param("services", {"projectId": "nope", "name": "x"}, 404, "projectId", id="404"),
        pytest.param(
            "deployments", {"serviceId": "nope", "environmentId": "x"}, 404, "serviceId", id="svc"
        ),
        pytest.param(
            "metrics",
            {"deploymentId": "x", "measurement": "M", "value": 1},
            404,
            "deploymentId",
            id="dep",
        ),
        pytest.param("tokens", {"projectId": "p"}, 400, None, id="token-env"),
        pytest.param("memory", [1, 2], 400, None, id="not-an-object"),
        pytest.param("faults", {"dropAfterCount": -1}, 400, "dropAfterCount", id="drop-after"),
        pytest.param("faults", {"faultOperations": []}, 400, "faultOperations", id="no-ops"),
        pytest.param("crash-loops", {}, 400, "deploymentId", id="crash-no-id"),
        pytest.param("crash-loops", {"deploymentId": "x"}, 404, "deploymentId", id="crash-404"),
        pytest.param(
            "crash-loops", {"deploymentId": "x", "period": 0}, 400, "period", id="crash-period"
        ),
        pytest.param(
            "crash-loops", {"deploymentId": "x", "maxRestarts": -1}, 400, "maxRestarts", id="max"
        ),
        pytest.param(
            "deployments",
            {"serviceId": "s", "environmentId": "e", "replicas": 0},
            400,
            "replicas",
            id="replicas",
        ),
    ],
)
async def test_control_api_validation_names_the_field(
    client: Client, path: str, body: Any, status: int, field: str | None
) -> None:
    reply = await client.control("POST", path, body)
    assert reply.status == status
    assert reply.body["errors"][0]["field"] == field
    assert reply.body["errors"][0]["message"]


async def test_control_api_model_errors_name_the_field(client: Client, world: World) -> None:
    wrong_status = await client.control(
        "POST", "deployments", {"serviceId": world.web, "environmentId": world.prod, "status": "OK"}
    )
    assert (wrong_status.status, wrong_status.body["errors"][0]["field"]) == (400, "status")
    cross = await client.control(
        "POST",
        "deployments",
        {"serviceId": world.web, "environmentId": world.foreign.environment_id},
    )
    assert (cross.status, cross.body["errors"][0]["field"]) == (400, "environmentId")
    measurement = await client.control(
        "POST", "metrics", {"deploymentId": world.v3.id, "measurement": "HEAT", "value": 1}
    )
    assert measurement.body["errors"][0]["field"] == "measurement"
    url = client.server.make_url("/_emulator/projects")
    async with client.session.post(url, data=b"{oops") as response:
        assert response.status == 400
        assert (await response.json())["errors"][0]["message"] == "body must be JSON"


def test_model_validates_traffic(world: World) -> None:
    with pytest.raises(EmulatorError) as caught:
        world.emu.set_traffic(world.web, world.prod, -1)
    assert caught.value.field == "rps"
    with pytest.raises(EmulatorError) as caught:
        world.emu.set_traffic(world.web, world.prod, 1, error_ratio=1.5)
    assert caught.value.field == "errorRatio"
    with pytest.raises(EmulatorError) as caught:
        world.emu.record_http(world.web, world.foreign.environment_id, 200, 1)
    assert caught.value.field == "environmentId"


async def test_the_model_runs_without_http(clock: FakeClock) -> None:
    model = EmulatorModel(clock, rollout=())
    project = model.add_project("p", id="p1")
    env = model.add_environment(project.id, "production")
    svc = model.add_service(project.id, "web")
    first = model.add_deployment(svc.id, env.id)
    crashed = model.add_deployment(svc.id, env.id, status="CRASHED", active=False)
    model.remove(crashed)
    assert model.active[(svc.id, env.id)] == first.id
    again = model.start_deployment(first, rollback=False)
    assert again.status == "SUCCESS"
    await clock.advance(0)
    assert model.active[(svc.id, env.id)] == again.id
    assert first.status == "REMOVED"
