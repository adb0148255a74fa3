"""The ``railguard`` command line: run | check | demo.

Exit status: 0 ok, 1 runtime failure, 2 bad config or bad arguments.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import resource
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

import structlog

from monitor import __version__
from monitor.clock import SystemClock
from monitor.daemon import Daemon
from monitor.errors import ConfigError, RailguardError
from monitor.plan import Plan, build_plan
from monitor.settings import Environment, load_environment
from monitor.telemetry import configure_logging

EXIT_OK, EXIT_FAILURE, EXIT_CONFIG = 0, 1, 2


def make_parser() -> argparse.ArgumentParser:
    """The argument parser for every subcommand."""
    # argparse exits 2 on bad arguments, as the contract wants.
    parser = argparse.ArgumentParser(
        prog="railguard",
        description="Health monitoring with automatic rollback for services on Railway.",
    )
    parser.add_argument("--version", action="version", version=f"railguard {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    config_help = "the TOML config file (default: $RAILGUARD_CONFIG)"
    run = commands.add_parser("run", help="run the daemon")
    run.add_argument("--config", type=Path, help=config_help)
    check = commands.add_parser("check", help="validate config and rules, print the plan")
    check.add_argument("--config", type=Path, help=config_help)
    demo = commands.add_parser("demo", help="run the local sandbox story")
    demo.add_argument("--keep", action="store_true", help="keep running after the story")
    demo.add_argument("--port", type=int, default=0, help="railguard's port (default: any)")
    return parser


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
    store = await open_store(path)
    structlog.get_logger("railguard").info("state", path=str(path))
    try:
        await _serve(Daemon(plan, clock=SystemClock(), freeze_gc=True, store=store))
    finally:
        await store.close()


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


def main(argv: Sequence[str] | None = None, stdout: TextIO | None = None) -> int:
    """Entry point of the ``railguard`` console script."""
    out = stdout if stdout is not None else sys.stdout
    args = make_parser().parse_args(argv)
    if args.command == "demo":
        return _demo(args, out)
    try:
        plan = _load(args)
    except ConfigError as e:
        print(f"railguard: {e}", file=sys.stderr)
        return EXIT_CONFIG
    if args.command == "check":
        print(plan.describe(), file=out)
        print("config OK", file=out)
        return EXIT_OK
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
