"""The release check: which deployment answered a health probe, and whether it is the active one.

During a deploy's overlap (``RAILWAY_DEPLOYMENT_OVERLAP_SECONDS``) the deployment being replaced
still answers; so does the bad one for a moment after a rollback. A probe cannot tell them
apart unless the app says which it is: Railway sets ``RAILWAY_DEPLOYMENT_ID`` and
``RAILWAY_GIT_COMMIT_SHA`` in every deployment, and an app that echoes one in a response
header or in its health JSON lets railguard attribute each answer (``health.release``).

- :class:`ReleaseCheck` is the config; :func:`echo_in_header` and :func:`echo_in_json` read
  the echo (the health source calls them). Garbage or a missing echo leaves the sample
  *unattributed* (``detail["unattributed"]`` says why), judged as without the check.
- :class:`ReleaseAware` wraps the health source and compares each echo with the last Railway
  poll's view of the service: an answer from the active deployment (or its commit) is
  attributed to it (``detail["deployment"]``, ``["commit"]``, ``["release"]``); an answer
  from any other deployment says nothing about the active release and is UNKNOWN, with the
  reason. So the replaced release's errors never breach a rule about the new one. With
  latency from the health probe (``latency = { source = "health" }``), such an answer's
  response time is left out of the quantiles too: the replaced release's slow answers never
  make the new one's latency (:meth:`.ProbeTimes.disown_newest`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Protocol

from pydantic import field_validator, model_validator

from monitor.configtypes import Strict, Text, shown
from monitor.model import Sample, Signal, release_label

if TYPE_CHECKING:
    from monitor.sources.probe_latency import ProbeTimes

# An HTTP header name (RFC 9110 token).
_HEADER = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]{1,100}")
# A deployment id (a UUID on Railway) or a commit SHA; anything else is not an echo.
_ECHO = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")
_SHORTEST_SHA = 7  # `git log --oneline`'s abbreviation: an app may echo that much
_MISSING: Any = object()


class ReleaseCheck(Strict):
    """Where the app echoes RAILWAY_DEPLOYMENT_ID or RAILWAY_GIT_COMMIT_SHA (one of the two)."""

    header: Text | None = None
    json_path: Text | None = None

    @field_validator("header")
    @classmethod
    def _header(cls, value: str | None) -> str | None:
        if value is not None and not _HEADER.fullmatch(value):
            raise ValueError(
                'not an HTTP header name (write the name the app sends, e.g. "X-Railway-'
                'Deployment-Id")'
            )
        return value

    @field_validator("json_path")
    @classmethod
    def _path(cls, value: str | None) -> str | None:
        if value is not None and (len(value) > 200 or not all(value.split("."))):
            raise ValueError('not a json path (dotted keys, e.g. "railway.deployment_id")')
        return value

    @model_validator(mode="after")
    def _one_place(self) -> ReleaseCheck:
        if (self.header is None) == (self.json_path is None):
            raise ValueError(
                "set header or json_path (one of them): where the app echoes "
                "RAILWAY_DEPLOYMENT_ID or RAILWAY_GIT_COMMIT_SHA"
            )
        return self

    def describe(self) -> str:
        """``header X-Railway-Deployment-Id``: where the echo is read, in one phrase."""
        return f"header {self.header}" if self.header is not None else f"json {self.json_path}"


Echo = tuple[str | None, str]
"""What the app echoed, or None and why nothing usable was found."""


def echo_in_header(headers: Any, name: str) -> Echo:
    """The echo in response header ``name`` (``headers`` is a multidict)."""
    values = {str(v).strip() for v in headers.getall(name, ())}
    if not values:
        return None, f"no {name} header in the answer"
    if len(values) > 1:
        return None, f"{name} header sent {len(values)} times with different values"
    return _checked(values.pop(), f"{name} header")


def echo_in_json(document: Any, path: str) -> Echo:
    """The echo at the dotted ``path`` of a parsed health document."""
    value = document
    for segment in path.split("."):
        if isinstance(value, dict):
            value = value.get(segment, _MISSING)
        elif isinstance(value, list) and segment.isdecimal() and segment.isascii():
            value = value[int(segment)] if int(segment) < len(value) else _MISSING
        else:
            value = _MISSING
        if value is _MISSING:
            return None, f"json path {path} not found in the answer (no {segment!r})"
    if not isinstance(value, str):
        return None, f"json path {path} is not a string: {shown(value)}"
    return _checked(value.strip(), f"json path {path}")


def _checked(value: str, where: str) -> Echo:
    if not _ECHO.fullmatch(value):
        return None, f"{where} is not a deployment id or a commit: {shown(value)}"
    return value, ""


def commit_of(meta: Mapping[str, Any]) -> str | None:
    """A deployment's commit SHA, if Railway gave one."""
    commit = meta.get("commitHash")
    return commit.lower() if isinstance(commit, str) and commit else None


def _same_commit(echo: str, commit: str | None) -> bool:
    if commit is None or len(echo) < _SHORTEST_SHA:
        return False
    return commit.startswith(echo.lower())


# -- attribution ------------------------------------------------------------------------------


class Deployment(Protocol):
    """A deployment as the poller read it."""

    @property
    def id(self) -> str: ...

    @property
    def created_at(self) -> float: ...

    @property
    def meta(self) -> Mapping[str, Any]: ...


class Snapshot(Protocol):
    """One poll's view of one service."""

    @property
    def deployments(self) -> Sequence[Deployment]: ...

    @property
    def active(self) -> Deployment | None: ...


