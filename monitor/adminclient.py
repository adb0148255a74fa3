"""The command line's side of the admin API: ``railguard status | rollback | freeze | unfreeze``.

Each command talks to a running daemon over HTTP (``--url``, default
``http://127.0.0.1:$PORT``) with ``RAILGUARD_ADMIN_TOKEN`` as its bearer token. Exit status:
0 done (a rollback: succeeded), 1 the daemon is unreachable or failed (a rollback: failed or
abandoned), 2 bad arguments, a wrong token, or a request the daemon refused.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import pwd
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, TextIO

import aiohttp

from monitor import __version__
from monitor.clock import Clock, SystemClock
from monitor.environment import Environment
from monitor.errors import RailguardError
from monitor.leadership import leadership_text
from monitor.model import format_duration

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2
CONFIRM = "CONFIRM"


class AdminError(RailguardError):
    """A command that cannot go on; ``exit_code`` is the status the command line exits with."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def _login() -> str:
    # The password database, not $USER: only environment.py and settings.py (${VAR}) read
    # the environment.
    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        return f"uid-{os.getuid()}"


class AdminClient:
    """A client of one daemon's admin API."""

    def __init__(self, session: aiohttp.ClientSession, url: str, token: str) -> None:
        self.session = session
        self.url = url.rstrip("/")
        self._headers = {
            "Authorization": f"Bearer {token}",
            "X-Railguard-Actor": _login(),
            "User-Agent": f"railguard-cli/{__version__}",
        }

    async def _call(self, method: str, path: str, body: Mapping[str, Any] | None = None) -> Any:
        try:
            async with self.session.request(
                method, f"{self.url}{path}", json=body, headers=self._headers
            ) as response:
                text = await response.text()
                status = response.status
        except aiohttp.ClientConnectorError:
            raise AdminError(f"cannot connect: is railguard running at {self.url}?", 1) from None
        except (aiohttp.ClientError, TimeoutError) as e:
            raise AdminError(f"{self.url}: {type(e).__name__}: {e}", 1) from e
        try:
            answer = json.loads(text)
        except ValueError:
            answer = {"error": text[:200]}
        message = answer.get("error", text[:200]) if isinstance(answer, dict) else text[:200]
        if status == 401:
            raise AdminError("RAILGUARD_ADMIN_TOKEN is not the daemon's (401 Unauthorized)", 2)
        if 400 <= status < 500:
            raise AdminError(f"{message} ({status})", 2)
        if status >= 500:
            raise AdminError(f"the daemon failed ({status}): {message}", 1)
        return answer

    async def status(self) -> dict[str, Any]:
        """``GET /api/v1/status``."""
        answer: dict[str, Any] = await self._call("GET", "/api/v1/status")
        return answer

    async def rollback(self, service: str, *, reason: str, to: str | None) -> dict[str, Any]:
        """Start a manual rollback; the answer names it (``rollback``) and its state."""
        body = {"reason": reason, "to": to, "confirm": CONFIRM}
        answer: dict[str, Any] = await self._call(
            "POST", f"/api/v1/services/{service}/rollback", body
        )
        return answer

    async def progress(self, rollback: int) -> dict[str, Any]:
        """``GET /api/v1/rollbacks/{id}``."""
        answer: dict[str, Any] = await self._call("GET", f"/api/v1/rollbacks/{rollback}")
        return answer

    async def freeze(self, service: str, *, reason: str, until: str | None) -> dict[str, Any]:
        """Hold automatic rollback of ``service`` back."""
        body = {"reason": reason} | ({"until": until} if until else {})
        answer: dict[str, Any] = await self._call(
            "POST", f"/api/v1/services/{service}/freeze", body
        )
        return answer

    async def unfreeze(self, service: str, *, reason: str) -> dict[str, Any]:
        """Lift the freeze of ``service``."""
        answer: dict[str, Any] = await self._call(
            "POST", f"/api/v1/services/{service}/unfreeze", {"reason": reason}
        )
        return answer


# -- formatting ------------------------------------------------------------------------------


def when(t: float | None) -> str:
    """Unix seconds as a short UTC time."""
    if t is None:
        return "-"
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def deployment_text(active: Mapping[str, Any] | None) -> str:
    """``d-1 (v2, SUCCESS)``: the id, the release label if any, the status."""
    if not active:
        return "-"
    release = active.get("meta", {}).get("release")
    label = f"{release}, " if release else ""
    return f"{active['id']} ({label}{active['status']})"


def _rules(entry: Mapping[str, Any]) -> str:
    parts = []
    for name, rule in entry.get("rules", {}).items():
        phase = rule["phase"] + (" blind" if rule.get("blind") else "")
        parts.append(f"{name} {phase}")
    return ", ".join(parts) or "-"


def _last_rollback(railway: Mapping[str, Any]) -> str:
    if not railway["rollbacks"]:
        return "-"
    r = railway["rollbacks"][0]
    return f"#{r['id']} {r['state']} ({r['trigger']}) {when(r['decided_at'])}"


