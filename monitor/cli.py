"""The ``railguard`` command line.

``run`` starts the daemon, ``check`` validates a config and prints the plan, ``demo`` runs the
local sandbox story. ``status``, ``rollback``, ``freeze`` and ``unfreeze`` talk to a running
daemon's admin API (:mod:`monitor.adminclient`) with ``RAILGUARD_ADMIN_TOKEN``.

Exit status: 0 ok, 1 runtime failure (for ``rollback``: it failed; for ``check --strict``:
a valid config that drew warnings), 2 bad config or bad arguments (for the admin commands
also: a wrong token, or a request the daemon refused).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import resource
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

import structlog

from monitor import __version__
from monitor.clock import SystemClock
from monitor.daemon import Daemon
from monitor.environment import Environment, load_environment
from monitor.errors import ConfigError, RailguardError
from monitor.lease import Lease
from monitor.plan import Plan
from monitor.planning import build_plan
from monitor.telemetry import configure_logging

EXIT_OK, EXIT_FAILURE, EXIT_CONFIG = 0, 1, 2
ADMIN_COMMANDS = frozenset({"status", "rollback", "freeze", "unfreeze"})


def make_parser() -> argparse.ArgumentParser:
    """The argument parser for every subcommand."""
    # argparse exits 2 on bad arguments, as the contract wants.
    parser = argparse.ArgumentParser(
        prog="railguard",
        description="Health monitoring with automatic rollback for services on Railway.",
    )
    parser.add_argument("--version", action="version", version=f"railguard {__version__}")
    commands = parser.add_subparsers(
        dest="command", required=True, metavar="COMMAND", title="commands"
    )
    config_help = "the TOML config file (default: $RAILGUARD_CONFIG)"
    run = commands.add_parser("run", help="run the daemon")
    run.add_argument("--config", type=Path, help=config_help)
    check = commands.add_parser("check", help="validate config and rules, print the plan")
    check.add_argument("--config", type=Path, help=config_help)
    check.add_argument(
        "--strict",
        action="store_true",
        help=f"exit {EXIT_FAILURE} when there are warnings (a valid config still exits 0 without)",
    )
    demo = commands.add_parser("demo", help="run the local sandbox story")
    demo.add_argument("--keep", action="store_true", help="keep running after the story")
    demo.add_argument("--port", type=int, default=0, help="railguard's port (default: any)")
    _admin_commands(commands)
    return parser


def _admin_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The commands that talk to a running daemon's admin API."""
    url_help = "the daemon's address (default: http://127.0.0.1:$PORT)"
    token = "Needs RAILGUARD_ADMIN_TOKEN, the daemon's admin token."
    status = commands.add_parser(
        "status", help="show a running daemon's services", description=token
    )
    status.add_argument("--url", help=url_help)
    status.add_argument("--json", action="store_true", help="print the JSON as the API gives it")
    rollback = commands.add_parser(
        "rollback",
        help="roll a service back now (asks you to type CONFIRM)",
        description="Roll back through the daemon's executor, audited like an automatic "
        f"rollback, then follow it until it finishes. {token}",
    )
    rollback.add_argument("--service", required=True, help="the service's name in the config")
    rollback.add_argument(
        "--to", metavar="DEPLOYMENT", help="the deployment id (default: newest known-good)"
    )
    rollback.add_argument("--reason", required=True, help="why, for the audit log")
    rollback.add_argument(
        "--confirm", metavar="CONFIRM", help="skip the question (needed when not interactive)"
    )
    rollback.add_argument("--url", help=url_help)
    rollback.add_argument(
        "--no-wait", action="store_true", help="return once the rollback has started"
    )
    rollback.add_argument(
        "--poll-every",
        type=float,
        default=1.0,
        metavar="SECONDS",
        help="how often to check the rollback's progress (default: 1)",
    )
    freeze = commands.add_parser(
        "freeze", help="hold automatic rollback of a service back", description=token
    )
    freeze.add_argument("--service", required=True, help="the service's name in the config")
    freeze.add_argument("--reason", required=True, help="why, for the audit log")
    freeze.add_argument(
        "--until", help='an ISO time or a duration such as "2h" (default: until unfrozen)'
    )
    freeze.add_argument("--url", help=url_help)
    unfreeze = commands.add_parser(
        "unfreeze", help="let automatic rollback act again", description=token
    )
    unfreeze.add_argument("--service", required=True, help="the service's name in the config")
    unfreeze.add_argument("--reason", required=True, help="why, for the audit log")
    unfreeze.add_argument("--url", help=url_help)


