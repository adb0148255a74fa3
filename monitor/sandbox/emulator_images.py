"""Image retention and rebuilds in the emulator.

Railway keeps a deployment's image for a while (24h to 360h, by plan); past that the
deployment's ``canRollback`` is false, ``deploymentRollback`` refuses it, and only a build
brings its release back: ``serviceInstanceDeployV2`` with the commit. The emulator's model of
that (its own, not Railway's published behaviour):

- an image is kept for ``retention`` seconds after its deployment was created (None, the
  default: for ever), on the emulator's clock; a deployment made with ``canRollback`` false
  (or set so) stays false;
- ``serviceInstanceDeployV2`` creates a new deployment that rolls out through the emulator's
  rollout model with its BUILDING phase (a rollback skips it), then settles as any deploy does;
- the new deployment carries the meta of the newest deployment of the service built from that
  commit (a new ``imageDigest`` if it had one: a build makes a new image); a commit the
  emulator never saw deploys with only its ``commitHash``; no commit given deploys the commit
  of the environment's newest deployment (Railway deploys the branch's latest commit).

This module knows nothing of the model beyond the deployments it reads; emulator_model owns
the retention and validates what is asked of it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from monitor.clock import Clock

if TYPE_CHECKING:
    from monitor.sandbox.emulator_model import Deployment

HOUR = 3600.0


class ImageRetention:
    """How long the emulated Railway keeps a deployment's image (see the module docstring)."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.retention: float | None = None  # seconds; None: kept for ever

    @property
    def hours(self) -> float | None:
        """The retention in hours (None: for ever)."""
        return None if self.retention is None else self.retention / HOUR

    def kept(self, deployment: Deployment) -> bool:
        """Whether Railway would still roll back to ``deployment`` (its ``canRollback``)."""
        if not deployment.can_rollback:
            return False
        age = self.clock.time() - deployment.created_at
        return self.retention is None or age < self.retention


@dataclass(frozen=True)
class Build:
    """What a rebuild deploys: the commit's meta, and the environment's url and replicas."""

    meta: dict[str, Any] = field(default_factory=dict)
    static_url: str | None = None
    replicas: int = 1


def rebuild_of(
    newest_first: Sequence[Deployment],
    service_id: str,
    environment_id: str,
    commit: str | None,
    *,
    now: float,
) -> Build | None:
    """What ``serviceInstanceDeployV2`` of ``commit`` (None: the latest) builds; None when
    there is no commit to build."""
    service = [d for d in newest_first if d.service_id == service_id]
    here = [d for d in service if d.environment_id == environment_id]
    if commit is None:
        commit = next((c for d in here if (c := _commit(d)) is not None), None)
        if commit is None:
            return None
    built = next((d for d in service if _commit(d) == commit), None)
    meta: dict[str, Any] = {"commitHash": commit}
    if built is not None:
        meta = dict(built.meta)
        digest = meta.get("imageDigest")
        if isinstance(digest, str):
            meta["imageDigest"] = "sha256:" + hashlib.sha256(f"{digest}@{now}".encode()).hexdigest()
    latest = here[0] if here else None
    if latest is None:
        return Build(meta)
    return Build(meta, latest.static_url, latest.replicas)


def _commit(deployment: Deployment) -> str | None:
    commit = deployment.meta.get("commitHash")
    return commit if isinstance(commit, str) and commit else None
