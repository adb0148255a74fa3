"""Railway's GraphQL API: authenticated requests within the budget, retried when that is safe.

Every attempt takes a token from the :class:`~monitor.railway.budget.RequestBudget`, is counted
by operation and outcome, and hands Railway's ``X-RateLimit-*`` headers back to the budget.
Network errors, timeouts, 5xx and 429 are transient and retried with jittered exponential
backoff on the injected Clock, never sooner than a ``Retry-After``. An answer with GraphQL
``errors`` (invalid document, not found, not authorized) is permanent and never retried.

A mutation whose answer was lost may have been applied. :meth:`RailwayClient.execute` with
``retry_unsafe=False`` does not guess: it raises at once with ``maybe_applied=True`` and the
caller re-checks Railway's state. That covers a 5xx too (a gateway may answer 502/504 after
the backend applied it); only a 429, or a connection that never opened, is retried, because
nothing ran.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import aiohttp
import graphql
import structlog
import tenacity
from multidict import CIMultiDictProxy
from pydantic import SecretStr
from yarl import URL

from monitor import __version__
from monitor.clock import Clock
from monitor.errors import (
    RailwayAuthError,
    RailwayError,
    RailwayGraphQLError,
    RailwayProtocolError,
    RailwayTransientError,
)
from monitor.railway import answer_json, ratelimit, statuses
from monitor.railway.budget import Priority, RequestBudget
from monitor.telemetry import Metrics

log = structlog.get_logger("railguard.railway")

# What railguard reads of a deployment, wherever it asks (the poll, the executor, a lookup).
DEPLOYMENT_FIELDS = (
    "id status createdAt updatedAt statusUpdatedAt canRollback serviceId environmentId meta "
    "staticUrl instances { id status }"
)
DEPLOYMENT_QUERY = f"""query RailguardDeployment($id: String!) {{
  deployment(id: $id) {{ {DEPLOYMENT_FIELDS} }}
}}"""
DEPLOYMENTS_QUERY = f"""query RailguardDeployments($input: DeploymentListInput!, $first: Int) {{
  deployments(input: $input, first: $first) {{ edges {{ node {{ {DEPLOYMENT_FIELDS} }} }} }}
}}"""
# Takes the OLD good deployment's id; Railway answers a bare Boolean.
ROLLBACK_MUTATION = "mutation DeploymentRollback($id: String!) { deploymentRollback(id: $id) }"
REDEPLOY_MUTATION = f"""mutation DeploymentRedeploy($id: String!) {{
  deploymentRedeploy(id: $id) {{ {DEPLOYMENT_FIELDS} }}
}}"""
RESTART_MUTATION = "mutation DeploymentRestart($id: String!) { deploymentRestart(id: $id) }"
# Builds and deploys one commit of the service's source (a rebuild, when no rollback image is
# left); Railway answers the new deployment's id. The CLI sends it without commitSha.
DEPLOY_COMMIT_MUTATION = """mutation ServiceInstanceDeploy(
  $environmentId: String!, $serviceId: String!, $commitSha: String!
) {
  serviceInstanceDeployV2(
    environmentId: $environmentId, serviceId: $serviceId, commitSha: $commitSha
  )
}"""

AUTH_MARKERS = ("not authorized", "unauthorized", "unauthenticated", "not authenticated")


@dataclass(frozen=True, slots=True)
class Deployment:
    """One deployment of a service in an environment, as railguard reads it."""

    id: str
    status: str
    created_at: float
    updated_at: float | None
    can_rollback: bool
    service_id: str | None
    environment_id: str
    meta: Mapping[str, Any] = field(default_factory=dict, hash=False)
    static_url: str | None = None
    status_updated_at: float | None = None  # Railway's time of the last status change
    instances: tuple[str, ...] = ()  # the statuses of its instances

    @property
    def live(self) -> bool:
        """Went live and not replaced: serving, asleep or crashed in its slot."""
        return self.status in statuses.LIVE

    @property
    def failing_instances(self) -> int:
        """How many of its instances are crashed or restarting now."""
        return sum(1 for status in self.instances if status in statuses.INSTANCE_FAILING)


def newest_live(deployments: Sequence[Deployment]) -> Deployment | None:
    """The active deployment: the newest that went live, even if it crashed since."""
    return max((d for d in deployments if d.live), key=lambda d: d.created_at, default=None)


def parse_deployment(node: Any, path: str) -> Deployment:
    """A ``Deployment`` object; RailwayProtocolError names the field path and value if odd."""
    node = _object(node, path)
    meta = node.get("meta")
    if meta is not None and not isinstance(meta, Mapping):
        raise _shape(path, "meta", node, "an object")
    return Deployment(
        id=_field(node, path, "id", str),
        status=_field(node, path, "status", str),
        created_at=_timestamp(node, path, "createdAt"),
        updated_at=_timestamp(node, path, "updatedAt") if node.get("updatedAt") else None,
        can_rollback=_field(node, path, "canRollback", bool),
        service_id=_field(node, path, "serviceId", str, opt=True),
        environment_id=_field(node, path, "environmentId", str),
        meta=dict(meta or {}),
        static_url=_field(node, path, "staticUrl", str, opt=True),
        status_updated_at=(
            _timestamp(node, path, "statusUpdatedAt") if node.get("statusUpdatedAt") else None
        ),
        instances=_instances(node.get("instances"), path),
    )


def _instances(value: Any, path: str) -> tuple[str, ...]:
    """The statuses of a deployment's instances (absent: none known)."""
    if value is None:
        return ()
    if not isinstance(value, list):
        raise RailwayProtocolError(f"{path}.instances: expected a list, got {shown(value)}")
    statuses = []
    for i, item in enumerate(value):
        status = item.get("status") if isinstance(item, Mapping) else None
        if not isinstance(status, str):
            raise RailwayProtocolError(
                f"{path}.instances[{i}]: expected a status, got {shown(item)}"
            )
        statuses.append(status)
    return tuple(statuses)