class Railway(Protocol):
    """The poller: its latest view of a service, and an early poll when that view is behind."""

    def latest(self, name: str) -> Snapshot | None: ...

    def refresh(self) -> bool: ...


def _named(deployment: Deployment) -> str:
    label = release_label(deployment.meta)
    return f"{deployment.id} ({label})" if label else deployment.id


def _find(echo: str, active: Deployment, listed: Sequence[Deployment]) -> Deployment | None:
    """The deployment that sent ``echo``: its id, else (the active first) its commit."""
    for deployment in (active, *listed):
        if deployment.id == echo:
            return deployment
    # A commit is shared by a rollback's replacement and the deployment it restores, or by a
    # redeploy: the active deployment first, then the newest.
    newest_first = sorted(listed, key=lambda d: d.created_at, reverse=True)
    for deployment in (active, *newest_first):
        if _same_commit(echo, commit_of(deployment.meta)):
            return deployment
    return None


class ReleaseAware:
    """A health source whose answers count only when the active deployment gave them."""

    def __init__(
        self, inner: Any, railway: Railway, name: str, *, times: ProbeTimes | None = None
    ) -> None:
        self.inner = inner
        self.railway = railway
        self.name = name
        self.times = times  # the inner source's probe response times, if it keeps them
        self.signals: frozenset[Signal] = inner.signals
        self._asked: tuple[str, str] | None = None  # (echo, active) an early poll was asked for
        self._newer: tuple[str, Deployment] | None = None  # (active, a newer one seen answering)

    async def collect(self, at: float) -> list[Sample]:
        """The wrapped source's samples, attributed to the deployment that answered; the
        latency quantiles without the answer's time if it says nothing about the active one."""
        samples: list[Sample] = await self.inner.collect(at)
        out, disowned = [], False
        for sample in samples:
            if sample.signal is Signal.HEALTH:
                attributed = self._attribute(sample)
                disowned = attributed.value is None and sample.value is not None
                sample = attributed
            out.append(sample)
        if not disowned or self.times is None:
            return out
        again = {s.signal: s for s in self.times.disown_newest()}
        return [again.get(s.signal, s) for s in out]

    def _attribute(self, sample: Sample) -> Sample:
        echo = sample.detail.get("echoed")
        if not isinstance(echo, str):
            return sample  # nothing to attribute: the source said why (detail["unattributed"])
        snapshot = self.railway.latest(self.name)
        active = None if snapshot is None else snapshot.active
        if snapshot is None or active is None:
            why = "Railway's active deployment is not known yet"
            return replace(sample, detail={**sample.detail, "unattributed": why})
        if self._newer is not None and self._newer[0] != active.id:
            self._newer = None  # a poll since: Railway's view has moved on
        answered = _find(echo, active, snapshot.deployments)
        if answered is None:
            self._ask_again(echo, active)
            why = (
                f"answered by {echo!r}, which is neither the active deployment {_named(active)}"
                " nor its commit, nor a deployment Railway listed at the last poll"
            )
            return _unknown(sample, why, {"active": active.id})
        if answered.id == active.id:  # a commit echo: some deployment of the active's commit
            if self._newer is None:
                return replace(sample, detail={**sample.detail, **_facts(active)})
            why = (
                f"answered by deployment {_named(active)}, but the newer "
                f"{_named(self._newer[1])} answers too: {active.id} is being replaced "
                "(overlap) and Railway's view is behind"
            )
            facts = {**_facts(active), "active": active.id, "newer": self._newer[1].id}
            return _unknown(sample, why, facts)
        self._ask_again(echo, active)
        if answered.created_at > active.created_at:
            self._newer = (active.id, answered)
            when = "newer than the active one at the last poll"
        elif echo == answered.id:
            when = "overlap: the deployment it replaced still answers"
        else:  # an older release's commit: still answering, or restored since the last poll
            when = "overlap, or a deployment of that commit newer than the last poll"
        if echo == answered.id:
            who = f"deployment {_named(answered)}"
        else:
            who = f"commit {echo[:_SHORTEST_SHA]} ({release_label(answered.meta) or answered.id})"
        why = f"answered by {who}, not the active deployment {_named(active)} ({when})"
        return _unknown(sample, why, {**_facts(answered), "active": active.id})

    def _ask_again(self, echo: str, active: Deployment) -> None:
        """An answer from another deployment may mean the last poll is behind: one early
        poll per (echo, active) pair, so a steady stream of them costs a single request."""
        if self._asked != (echo, active.id):
            self._asked = (echo, active.id)
            self.railway.refresh()


def _unknown(sample: Sample, why: str, facts: Mapping[str, Any]) -> Sample:
    """Says nothing about the active release: UNKNOWN, whatever the answer was."""
    return replace(sample, value=None, reason=why, detail={**sample.detail, **facts})


def _facts(deployment: Deployment) -> dict[str, Any]:
    facts: dict[str, Any] = {"deployment": deployment.id}
    commit = commit_of(deployment.meta)
    if commit is not None:
        facts["commit"] = commit
    label = release_label(deployment.meta)
    if label is not None:
        facts["release"] = label
    return facts


def answered_by(sample: Sample | None, deployment_id: str) -> bool:
    """Whether ``sample`` is a known health answer attributed to deployment ``deployment_id``."""
    if sample is None or sample.value is None:
        return False
    return sample.detail.get("deployment") == deployment_id
