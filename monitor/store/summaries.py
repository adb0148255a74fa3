"""Release summaries in the SQLite store (migration 4): each release's recorded behaviour.

One row per (service, release, signal): a :class:`~monitor.baseline.Summary` as JSON, a few
hundred bytes however long the release served. They are the baselines later releases are
judged against; a service keeps those of its last few releases only.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

from monitor.store.db import Connection, Row

R = TypeVar("R")


class BaselineStore:
    """Release summary methods of the SQLite store (mixed into SQLiteStore)."""

    async def _write(self, job: Callable[[Connection], R]) -> R:
        raise NotImplementedError

    async def _fetch(self, sql: str, params: Mapping[str, Any]) -> list[Row]:
        raise NotImplementedError

    async def save_summaries(
        self, service: str, release: str, summaries: Mapping[str, Mapping[str, Any]], at: float
    ) -> None:
        """Keep one release's summaries (``Summary.to_dict()`` by signal), replacing older."""
        rows = [
            {
                "service": service,
                "release": release,
                "signal": signal,
                "data": json.dumps(data, sort_keys=True),
                "at": at,
            }
            for signal, data in summaries.items()
        ]
        sql = (
            "INSERT INTO release_summaries (service, release, signal, data, updated_at) "
            "VALUES (:service, :release, :signal, :data, :at) "
            "ON CONFLICT (service, release, signal) DO UPDATE SET "
            "data = excluded.data, updated_at = excluded.updated_at"
        )
        await self._write(lambda db: db.executemany(sql, rows))

    async def summaries(self, service: str) -> dict[str, dict[str, Any]]:
        """Every kept summary of a service: ``{release: {signal: data}}``.

        A row that is not JSON is left out (it is a fact about a damaged file, not a reason
        to stop): that release then has no baseline for the signal.
        """
        rows = await self._fetch(
            "SELECT release, signal, data FROM release_summaries WHERE service = :service",
            {"service": service},
        )
        out: dict[str, dict[str, Any]] = {}
        for row in rows:
            try:
                data = json.loads(row["data"])
            except ValueError:
                continue
            if isinstance(data, dict):
                out.setdefault(str(row["release"]), {})[str(row["signal"])] = data
        return out

    async def forget_summaries(self, service: str, keep: Iterable[str]) -> None:
        """Drop a service's summaries of every release but ``keep``."""
        kept = sorted(set(keep))
        params: dict[str, Any] = {"service": service} | {f"k{i}": k for i, k in enumerate(kept)}
        sql = "DELETE FROM release_summaries WHERE service = :service"
        if kept:  # (NOT IN an empty list would be NOT IN (NULL): true of nothing)
            sql += f" AND release NOT IN ({', '.join(f':k{i}' for i in range(len(kept)))})"
        await self._write(lambda db: db.execute(sql, params))