def parse_deployments(connection: Any, path: str) -> list[Deployment]:
    """The deployments of a ``{edges: [{node}]}`` connection, in Railway's order."""
    edges = _field(_object(connection, path), path, "edges", list)
    return [
        parse_deployment(_object(edge, f"{path}.edges[{i}]").get("node"), f"{path}.edges[{i}].node")
        for i, edge in enumerate(edges)
    ]


def shown(value: Any) -> str:
    """A value from an answer for a message: its repr clipped to 80 characters, whatever
    its depth (a repr of deeply nested JSON would raise RecursionError)."""
    try:
        return f"{value!r:.80}"
    except RecursionError:
        return f"a deeply nested {type(value).__name__}"


def _object(value: Any, path: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise RailwayProtocolError(f"{path}: expected an object, got {shown(value)}")
    return value


def _shape(path: str, key: str, node: Mapping[str, Any], what: str) -> RailwayProtocolError:
    got = shown(node[key]) if key in node else "nothing"
    return RailwayProtocolError(f"{path}.{key}: expected {what}, got {got}")


KINDS = {str: "a string", bool: "a boolean", list: "a list"}


def _field(node: Mapping[str, Any], path: str, key: str, kind: type[Any], opt: bool = False) -> Any:
    value = node.get(key)
    if value is None and opt:
        return None
    if not isinstance(value, kind):
        raise _shape(path, key, node, KINDS[kind])
    return value


def _timestamp(node: Mapping[str, Any], path: str, key: str) -> float:
    """A DateTime field (ISO 8601, naive means UTC) as Unix seconds."""
    try:
        when = datetime.fromisoformat(node[key])
    except (KeyError, TypeError, ValueError):
        raise _shape(path, key, node, "an ISO 8601 time") from None
    return (when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp()


@functools.lru_cache(maxsize=256)
def operation_of(document: str) -> tuple[str, str | None]:
    """The operation's name for metrics and logs, and the ``operationName`` to send."""
    try:
        ast = graphql.parse(document, no_location=True)
    except graphql.GraphQLError:
        return "unparsable", None  # sent anyway: Railway's answer says what is wrong
    for definition in ast.definitions:
        if isinstance(definition, graphql.OperationDefinitionNode):
            if definition.name is None:
                return f"anonymous {definition.operation.value}", None
            return definition.name.value, definition.name.value
    return "no operation", None


def _outcome(error: RailwayError, status: int) -> str:
    """The ``outcome`` label of a failed attempt."""
    if isinstance(error, RailwayTransientError):
        return "rate_limited" if status == 429 else "server_error"
    if isinstance(error, RailwayGraphQLError):
        return "auth_error" if isinstance(error, RailwayAuthError) else "graphql_error"
    return "server_error"  # a protocol error: Railway, or a proxy before it, answered nonsense


def _error_paths(errors: Any) -> dict[str, str]:
    """The root field (alias) each GraphQL error is about, with its message."""
    paths: dict[str, str] = {}
    for error in errors if isinstance(errors, list) else [errors]:
        path = error.get("path") if isinstance(error, dict) else None
        if isinstance(path, list) and path and isinstance(path[0], str):
            paths.setdefault(path[0], _clip(error.get("message")))
    return paths


def _secret(value: SecretStr | None) -> str | None:
    """A token's value; an empty one (``RAILWAY_API_TOKEN=``) counts as unset."""
    text = value.get_secret_value().strip() if value is not None else ""
    return text or None


def _excerpt(raw: bytes, limit: int = 120) -> str:
    text = " ".join(raw.decode("utf-8", errors="replace").split())
    return repr(text if len(text) <= limit else text[:limit] + "...")


def _answer(operation: str, status: int, raw: bytes, body: Any, problem: str) -> dict[str, Any]:
    """The ``data`` of a non-transient answer (``raw`` decoded: ``body``, or why not:
    ``problem``), or the error it stands for."""
    if not isinstance(body, dict):
        if status in (401, 403):
            raise RailwayAuthError(operation, [f"HTTP {status}"])
        why = f" ({problem.partition(':')[0]})" if "JSON value" in problem else ""
        raise RailwayProtocolError(
            f"{operation}: Railway's answer is not a JSON object{why} (HTTP {status}): "
            f"{_excerpt(raw)}"
        )
    data = body.get("data")
    data = data if isinstance(data, dict) else None
    errors = body.get("errors")
    if errors:
        messages = [
            _clip(e.get("message")) if isinstance(e, dict) else _clip(e)
            for e in (errors if isinstance(errors, list) else [errors])
        ]
        auth = status in (401, 403) or any(
            marker in m.lower() for m in messages for marker in AUTH_MARKERS
        )
        kind = RailwayAuthError if auth else RailwayGraphQLError
        raise kind(operation, messages, data, _error_paths(errors))
    if data is None:
        raise RailwayProtocolError(
            f"{operation}: Railway's answer has neither data nor errors (HTTP {status}): "
            f"{_excerpt(raw)}"
        )
    return data


def _clip(value: Any, limit: int = 500) -> str:
    """An error message from an answer, as text of bounded length."""
    text = value if isinstance(value, str) else str(value)
    return text if len(text) <= limit else text[:limit] + "..."


@dataclass
class _Call:
    """One ``execute``: what is sent, and whether an answer went missing after sending."""

    operation: str
    body: bytes
    priority: Priority
    retry_unsafe: bool
    lost: bool = False


class RailwayClient:
    """Railway's GraphQL API for railguard: auth, retries, the budget and typed results."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        *,
        url: str,
        token: SecretStr | None = None,
        project_token: SecretStr | None = None,
        clock: Clock,
        budget: RequestBudget,
        metrics: Metrics | None = None,
        source: str = "railguard",
        max_attempts: int = 5,
        timeout: float = 15.0,
    ) -> None:
        account, project = _secret(token), _secret(project_token)
        if (account is None) == (project is None):
            raise ValueError(
                "set exactly one of RAILWAY_API_TOKEN (account or workspace token) "
                "and RAILWAY_PROJECT_TOKEN (project token)"
            )
        if max_attempts < 1:
            raise ValueError(f"max_attempts must be at least 1: {max_attempts}")
        self.session = session
        self.clock = clock
        self.budget = budget
        self.metrics = metrics
        self.max_attempts = max_attempts
        # The bare URL meets a much stricter edge limit than one naming its client. Railway's
        # CLI names itself in an ``x-source`` header; both are sent (a source already in
        # RAILWAY_API_URL is kept for the query).
        base = URL(url)
        self.url = base if "source" in base.query else base.update_query(source=source)
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        auth = {"Authorization": f"Bearer {account}"} if account else {}
        auth = auth or {"Project-Access-Token": str(project)}
        self._headers = {
            "Content-Type": "application/json",
            "User-Agent": f"railguard/{__version__}",
            "x-source": source,
            **auth,
        }
        self._odd_headers: set[str] = set()  # rate-limit headers already logged as implausible
        jitter = tenacity.wait_random(0, 0.5)
        self._backoff = tenacity.wait_exponential(multiplier=0.5, max=30.0) + jitter

    def __repr__(self) -> str:
        return f"RailwayClient(url={str(self.url)!r})"  # never the headers: they hold the token

    async def execute(
        self,
        document: str,
        variables: Mapping[str, Any] | None = None,
        *,
        priority: Priority = Priority.ROUTINE,
        retry_unsafe: bool = True,
    ) -> dict[str, Any]:
        """Send ``document`` and return its ``data``.

        ``retry_unsafe=False`` is for mutations: if the connection fails after the request
        was sent, raise RailwayTransientError with ``maybe_applied=True`` at once instead of
        sending it again. Raises RailwayGraphQLError (RailwayAuthError for the token) when
        Railway answers with errors, RailwayProtocolError when the answer is not GraphQL,
        RailwayTransientError when every attempt failed transiently.
        """
        operation, operation_name = operation_of(document)
        payload: dict[str, Any] = {"query": document, "variables": dict(variables or {})}
        if operation_name is not None:
            payload["operationName"] = operation_name
        call = _Call(operation, json.dumps(payload).encode(), priority, retry_unsafe)
        retrying = tenacity.AsyncRetrying(
            stop=tenacity.stop_after_attempt(self.max_attempts),
            wait=self._wait,
            retry=tenacity.retry_if_exception(lambda e: self._retryable(e, call)),
            sleep=self.clock.sleep,
            before_sleep=self._log_retry,
        )
        try:
            return await retrying(self._attempt, call)
        except tenacity.RetryError as e:
            last = e.last_attempt.exception()
            assert isinstance(last, RailwayTransientError)  # the only kind that is retried
            raise RailwayTransientError(
                f"{last} (gave up after {self.max_attempts} attempts)",
                operation=operation,
                retry_after=last.retry_after,
                maybe_applied=call.lost,
            ) from last

    async def deployment(
        self, deployment_id: str, *, priority: Priority = Priority.ROUTINE
    ) -> Deployment:
        """One deployment by id."""
        data = await self.execute(DEPLOYMENT_QUERY, {"id": deployment_id}, priority=priority)
        return parse_deployment(data.get("deployment"), "deployment")

    async def deployments(
        self,
        service_id: str,
        environment_id: str,
        first: int = 20,
        *,
        priority: Priority = Priority.ROUTINE,
    ) -> list[Deployment]:
        """A service's latest deployments in one environment, newest first."""
        variables = {
            "input": {"serviceId": service_id, "environmentId": environment_id},
            "first": first,
        }
        data = await self.execute(DEPLOYMENTS_QUERY, variables, priority=priority)
        return parse_deployments(data.get("deployments"), "deployments")

    async def rollback(self, to_deployment_id: str) -> bool:
        """Roll back to the OLD good deployment ``to_deployment_id`` (it needs canRollback).

        CRITICAL and never resent after a lost answer: on ``maybe_applied`` the caller checks
        Railway's deployments before deciding to try again.
        """
        data = await self.execute(
            ROLLBACK_MUTATION,
            {"id": to_deployment_id},
            priority=Priority.CRITICAL,
            retry_unsafe=False,
        )
        return bool(_field(data, "data", "deploymentRollback", bool))

    async def deploy_commit(self, service_id: str, environment_id: str, commit_sha: str) -> str:
        """Build and deploy ``commit_sha`` of the service (``serviceInstanceDeployV2``); returns
        the new deployment's id. Like :meth:`rollback`, CRITICAL and never resent."""
        variables = {"serviceId": service_id, "environmentId": environment_id}
        data = await self.execute(
            DEPLOY_COMMIT_MUTATION,
            variables | {"commitSha": commit_sha},
            priority=Priority.CRITICAL,
            retry_unsafe=False,
        )
        new: str = _field(data, "data", "serviceInstanceDeployV2", str)
        if not new.strip() or len(new) > 200:
            # Garbled, not refused: Railway may have started the deploy (the caller reconciles).
            raise RailwayProtocolError(
                f"serviceInstanceDeployV2: expected a deployment id, got {shown(new)}"
            )
        return new

    # -- one attempt -------------------------------------------------------------------------

    async def _attempt(self, call: _Call) -> dict[str, Any]:
        await self.budget.acquire(call.priority)
        started = self.clock.monotonic()
        try:
            async with self.session.post(
                self.url, data=call.body, headers=self._headers, timeout=self._timeout
            ) as response:
                status, headers, raw = response.status, response.headers, await response.read()
        except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError) as e:
            # Never connected, so nothing was sent: safe to retry even a mutation.
            self._count(call.operation, "network_error", started)
            raise RailwayTransientError(
                f"{call.operation}: cannot reach Railway: {e}", operation=call.operation
            ) from e
        except (aiohttp.ClientError, TimeoutError) as e:
            self._count(call.operation, "network_error", started)
            call.lost = True
            what = "timed out" if isinstance(e, TimeoutError) else type(e).__name__
            raise RailwayTransientError(
                f"{call.operation}: no answer from Railway ({what}); the request may have "
                "been applied",
                operation=call.operation,
                maybe_applied=True,
            ) from e
        self._observe(headers)
        outcome = "ok"
        try:
            return await self._interpret(call.operation, status, headers, raw)
        except RailwayError as e:
            outcome = _outcome(e, status)
            raise
        finally:
            self._count(call.operation, outcome, started)

    async def _interpret(
        self, operation: str, status: int, headers: CIMultiDictProxy[str], raw: bytes
    ) -> dict[str, Any]:
        """The ``data`` of an answer, or the error it stands for; a large one is decoded
        with yields to the loop (the batched poll's answer: 1.7 MB at 1,000 services)."""
        if status == 429 or status >= 500:
            retry_after = self._header(
                "Retry-After", ratelimit.retry_after(headers.get("Retry-After"), self.clock.time())
            )
            if retry_after is not None:
                self.budget.pause(retry_after)
            later = f", retry after {retry_after:g}s" if retry_after is not None else ""
            raise RailwayTransientError(
                f"{operation}: Railway answered HTTP {status}{later}",
                operation=operation,
                retry_after=retry_after,
                # A 429 is the edge refusing before anything ran. A 5xx may be a gateway
                # answering after the backend applied the request (a 502/504 on a slow one).
                maybe_applied=status >= 500,
            )
        try:
            try:
                body, problem = await answer_json.decode(raw), ""
            except ValueError as e:  # UnicodeDecodeError too
                body, problem = None, str(e)
            return _answer(operation, status, raw, body, problem)
        except RecursionError:
            # Nested deeper than the parser (or a repr of it) can follow: not GraphQL.
            raise RailwayProtocolError(
                f"{operation}: Railway's answer is nested too deeply (HTTP {status}): "
                f"{_excerpt(raw)}"
            ) from None

    def _observe(self, headers: CIMultiDictProxy[str]) -> None:
        remaining = ratelimit.remaining(headers.get("X-RateLimit-Remaining"))
        reset = ratelimit.reset(headers.get("X-RateLimit-Reset"), self.clock.time())
        self.budget.observe(remaining, self._header("X-RateLimit-Reset", reset))

    def _header(self, name: str, wait: ratelimit.Wait) -> float | None:
        """The seconds a rate-limit header asks for; an implausible one is logged once."""
        if wait.problem is not None and name not in self._odd_headers:
            self._odd_headers.add(name)  # every answer carries it: once is enough to know
            log.warning(
                "implausible rate-limit header from Railway",
                header=name,
                problem=wait.problem,
                wait=wait.seconds,
                max_wait=ratelimit.MAX_WAIT,
            )
        return wait.seconds

    def _count(self, operation: str, outcome: str, started: float) -> None:
        if self.metrics is not None:
            self.metrics.railway_requests.labels(operation, outcome).inc()
            self.metrics.railway_request_duration.labels(operation).observe(
                self.clock.monotonic() - started
            )

    # -- retrying ----------------------------------------------------------------------------

    @staticmethod
    def _retryable(error: BaseException, call: _Call) -> bool:
        if not isinstance(error, RailwayTransientError):
            return False
        if error.maybe_applied and not call.retry_unsafe:
            log.warning(
                "railway answer lost after sending; not resending",
                operation=call.operation,
                error=str(error),
            )
            return False
        return True

    def _wait(self, state: tenacity.RetryCallState) -> float:
        """Jittered exponential backoff, but never sooner than Railway's Retry-After."""
        error = state.outcome.exception() if state.outcome is not None else None
        retry_after = getattr(error, "retry_after", None) or 0.0
        return max(float(self._backoff(state)), retry_after)

    @staticmethod
    def _log_retry(state: tenacity.RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome is not None else None
        wait = state.next_action.sleep if state.next_action is not None else 0.0
        log.info(
            "railway request failed; retrying",
            error=str(error),
            attempt=state.attempt_number,
            wait=round(wait, 3),
        )