def status_table(status: Mapping[str, Any]) -> str:
    """One row per service: what ``railguard status`` prints."""
    header = ("SERVICE", "TIER", "ACTIVE", "KNOWN-GOOD", "RULES", "FROZEN", "LAST ROLLBACK")
    rows: list[Sequence[str]] = [header]
    for entry in status.get("services", []):
        railway = entry.get("railway")
        if railway is None:
            rows.append((entry["name"], entry["tier"], "-", "-", _rules(entry), "-", "-"))
            continue
        frozen = railway["frozen"]
        rows.append(
            (
                entry["name"],
                entry["tier"],
                deployment_text(railway["active"]),
                str(len(railway["known_good"])),
                _rules(entry),
                "no" if frozen is None else f"yes: {frozen['reason'][:40]} ({frozen['actor']})",
                _last_rollback(railway),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows
    ]
    version = f"railguard {status.get('version', '?')}"
    return "\n".join([version, f"leader: {leadership_text(status.get('leadership'))}", *lines])


def progress_line(record: Mapping[str, Any]) -> str:
    """One rollback state change, for people."""
    head = f"rollback #{record['id']} of {record['service']}: {record['state']}"
    state = record["state"]
    if state == "intent":
        return f"{head}: {record['from']} -> {record['to']}"
    if state == "deploying" and record.get("new_deployment"):
        return f"{head}: the replacement {record['new_deployment']} is deploying"
    if state == "succeeded" and record.get("finished_at") is not None:
        took = format_duration(record["finished_at"] - record["decided_at"])
        return f"{head} in {took}: {record['to']} serves again"
    if record.get("error"):
        return f"{head}: {record['error']}"
    return head


# -- the commands ----------------------------------------------------------------------------


async def _confirm(
    client: AdminClient, args: argparse.Namespace, out: TextIO, stdin: TextIO
) -> bool:
    """Show what will happen and ask for CONFIRM."""
    status = await client.status()
    entry = next((s for s in status.get("services", []) if s["name"] == args.service), None)
    if entry is None:
        raise AdminError(f"the daemon guards no service named {args.service!r}", 2)
    if entry.get("railway") is None:
        raise AdminError(f"{args.service} has no Railway ids: railguard cannot roll it back", 2)
    print(f"Roll back {args.service} [{entry['tier']}]", file=out)
    print(f"  from: {deployment_text(entry['railway']['active'])}", file=out)
    print(f"  to:   {args.to or 'the newest known-good release'}", file=out)
    print(f"  reason: {args.reason}", file=out)
    print(f"Type {CONFIRM} to roll back: ", end="", file=out, flush=True)
    if stdin.readline().strip() == CONFIRM:
        return True
    print("aborted", file=out)
    return False


async def _rollback(
    client: AdminClient, args: argparse.Namespace, out: TextIO, stdin: TextIO, clock: Clock
) -> int:
    if args.confirm is None and not await _confirm(client, args, out, stdin):
        return EXIT_USAGE
    answer = await client.rollback(args.service, reason=args.reason, to=args.to)
    if answer["rollback"] is None:
        print(answer.get("message", "queued"), file=out)
        return EXIT_OK
    record = answer["record"]
    print(progress_line(record), file=out)
    while not record["finished"]:
        if args.no_wait:
            print(f"follow it with: railguard status (rollback #{record['id']})", file=out)
            return EXIT_OK
        await clock.sleep(args.poll_every)
        latest = await client.progress(record["id"])
        if latest["state"] != record["state"]:
            print(progress_line(latest), file=out)
        record = latest
    return EXIT_OK if record["state"] == "succeeded" else EXIT_FAILURE


async def _command(
    args: argparse.Namespace, url: str, token: str, out: TextIO, stdin: TextIO, clock: Clock
) -> int:
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        client = AdminClient(session, url, token)
        if args.command == "status":
            status = await client.status()
            text = json.dumps(status, indent=2) if args.json else status_table(status)
            print(text, file=out)
            return EXIT_OK
        if args.command == "rollback":
            return await _rollback(client, args, out, stdin, clock)
        if args.command == "freeze":
            answer = await client.freeze(args.service, reason=args.reason, until=args.until)
            until = answer["frozen"]["until"]
            ends = "until unfrozen" if until is None else f"until {when(until)}"
            print(f"{args.service}: automatic rollback frozen {ends}", file=out)
            return EXIT_OK
        answer = await client.unfreeze(args.service, reason=args.reason)
        done = "unfrozen" if answer["unfrozen"] else "was not frozen"
        print(f"{args.service}: {done}", file=out)
        return EXIT_OK


def run_command(
    args: argparse.Namespace,
    env: Environment,
    out: TextIO,
    err: TextIO,
    stdin: TextIO,
    clock: Clock | None = None,
) -> int:
    """Run one admin command against the daemon; returns the exit status."""
    if args.command == "rollback":
        if args.confirm is not None and args.confirm != CONFIRM:
            print(f"railguard: --confirm: type exactly {CONFIRM} (got {args.confirm!r})", file=err)
            return EXIT_USAGE
        if args.confirm is None and not stdin.isatty():
            print(f"railguard: pass --confirm {CONFIRM} when not interactive", file=err)
            return EXIT_USAGE
    if env.admin_token is None:
        print(
            "railguard: RAILGUARD_ADMIN_TOKEN is not set: the admin API needs the daemon's token",
            file=err,
        )
        return EXIT_USAGE
    url = args.url or f"http://127.0.0.1:{env.port}"
    token = env.admin_token.get_secret_value()
    try:
        return asyncio.run(_command(args, url, token, out, stdin, clock or SystemClock()))
    except AdminError as e:
        print(f"railguard: {e}", file=err)
        return e.exit_code
    except KeyboardInterrupt:
        print("railguard: interrupted (a rollback already started goes on)", file=err)
        return EXIT_FAILURE
