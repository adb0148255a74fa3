"""The emulator's platformStatus: Railway's own incidents and maintenance, over real HTTP."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from monitor.clock import FakeClock
from monitor.railway.schema import validate_document
from monitor.sandbox.emulator_model import EmulatorError, iso
from monitor.sandbox.railway_emulator import RailwayEmulator

TOKEN = "account-token"
STATUS = """
query Status {
  platformStatus {
    isStable
    incident { id message status url createdAt }
    maintenance { id message status url start }
  }
}"""


class Client:
    """GraphQL and the control API over a real socket."""

    def __init__(self, server: TestServer, session: aiohttp.ClientSession) -> None:
        self.server, self.session = server, session

    async def status(self, token: str | None = TOKEN) -> tuple[int, dict[str, Any]]:
        headers = {} if token is None else {"Authorization": f"Bearer {token}"}
        url = self.server.make_url("/graphql/v2")
        async with self.session.post(url, json={"query": STATUS}, headers=headers) as response:
            return response.status, await response.json()

    async def platform(self) -> dict[str, Any]:
        status, body = await self.status()
        assert status == 200, body
        return dict(body["data"]["platformStatus"])

    async def control(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        url = self.server.make_url(f"/_emulator/{path}")
        async with self.session.request(method, url, json=body) as response:
            return response.status, await response.json()


@pytest.fixture
def emu(clock: FakeClock) -> RailwayEmulator:
    return RailwayEmulator(clock, tokens=[TOKEN])


@pytest.fixture
async def client(emu: RailwayEmulator) -> AsyncIterator[Client]:
    async with TestServer(emu.app, host="127.0.0.1") as server, aiohttp.ClientSession() as s:
        yield Client(server, s)


def test_the_query_validates_against_railways_schema() -> None:
    assert validate_document(STATUS) == []


async def test_railway_is_stable_by_default(client: Client) -> None:
    assert await client.platform() == {"isStable": True, "incident": None, "maintenance": None}


async def test_an_incident_opens_and_closes(
    client: Client, emu: RailwayEmulator, clock: FakeClock
) -> None:
    incident = emu.platform.open_incident("Edge failing in every region", id="inc-1")
    answer = await client.platform()
    assert answer["isStable"] is False
    assert answer["incident"] == {
        "id": "inc-1",
        "message": "Edge failing in every region",
        "status": "INVESTIGATING",
        "url": "https://status.railway.com/incidents/inc-1",
        "createdAt": iso(clock.time()),
    }
    emu.platform.open_incident(incident.message, status="MONITORING", id="inc-1")
    assert (await client.platform())["incident"]["status"] == "MONITORING"  # the same one
    emu.platform.open_incident(incident.message, status="RESOLVED", id="inc-1")
    resolved = await client.platform()
    assert (resolved["isStable"], resolved["incident"]["status"]) == (True, "RESOLVED")
    emu.platform.close_incident()
    assert await client.platform() == {"isStable": True, "incident": None, "maintenance": None}


async def test_maintenance_leaves_stability_alone_unless_told(
    client: Client, emu: RailwayEmulator
) -> None:
    emu.platform.start_maintenance("Database upgrade", id="m-1", url="https://example.com/m")
    answer = await client.platform()
    assert answer["isStable"] is True
    assert answer["maintenance"]["status"] == "INPROGRESS"
    assert answer["maintenance"]["url"] == "https://example.com/m"
    assert "start" in answer["maintenance"]
    emu.platform.stable = False
    assert (await client.platform())["isStable"] is False
    emu.platform.end_maintenance()
    emu.platform.stable = None
    assert await client.platform() == {"isStable": True, "incident": None, "maintenance": None}


async def test_platform_status_needs_no_project_access(client: Client) -> None:
    """Railway's status is public: the emulator answers it for any caller."""
    status, body = await client.status(token=None)
    assert (status, body["data"]["platformStatus"]["isStable"]) == (200, True)


async def test_an_injected_error_nulls_the_whole_answer(
    client: Client, emu: RailwayEmulator
) -> None:
    """platformStatus is non-null: an error on it nulls ``data``, as on Railway."""
    emu.platform.error = "Internal server error"
    status, body = await client.status()
    assert status == 200
    assert body["data"] is None
    assert body["errors"][0]["message"] == "Internal server error"
    assert body["errors"][0]["path"] == ["platformStatus"]


def test_statuses_are_the_schemas(emu: RailwayEmulator) -> None:
    with pytest.raises(EmulatorError) as caught:
        emu.platform.open_incident("x", status="ONGOING")
    assert caught.value.field == "status"
    with pytest.raises(EmulatorError):
        emu.platform.start_maintenance("x", status="INVESTIGATING")


async def test_the_control_api_opens_and_closes_them(client: Client, emu: RailwayEmulator) -> None:
    status, state = await client.control(
        "POST", "platform/incident", {"message": "Deploys paused", "status": "IDENTIFIED"}
    )
    assert status == 201
    assert (state["isStable"], state["incident"]["status"]) == (False, "IDENTIFIED")
    assert (await client.platform())["incident"]["message"] == "Deploys paused"
    status, state = await client.control(
        "POST", "platform/maintenance", {"message": "Upgrade", "at": "2023-11-14T22:00:00"}
    )
    assert (status, state["maintenance"]["status"]) == (201, "INPROGRESS")
    assert (await client.platform())["maintenance"]["start"] == "2023-11-14T22:00:00.000Z"
    status, state = await client.control("DELETE", "platform/incident")
    assert (status, state["incident"], state["isStable"]) == (200, None, True)
    status, state = await client.control("DELETE", "platform/maintenance")
    assert (status, state["maintenance"]) == (200, None)
    status, state = await client.control("POST", "platform", {"stable": False, "error": "boom"})
    assert (state["isStable"], state["error"]) == (False, "boom")
    status, state = await client.control("POST", "platform", {"error": None})
    assert (state["stable"], state["error"]) == (False, None)  # only the keys given change
    assert (await client.control("GET", "platform"))[1] == state
    assert (await client.control("GET", "state"))[1]["platform"] == state
    assert emu.platform.state() == state


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("platform/incident", {"message": "x", "status": "ONGOING"}, "status"),
        ("platform/incident", {"status": "INVESTIGATING"}, "message"),
        ("platform/maintenance", {"message": "x", "status": "RESOLVED"}, "status"),
        ("platform", {"isStable": False}, "isStable"),
        ("platform", {"stable": "maybe"}, "stable"),
    ],
)
async def test_the_control_api_refuses_what_railway_could_not_say(
    client: Client, path: str, body: Any, field: str
) -> None:
    status, reply = await client.control("POST", path, body)
    assert status == 400
    assert reply["errors"][0]["field"] == field
