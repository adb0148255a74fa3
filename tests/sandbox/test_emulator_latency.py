"""The emulator's httpDurationMetrics: quantiles in ms of the requests it counts by status."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from statistics import NormalDist
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from monitor.clock import FakeClock
from monitor.railway.schema import validate_document
from monitor.sandbox.emulator_latency import quantile
from monitor.sandbox.emulator_model import EmulatorError
from monitor.sandbox.railway_emulator import RailwayEmulator

TOKEN = "latency-token"
NOW = 1_699_999_200.0  # a round hour: buckets line up with the seeded times
Z = {f"p{round(q * 100)}": NormalDist().inv_cdf(q) for q in (0.5, 0.9, 0.95, 0.99)}

DURATIONS = """
query D($s: String!, $e: String!, $start: DateTime!, $end: DateTime!, $step: Int, $code: Int) {
  httpDurationMetrics(serviceId: $s, environmentId: $e, startDate: $start, endDate: $end,
                      stepSeconds: $step, statusCode: $code) {
    samples { ts p50 p90 p95 p99 }
  }
}"""
BY_STATUS = """
query H($s: String!, $e: String!, $start: DateTime!, $end: DateTime!, $step: Int) {
  httpMetricsGroupedByStatus(serviceId: $s, environmentId: $e, startDate: $start,
                             endDate: $end, stepSeconds: $step) { statusCode samples { ts value } }
}"""


def iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat().replace("+00:00", "Z")


class Railway:
    """The emulator on 127.0.0.1 with one service in one environment."""

    def __init__(self, emu: RailwayEmulator, server: TestServer, session: aiohttp.ClientSession):
        self.emu, self.server, self.session = emu, server, session
        project = emu.add_project("shop")
        self.env = emu.add_environment(project.id, "production").id
        self.service = emu.add_service(project.id, "web").id

    async def post(self, url: str, body: dict[str, Any], **headers: str) -> dict[str, Any]:
        async with self.session.post(self.server.make_url(url), json=body, headers=headers) as r:
            answer: dict[str, Any] = await r.json()
            return answer

    async def query(self, document: str, **variables: Any) -> Any:
        assert validate_document(document) == []
        variables = {"s": self.service, "e": self.env, "end": iso(NOW), **variables}
        body = {"query": document, "variables": variables}
        answer = await self.post("/graphql/v2", body, Authorization=f"Bearer {TOKEN}")
        assert "errors" not in answer, answer
        return answer["data"]


@pytest.fixture
async def railway() -> AsyncIterator[Railway]:
    emu = RailwayEmulator(FakeClock(start=NOW), tokens=[TOKEN])
    server = TestServer(emu.app, host="127.0.0.1")
    async with server, aiohttp.ClientSession() as session:
        yield Railway(emu, server, session)
    await emu.aclose()


async def test_a_segment_gives_log_normal_quantiles_and_idle_steps_no_sample(
    railway: Railway,
) -> None:
    railway.emu.set_traffic(railway.service, railway.env, 2, at=NOW - 150, latency_ms=120)
    railway.emu.set_traffic(
        railway.service, railway.env, 2, at=NOW - 60, latency_ms=900, latency_sigma=0.3
    )
    data = await railway.query(DURATIONS, start=iso(NOW - 240), step=60)
    samples = data["httpDurationMetrics"]["samples"]
    assert [s["ts"] for s in samples] == [NOW - 180, NOW - 120, NOW - 60]  # NOW-240: no requests
    last = samples[-1]
    for key, z in Z.items():
        assert last[key] == pytest.approx(900 * math.exp(0.3 * z))
    assert samples[1]["p50"] == pytest.approx(120)  # the default spread, 0.5
    assert samples[1]["p99"] == pytest.approx(120 * math.exp(0.5 * Z["p99"]))
    # The step from NOW-180 served only the 120 ms segment (its first 30 s).
    assert samples[0]["p95"] == pytest.approx(samples[1]["p95"])
    counts = await railway.query(BY_STATUS, start=iso(NOW - 240), step=60)
    (ok,) = counts["httpMetricsGroupedByStatus"]
    assert [s["value"] for s in ok["samples"]] == [0.0, 60.0, 120.0, 120.0]


async def test_a_step_mixing_two_segments_sits_between_them(railway: Railway) -> None:
    emu = railway.emu
    emu.set_traffic(railway.service, railway.env, 1, at=NOW - 120, latency_ms=100, latency_sigma=0)
    emu.set_traffic(railway.service, railway.env, 9, at=NOW - 90, latency_ms=1000, latency_sigma=0)
    data = await railway.query(DURATIONS, start=iso(NOW - 120), step=60)
    first = data["httpDurationMetrics"]["samples"][0]  # 30 requests at 100ms, 270 at 1s
    assert first["p50"] == pytest.approx(1000)
    assert first["p90"] == pytest.approx(1000)
    assert quantile([(30, math.log(100), 0), (270, math.log(1000), 0)], 0.05) == pytest.approx(100)


async def test_recorded_requests_and_a_status_filter(railway: Railway) -> None:
    emu = railway.emu
    emu.record_http(railway.service, railway.env, 200, 99, at=NOW - 50, latency_ms=20)
    emu.record_http(railway.service, railway.env, 503, 1, at=NOW - 50, latency_ms=30_000)
    data = await railway.query(DURATIONS, start=iso(NOW - 60), step=60)
    (both,) = data["httpDurationMetrics"]["samples"]
    assert (both["p95"], both["p99"]) == (pytest.approx(20), pytest.approx(20))
    errors = await railway.query(DURATIONS, start=iso(NOW - 60), step=60, code=503)
    assert errors["httpDurationMetrics"]["samples"][0]["p50"] == pytest.approx(30_000)
    none = await railway.query(DURATIONS, start=iso(NOW - 60), step=60, code=404)
    assert none["httpDurationMetrics"]["samples"] == []


async def test_the_control_api_sets_a_segment_latency(railway: Railway) -> None:
    body = {"serviceId": railway.service, "environmentId": railway.env, "rps": 3}
    ok = await railway.post("/_emulator/traffic", {**body, "at": NOW - 60, "latencyMs": 700})
    assert ok == {"ok": True}
    data = await railway.query(DURATIONS, start=iso(NOW - 60), step=60)
    assert data["httpDurationMetrics"]["samples"][0]["p50"] == pytest.approx(700)
    refused = await railway.post("/_emulator/traffic", {**body, "latencyMs": -1})
    assert "latencyMs" in str(refused)
    with pytest.raises(EmulatorError, match="latencySigma"):
        railway.emu.set_traffic(railway.service, railway.env, 1, latency_sigma=9)
