"""A local Railway: Railway's GraphQL API at ``POST /graphql/v2`` over an in-memory account.

Requests are parsed, validated and executed by graphql-core against Railway's published schema
(monitor/railway/schema.json), so a field, argument or type Railway does not have is refused
here as it is there. Behaviour chosen to match what Railway's API and its CLI show:

- Auth: ``Authorization: Bearer <account or workspace token>`` sees every project;
  ``Project-Access-Token: <token>`` sees only its project's environment and wins when both
  headers are sent (Railway's CLI sends one or the other, the project token first). A missing
  or wrong token is not an HTTP error: the answer is HTTP 200 with ``data: null`` and
  ``errors: [{"message": "Not Authorized", "path": [...]}]``, which is what Railway returns
  and what its CLI tests for. A known resource outside a project token's scope is also
  "Not Authorized"; an unknown id is "Deployment not found" (or "Service not found" ...).
- A document that does not parse or validate, or whose variables do not coerce, is a request
  error: HTTP 400 with ``{"errors": [...]}`` carrying graphql-core's messages; nothing runs.
- Every answer of ``/graphql/v2`` carries ``X-RateLimit-Limit``, ``X-RateLimit-Remaining``
  and ``X-RateLimit-Reset`` (Unix seconds at which the window resets; ``reset_unit`` in the
  faults sends it as seconds until the reset or Unix milliseconds instead, since Railway does
  not document it); over the limit the answer is HTTP 429 with ``Retry-After`` (seconds).
  The query string (``?source=...``) and the headers (``x-source``: Railway's CLI names
  itself there) are recorded, credentials left out, and otherwise ignored.
- Injected faults (:class:`Faults`) apply in this order: latency, dropped connection, rate
  limit, 5xx; then the request runs; then a drop after the fact (``drop_after_count``: the
  request ran, a mutation was applied, but the connection closes unanswered). Latency waits
  on the injected Clock. ``fault_operations`` limits the error and drop faults to requests
  with those operation names (a dropped ``DeploymentRollback`` while polls go through, say).
  A dropped request is logged with status 0 and fault ``drop`` or ``drop-after``.

- Image retention (emulator_images): with a retention set, a deployment older than it has
  ``canRollback`` false and ``deploymentRollback`` refuses it; ``serviceInstanceDeployV2``
  builds a commit again (BUILDING on the rollout model) and answers the new deployment's id.

The control API under ``/_emulator/`` (see emulator_control) and the Python API inherited from
:class:`EmulatorModel` build the world and set faults; ``platform`` is Railway's own status
(its incidents and maintenance: emulator_platform); ``requests`` and ``mutations`` record
what reached the emulator.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import random
import secrets
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from http.client import responses
from typing import Any

import graphql
from aiohttp import web
from graphql import (
    DocumentNode,
    FieldNode,
    GraphQLError,
    OperationDefinitionNode,
    OperationType,
    get_operation_ast,
)
from pydantic.alias_generators import to_camel

from monitor.clock import Clock
from monitor.railway.schema import load_schema
from monitor.sandbox.emulator_control import Faults, camel, control_routes
from monitor.sandbox.emulator_model import DEFAULT_ROLLOUT, EmulatorError, EmulatorModel
from monitor.sandbox.emulator_nodes import MutationRecord, RequestContext, Scope
from monitor.sandbox.emulator_platform import Platform
from monitor.sandbox.emulator_resolvers import resolve_field

__all__ = ["Faults", "MutationRecord", "RailwayEmulator", "RequestRecord", "Scope"]

GRAPHQL_PATH = "/graphql/v2"


@dataclass(frozen=True)
class RequestRecord:
    """A request to ``/graphql/v2`` and how it was answered (status 0: dropped)."""

    at: float
    status: int
    operation_name: str | None = None
    operation_type: str | None = None
    fields: tuple[str, ...] = ()
    variables: dict[str, Any] = field(default_factory=dict)
    errors: tuple[str, ...] = ()
    fault: str | None = None
    # What the client sent besides the body: headers (lower-case names, credentials left
    # out) and the query string (``?source=...``).
    headers: Mapping[str, str] = field(default_factory=dict)
    query: Mapping[str, str] = field(default_factory=dict)


@dataclass
class _Incoming:
    """A POSTed GraphQL request, as far as it could be read."""

    record: RequestRecord
    problem: str | None = None
    document: DocumentNode | None = None
    errors: Sequence[GraphQLError] = ()


class RailwayEmulator(EmulatorModel):
    """Railway's GraphQL API over an in-memory account; ``app`` is the aiohttp application."""

    def __init__(
        self,
        clock: Clock,
        *,
        tokens: Iterable[str] = (),
        faults: Faults | None = None,
        rollout: Sequence[tuple[str, float]] = DEFAULT_ROLLOUT,
        seed: int = 0,
    ) -> None:
        super().__init__(clock, seed=seed, rollout=rollout)
        self.faults = faults or Faults()
        self.requests: list[RequestRecord] = []
        self.in_flight: Counter[str] = Counter()  # requests held by the latency fault, by type
        self.mutations: list[MutationRecord] = []
        self.platform = Platform(clock)  # Railway's own incidents and maintenance
        self._account_tokens = set(tokens)
        self._project_tokens: dict[str, Scope] = {}
        self._windows: dict[str, tuple[float, int]] = {}
        self._chance = random.Random(seed)
        self.app = web.Application()
        self.app.router.add_post(GRAPHQL_PATH, self._graphql)
        self.app.router.add_routes(control_routes(self))
        self.app.on_cleanup.append(self._cleanup)

    # -- Python API beyond the model ---------------------------------------------------------

    def add_token(self, token: str | None = None) -> str:
        """Accept an account token (``Authorization: Bearer``); returns it."""
        token = token or secrets.token_hex(16)
        self._account_tokens.add(token)
        return token

    def add_project_token(
        self, project_id: str, environment_id: str, *, token: str | None = None
    ) -> str:
        """Accept a project token (``Project-Access-Token``) for one environment."""
        self.project(project_id)
        if self.environment(environment_id).project_id != project_id:
            raise EmulatorError("environment is not in that project", "environmentId")
        token = token or secrets.token_hex(16)
        self._project_tokens[token] = Scope(project_id, environment_id)
        return token

    def set_faults(self, **changes: Any) -> Faults:
        """Change some faults (validated; snake_case or camelCase names)."""
        camel_changes = {to_camel(k): v for k, v in changes.items()}
        self.faults = Faults.model_validate(self.faults.model_dump(by_alias=True) | camel_changes)
        return self.faults

    def mutation_calls(self, name: str) -> list[MutationRecord]:
        """The mutations named ``name`` that reached a resolver, oldest first."""
        return [m for m in self.mutations if m.name == name]

    def rollout_outcome(self) -> str:
        """New deployments settle in the status the faults say (SUCCESS unless injected)."""
        return self.faults.deploy_outcome

    def state(self) -> dict[str, Any]:
        """The whole world as JSON (for the control API and debugging)."""
        return {
            "projects": [camel(p) for p in self.projects.values()],
            "environments": [camel(e) for e in self.environments.values()],
            "services": [camel(s) for s in self.services.values()],
            "deployments": [
                camel(d) | {"canRollback": self.images.kept(d)} for d in self.newest_first()
            ],
            "active": [
                {"serviceId": s, "environmentId": e, "deploymentId": d}
                for (s, e), d in self.active.items()
            ],
            "crashLoops": [camel(loop) for loop in self.crash_loops],
            "platform": self.platform.state(),
            "imageRetentionHours": self.images.hours,
        }

    # -- HTTP --------------------------------------------------------------------------------

    async def _graphql(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        if self.faults.latency > 0:
            # The request is on its way: a client killed now has sent it, Railway not run it.
            operation = _read(raw, self.clock.time()).record.operation_type
            self.in_flight[operation or "unknown"] += 1
            try:
                await self.clock.sleep(self.faults.latency)
            finally:
                self.in_flight[operation or "unknown"] -= 1
        incoming = _read(raw, self.clock.time())
        incoming.record = dataclasses.replace(
            incoming.record, headers=_sent_headers(request), query=dict(request.query)
        )
        targeted = self._targeted(incoming.record)
        if targeted and self.faults.drop_count > 0:
            self.faults.drop_count -= 1
            self._log(incoming.record, 0, (), fault="drop")
            return _drop(request)
        headers, retry_after = self._rate(self._caller(request))
        if retry_after is not None:
            headers["Retry-After"] = str(retry_after)
            message = "Too many requests. Slow down."
            self._log(incoming.record, 429, (message,), fault="rate-limit")
            return web.json_response(
                {"errors": [{"message": message}]}, status=429, headers=headers
            )
        if targeted and (
            self.faults.error_count > 0 or self._chance.random() < self.faults.error_ratio
        ):
            self.faults.error_count = max(0, self.faults.error_count - 1)
            status = self.faults.error_status
            self._log(incoming.record, status, (), fault="error")
            # An edge error, as Railway's proxy sends it: plain text, not GraphQL.
            text = responses.get(status, "Server Error")
            return web.Response(status=status, text=text, headers=headers)
        status, body = self._run(incoming, self._scope(request))
        messages = [str(e.get("message")) for e in body.get("errors", [])]
        if targeted and self.faults.drop_after_count > 0:
            # What ran stays done (the mutation log says so); only the answer is lost.
            self.faults.drop_after_count -= 1
            self._log(incoming.record, 0, messages, fault="drop-after")
            return _drop(request)
        self._log(incoming.record, status, messages)
        return web.json_response(body, status=status, headers=headers)

    def _targeted(self, record: RequestRecord) -> bool:
        """Whether the error and drop faults apply to this request (``fault_operations``)."""
        names = self.faults.fault_operations
        return names is None or record.operation_name in names

    def _log(
        self, record: RequestRecord, status: int, errors: Iterable[str], fault: str | None = None
    ) -> None:
        self.requests.append(
            dataclasses.replace(record, status=status, errors=tuple(errors), fault=fault)
        )

    def _run(self, incoming: _Incoming, scope: Scope | None) -> tuple[int, Mapping[str, Any]]:
        """Validate and execute a request: its HTTP status and GraphQL response."""
        if incoming.problem is not None:
            return 400, {"errors": [{"message": incoming.problem}]}
        document, record = incoming.document, incoming.record
        errors = list(incoming.errors)
        if not errors and record.operation_type == OperationType.SUBSCRIPTION.value:
            errors = [GraphQLError("Subscriptions are served over WebSocket, not POST")]
        if document is None or errors:
            return 400, {"errors": [e.formatted for e in errors]}
        # The resolvers never await, so execution stays synchronous.
        result = graphql.execute_sync(
            load_schema(),
            document,
            variable_values=record.variables,
            operation_name=record.operation_name,
            context_value=RequestContext(self, scope, self.mutations, self.platform),
            field_resolver=resolve_field,
        )
        # Errors with no path come from before execution (variables, operation name).
        early = result.data is None and all(e.path is None for e in result.errors or ())
        return 400 if early else 200, result.formatted

    def _scope(self, request: web.Request) -> Scope | None:
        project_token = request.headers.get("Project-Access-Token")
        if project_token is not None:
            return self._project_tokens.get(project_token.strip())
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() == "bearer" and token.strip() in self._account_tokens:
            return Scope()
        return None

    @staticmethod
    def _caller(request: web.Request) -> str:
        token = request.headers.get("Project-Access-Token") or request.headers.get("Authorization")
        return token or f"ip:{request.remote}"

    def _rate(self, caller: str) -> tuple[dict[str, str], int | None]:
        """Count the request in its fixed window; the headers, and Retry-After when over."""
        now = self.clock.time()
        limit, window = self.faults.rate_limit, self.faults.rate_window
        start = math.floor(now / window) * window
        seen_start, count = self._windows.get(caller, (start, 0))
        count = count if seen_start == start else 0
        over = count >= limit
        if not over:
            count += 1
            self._windows[caller] = (start, count)
        reset = {
            "unix": math.ceil(start + window),
            "seconds": math.ceil(start + window - now),
            "unix_ms": math.ceil((start + window) * 1000),
        }[self.faults.reset_unit]
        headers = {
            "X-RateLimit-Limit": str(limit),
            "X-RateLimit-Remaining": str(max(0, limit - count)),
            "X-RateLimit-Reset": str(reset),
        }
        return headers, max(1, math.ceil(start + window - now)) if over else None

    async def _cleanup(self, _app: web.Application) -> None:
        await self.aclose()


# Never kept in the request log: they carry tokens.
SECRET_HEADERS = frozenset({"authorization", "project-access-token", "cookie"})


def _sent_headers(request: web.Request) -> dict[str, str]:
    """The request's headers by lower-case name, credentials left out."""
    return {k.lower(): v for k, v in request.headers.items() if k.lower() not in SECRET_HEADERS}


def _drop(request: web.Request) -> web.StreamResponse:
    """Close the connection without an answer (the response returned is never sent)."""
    # aiohttp gives every request in flight a transport; the check is for mypy.
    if request.transport is not None:  # pragma: no branch
        request.transport.abort()
    return web.Response()


def _read(raw: bytes, now: float) -> _Incoming:
    """Read a POST body far enough to log it; problems wait until the request is answered."""
    record = RequestRecord(now, 0)
    try:
        payload = json.loads(raw)
    except ValueError:
        return _Incoming(record, problem="POST body must be a JSON object")
    if not isinstance(payload, dict) or not isinstance(payload.get("query"), str):
        return _Incoming(record, problem="Must provide query string.")
    variables = payload.get("variables") or {}
    name = payload.get("operationName")
    if not isinstance(variables, dict) or not isinstance(name, str | None):
        return _Incoming(record, problem="variables must be an object, operationName a string")
    record = dataclasses.replace(record, operation_name=name, variables=variables)
    document, errors = _document(payload["query"])
    if document is None:
        return _Incoming(record, errors=errors)
    described = _describe(record, get_operation_ast(document, name))
    return _Incoming(described, document=document, errors=errors)


@functools.lru_cache(maxsize=256)
def _document(query: str) -> tuple[DocumentNode | None, tuple[GraphQLError, ...]]:
    """A query's document and what validating it against the schema found. A client sends
    the same few texts again and again (railguard's own are constants), so each is parsed and
    validated once, as GraphQL servers cache documents; execution never changes one."""
    try:
        document = graphql.parse(query)
    except GraphQLError as error:
        return None, (error,)
    return document, tuple(graphql.validate(load_schema(), document))


def _describe(record: RequestRecord, operation: OperationDefinitionNode | None) -> RequestRecord:
    """The record with the operation's name, type and root fields."""
    if operation is None:
        return record
    return dataclasses.replace(
        record,
        operation_name=record.operation_name or (operation.name.value if operation.name else None),
        operation_type=operation.operation.value,
        fields=tuple(
            s.name.value for s in operation.selection_set.selections if isinstance(s, FieldNode)
        ),
    )