def _config_path(args: argparse.Namespace, env: Environment) -> Path:
    path: Path | None = args.config or env.config
    if path is None:
        raise ConfigError("no config file: pass --config FILE or set RAILGUARD_CONFIG")
    return path


def _load(args: argparse.Namespace) -> Plan:
    env = load_environment()
    return build_plan(_config_path(args, env), env)


def _raise_open_file_limit() -> None:
    """Keep-alive connections to many services need file descriptors: use all we may."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = 1_048_576 if hard == resource.RLIM_INFINITY else hard
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


async def _run(plan: Plan) -> None:
    from monitor.store import open_store, state_path

    path = state_path(plan.env.state)
    url = plan.env.database_url
    store = await open_store(path, database_url=url.get_secret_value() if url else None)
    clock = SystemClock()
    lease = _lease(plan, clock)
    structlog.get_logger("railguard").info(
        "state", store=store.label, replica=None if lease is None else lease.me
    )
    try:
        # With a lease the store is PostgreSQL's, beside the lease's row: every intent and
        # outbox claim is checked against it in its own transaction.
        daemon = Daemon(plan, clock=clock, freeze_gc=True, store=store, lease=lease)
        await _serve(daemon)
    finally:
        await store.close()


def _lease(plan: Plan, clock: SystemClock) -> Lease | None:
    """With DATABASE_URL, the leader lease replicas share there (None: a single replica)."""
    url = plan.env.database_url
    if url is None:
        return None
    from monitor.leadership import replica_id
    from monitor.store.lease_pg import PgLease, connector

    return PgLease(
        connector(url.get_secret_value()),
        replica_id(plan.env.railway_replica_id),
        clock=clock,
        terms=plan.config.lease.terms,
    )


async def _serve(daemon: Daemon) -> None:
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, daemon.request_stop)
    try:
        await daemon.serve()
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)


def _demo(args: argparse.Namespace, out: TextIO) -> int:
    # Imported here: the sandbox is not needed to run the daemon.
    from monitor.sandbox.demo import run_demo

    configure_logging("json", "error")  # the story is the output; errors still show
    try:
        return asyncio.run(run_demo(clock=SystemClock(), out=out, keep=args.keep, port=args.port))
    except KeyboardInterrupt:
        return EXIT_OK
    except RailguardError as e:
        print(f"railguard demo: {e}", file=sys.stderr)
        return EXIT_FAILURE


def _check(plan: Plan, out: TextIO, *, strict: bool) -> int:
    """Print the plan and the warnings; with ``strict`` a warning fails (exit 1)."""
    from monitor.checks import describe_apps, warnings
    from monitor.maintenance import describe_windows

    print(plan.describe(), file=out)
    for line in describe_apps(plan):
        print(line, file=out)
    if plan.config.maintenance:
        for line in describe_windows(plan.config.maintenance, time.time()):
            print(line, file=out)
    found = warnings(plan)
    for line in found:
        print(f"warning: {line}", file=out)
    count = len(found) + len(plan.run_problems())  # describe() printed those as warnings
    if not count:
        print("config OK", file=out)
        return EXIT_OK
    plural = "s" if count > 1 else ""
    if strict:
        print(f"config valid, but {count} warning{plural} (--strict)", file=out)
        return EXIT_FAILURE
    print(f"config OK ({count} warning{plural})", file=out)
    return EXIT_OK


def _admin(args: argparse.Namespace, out: TextIO) -> int:
    from monitor.adminclient import run_command

    try:
        env = load_environment()
    except ConfigError as e:
        print(f"railguard: {e}", file=sys.stderr)
        return EXIT_CONFIG
    return run_command(args, env, out, sys.stderr, sys.stdin)


def main(argv: Sequence[str] | None = None, stdout: TextIO | None = None) -> int:
    """Entry point of the ``railguard`` console script."""
    out = stdout if stdout is not None else sys.stdout
    args = make_parser().parse_args(argv)
    if args.command == "demo":
        return _demo(args, out)
    if args.command in ADMIN_COMMANDS:
        return _admin(args, out)
    try:
        plan = _load(args)
    except ConfigError as e:
        print(f"railguard: {e}", file=sys.stderr)
        return EXIT_CONFIG
    if args.command == "check":
        return _check(plan, out, strict=args.strict)
    problems = plan.run_problems()
    if problems:
        for problem in problems:
            print(f"railguard: {problem}", file=sys.stderr)
        return EXIT_CONFIG
    configure_logging(plan.env.log_format, plan.env.log_level)
    _raise_open_file_limit()
    try:
        asyncio.run(_run(plan))
    except (OSError, RailguardError) as e:
        structlog.get_logger("railguard").error("railguard failed", error=str(e))
        return EXIT_FAILURE
    return EXIT_OK
