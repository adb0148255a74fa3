"""The packaged Railway schema builds and rejects what Railway would reject."""

from __future__ import annotations

import hashlib
from pathlib import Path

import graphql
import pytest

from monitor.model import Signal
from monitor.railway.document import Target, build_document
from monitor.railway.schema import check_document, describe, load_schema, validate_document
from monitor.sources.railway import RailwayErrorRate, RailwayLatency, RailwayMemory

SHARED = Path(__file__).resolve().parents[3] / "shared" / "railway"
PACKAGED = Path(__file__).resolve().parents[2] / "monitor" / "railway" / "schema.json"


def test_schema_builds_once_and_is_valid() -> None:
    schema = load_schema()
    assert load_schema() is schema
    assert graphql.validate_schema(schema) == []
    assert schema.query_type is not None
    assert schema.mutation_type is not None
    assert "deploymentRollback" in schema.mutation_type.fields


def _cli_examples() -> list[Path]:
    return sorted((SHARED / "cli-examples").glob("*/*.graphql"))


@pytest.mark.skipif(not (SHARED / "cli-examples").is_dir(), reason="shared CLI examples absent")
def test_every_cli_example_validates() -> None:
    examples = _cli_examples()
    assert examples
    problems = {p.name: validate_document(p.read_text()) for p in examples}
    assert {name: errs for name, errs in problems.items() if errs} == {}


@pytest.mark.skipif(not (SHARED / "schema.json").is_file(), reason="shared schema absent")
def test_packaged_copy_is_identical_to_the_shared_snapshot() -> None:
    def digest(path: Path) -> str:
        return hashlib.sha256(path.read_bytes()).hexdigest()

    assert digest(PACKAGED) == digest(SHARED / "schema.json")


def test_the_poll_document_with_deployment_targets_validates() -> None:
    rate = RailwayErrorRate(source="railway")
    targets = [Target("a", "s", "e", deployment=True), Target("b", "s", "e", rate, deployment=True)]
    document = build_document(targets)
    assert validate_document(document) == []
    assert document.count("instances { id status }") == 2
    assert document.count("platformStatus { isStable incident {") == 1  # Railway's own status
    assert validate_document(build_document(targets, platform=False)) == []


def test_the_poll_document_with_latency_targets_validates() -> None:
    rate = RailwayErrorRate(source="railway")
    latency = RailwayLatency(source="railway")
    slow_steps = RailwayLatency(source="railway", step=30)
    p95 = (Signal.LATENCY_P95,)
    targets = [
        Target("a", "s", "e", latency=latency, quantiles=p95),  # its own request counts
        Target("b", "s", "e", rate, latency=latency, quantiles=p95),  # shares the error rate's
        Target("c", "s", "e", rate, RailwayMemory(source="railway"), slow_steps, p95, True),
    ]
    document = build_document(targets)
    assert validate_document(document) == []
    assert document.count("httpDurationMetrics(") == 3
    assert document.count("samples { ts p50 p90 p95 p99 }") == 3
    assert "n0: httpMetricsGroupedByStatus(" in document
    assert "n1:" not in document  # b's latency steps are its error rate's: h1 serves both
    assert "n2: httpMetricsGroupedByStatus(serviceId: $s2, environmentId: $e2, " in document
    assert "stepSeconds: 30) { statusCode" in document
    assert validate_document(build_document(targets[:1], platform=False)) == []


def test_valid_rollback_and_batched_queries_pass() -> None:
    source = """
    query Tick($since: DateTime!) {
      web: deployments(input: {serviceId: "s1", status: {in: [SUCCESS]}}, first: 5) {
        edges { node { id status createdAt canRollback meta } }
      }
      mem: metrics(serviceId: "s1", startDate: $since, measurements: [MEMORY_USAGE_GB],
                   groupBy: [DEPLOYMENT_ID]) {
        measurement tags { deploymentId } values { ts value }
      }
    }
    mutation Roll($id: String!) { deploymentRollback(id: $id) }
    """
    assert validate_document(source) == []


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        pytest.param(
            '{ deployments(input: {serviceId: "x"}, successfulOnly: true) { edges { cursor } } }',
            "Unknown argument 'successfulOnly'",
            id="unknown-argument",
        ),
        pytest.param(
            '{ metrics(deploymentId: "d", startDate: "2024-01-01T00:00:00Z",'
            " measurements: [MEMORY_USAGE_GB]) { measurement } }",
            "Unknown argument 'deploymentId' on field 'Query.metrics'",
            id="metrics-has-no-deployment-id",
        ),
        pytest.param(
            "{ deployments(input: {status: {successfulOnly: true}}) { edges { cursor } } }",
            "Field 'successfulOnly' is not defined by type 'DeploymentStatusInput'",
            id="status-input-has-only-in-notin",
        ),
        pytest.param(
            "{ deployment { id } }",
            "argument 'id' of type 'String!' is required",
            id="missing-required-argument",
        ),
        pytest.param(
            '{ deployment(id: "x") { idd } }',
            "Cannot query field 'idd' on type 'Deployment'",
            id="unknown-field",
        ),
        pytest.param(
            'mutation { deploymentRollback(id: "x") { id } }',
            "must not have a selection since type 'Boolean!' has no subfields",
            id="rollback-returns-boolean",
        ),
        pytest.param(
            '{ deployment(id: "x") { instances } }',
            "must have a selection of subfields",
            id="instances-need-a-selection",
        ),
        pytest.param("query {", "Syntax Error", id="syntax"),
    ],
)
def test_invalid_documents_are_rejected(source: str, expected: str) -> None:
    errors = validate_document(source)
    assert errors
    assert any(expected in e for e in errors), errors
    assert all("line " in e for e in errors)


def test_check_document_returns_the_parsed_document() -> None:
    document, errors = check_document('{ deployment(id: "x") { id } }')
    assert errors == []
    assert document is not None
    assert check_document("{")[0] is None


def test_describe_without_a_location_is_the_message() -> None:
    assert describe(graphql.GraphQLError("Not Authorized")) == "Not Authorized"
