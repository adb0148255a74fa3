"""``railguard status | rollback | freeze | unfreeze`` against a running daemon's admin API.

The daemon serves in the test's event loop; the command line runs in a thread (it has its own
loop), so the server keeps answering while the command waits for it.
"""

from __future__ import annotations

import asyncio
import io
import json
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from monitor.adminclient import deployment_text, progress_line, status_table
from monitor.cli import main
from monitor.clock import FakeClock
from tests.stage import Stage
from tests.test_admin import ADMIN_TOKEN, DOCS, daemon_of, released


class Terminal(io.StringIO):
    """What a person types, on a terminal."""

    def isatty(self) -> bool:
        return True


@pytest.fixture
async def stage(
    clock: FakeClock, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Stage]:
    monkeypatch.setenv("RAILGUARD_ADMIN_TOKEN", ADMIN_TOKEN)
    monkeypatch.setattr("sys.stdin", io.StringIO())  # not a terminal unless a test says so
    stage = Stage(clock, tmp_path, {})
    await stage.start_servers()
    stage.extra_config = DOCS.format(app=stage.app_url)
    yield stage
    await stage.close()


def url(stage: Stage) -> str:
    return f"http://127.0.0.1:{daemon_of(stage).port}"


def words(text: str) -> list[str]:
    """A command line, split on spaces."""
    return text.split()


async def railguard(*argv: str) -> tuple[int, str]:
    """Run the command line in a thread; its exit status and what it printed."""
    out = io.StringIO()
    code = await asyncio.to_thread(main, list(argv), out)
    return code, out.getvalue()


async def test_status_prints_a_table_and_json(
    stage: Stage, monkeypatch: pytest.MonkeyPatch
) -> None:
    good, bad = await released(stage)
    monkeypatch.setenv("PORT", str(daemon_of(stage).port))  # the default URL
    code, text = await railguard("status")
    assert code == 0
    lines = text.splitlines()
    assert lines[0] == "railguard 0.1.0"
    assert lines[1] == "leader: single replica (no DATABASE_URL): it leads"
    assert lines[2].split() == [
        "SERVICE",
        "TIER",
        "ACTIVE",
        "KNOWN-GOOD",
        "RULES",
        "FROZEN",
        "LAST",
        "ROLLBACK",
    ]
    web = next(line for line in lines if line.startswith("web "))
    assert f"{bad} (v2, SUCCESS)" in web
    assert "  2  " in web  # known-good releases
    assert "health-failing inactive" in web
    assert web.split()[-2:] == ["no", "-"]  # not frozen, never rolled back
    docs = next(line for line in lines if line.startswith("docs "))
    assert "preview" in docs

    code, text = await railguard("status", "--json", "--url", url(stage))
    assert code == 0
    body = json.loads(text)
    assert body["services"][0]["railway"]["known_good"][0] == good


async def test_rollback_with_confirm_follows_it_to_success(stage: Stage) -> None:
    good, _ = await released(stage)
    command = asyncio.ensure_future(
        railguard(
            "rollback",
            "--service",
            "web",
            "--reason",
            "slow checkout",
            "--confirm",
            "CONFIRM",
            "--url",
            url(stage),
            "--poll-every",
            "0.005",
        )
    )
    while not command.done():  # the rollback's time passes on the stage's clock
        await stage.run_for(1)
    code, text = await command
    assert code == 0, text
    assert "rollback #1 of web: " in text
    assert text.splitlines()[-1].startswith("rollback #1 of web: succeeded in ")
    assert stage.rollbacks_sent() == [good]
    store = daemon_of(stage).store
    assert store is not None
    (record,) = await store.rollbacks("web")
    assert record.actor.startswith("manual:")
    assert record.reason == "slow checkout"


async def test_rollback_typed_confirm_on_a_terminal(
    stage: Stage, monkeypatch: pytest.MonkeyPatch
) -> None:
    good, bad = await released(stage)
    monkeypatch.setattr("sys.stdin", Terminal("CONFIRM\n"))
    code, text = await railguard(
        "rollback", "--service", "web", "--reason", "r", "--url", url(stage), "--no-wait"
    )
    assert code == 0, text
    assert f"from: {bad} (v2, SUCCESS)" in text
    assert "to:   the newest known-good release" in text
    assert "Type CONFIRM to roll back:" in text
    assert "follow it with: railguard status" in text
    store = daemon_of(stage).store
    assert store is not None
    (record,) = await store.rollbacks("web")
    assert record.to_deployment == good


async def test_rollback_anything_but_confirm_typed_aborts(
    stage: Stage, monkeypatch: pytest.MonkeyPatch
) -> None:
    await released(stage)
    monkeypatch.setattr("sys.stdin", Terminal("yes\n"))
    code, text = await railguard(
        "rollback", "--service", "web", "--to", "d-1", "--reason", "r", "--url", url(stage)
    )
    assert code == 2
    assert "to:   d-1" in text
    assert text.rstrip().endswith("aborted")
    store = daemon_of(stage).store
    assert store is not None
    assert await store.rollbacks("web") == []


@pytest.mark.parametrize(
    ("service", "message"),
    [("nope", "guards no service named 'nope'"), ("docs", "docs has no Railway ids")],
)
async def test_rollback_question_for_services_it_cannot_roll_back(
    stage: Stage,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    service: str,
    message: str,
) -> None:
    await released(stage)
    monkeypatch.setattr("sys.stdin", Terminal("CONFIRM\n"))
    code, _ = await railguard(
        "rollback", "--service", service, "--reason", "r", "--url", url(stage)
    )
    assert code == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--confirm", "yes"], "--confirm: type exactly CONFIRM (got 'yes')"),
        ([], "pass --confirm CONFIRM when not interactive"),
    ],
)
async def test_rollback_without_a_confirmation_exits_2(
    stage: Stage, capsys: pytest.CaptureFixture[str], extra: list[str], message: str
) -> None:
    await released(stage)
    code, _ = await railguard(
        "rollback", "--service", "web", "--reason", "r", "--url", url(stage), *extra
    )
    assert code == 2
    assert message in capsys.readouterr().err
    assert stage.rollbacks_sent() == []


async def test_a_refused_rollback_exits_2_with_the_daemons_message(
    stage: Stage, capsys: pytest.CaptureFixture[str]
) -> None:
    await released(stage)
    argv = words("rollback --service web --to d-x --reason r --confirm CONFIRM")
    code, _ = await railguard(*argv, "--url", url(stage))
    assert code == 2
    assert "d-x is not one of web's recent deployments (409)" in capsys.readouterr().err


async def test_a_failed_rollback_exits_1(stage: Stage) -> None:
    await released(stage)
    stage.emu.set_faults(deploy_outcome="FAILED")  # the replacement fails
    argv = words("rollback --service web --reason r --confirm CONFIRM --poll-every 0.005")
    command = asyncio.ensure_future(railguard(*argv, "--url", url(stage)))
    while not command.done():
        await stage.run_for(1)
    code, text = await command
    assert code == 1, text
    assert "failed" in text.splitlines()[-1]


async def test_freeze_and_unfreeze(stage: Stage, clock: FakeClock) -> None:
    await released(stage)
    store = daemon_of(stage).store
    assert store is not None
    code, text = await railguard(
        "freeze", "--service", "web", "--reason", "deploy freeze", "--url", url(stage)
    )
    assert (code, text) == (0, "web: automatic rollback frozen until unfrozen\n")
    frozen = await store.frozen("web", clock.time())
    assert frozen is not None
    assert frozen.reason == "deploy freeze"
    code, text = await railguard(
        "freeze", "--service", "web", "--reason", "r", "--until", "2h", "--url", url(stage)
    )
    assert code == 0
    assert "frozen until 20" in text
    code, text = await railguard("status", "--url", url(stage))
    assert "yes: r (manual:" in text
    code, text = await railguard(
        "unfreeze", "--service", "web", "--reason", "r", "--url", url(stage)
    )
    assert (code, text) == (0, "web: unfrozen\n")
    code, text = await railguard(
        "unfreeze", "--service", "web", "--reason", "r", "--url", url(stage)
    )
    assert (code, text) == (0, "web: was not frozen\n")
    assert await store.frozen("web", clock.time()) is None


async def test_a_bad_freeze_exits_2(stage: Stage, capsys: pytest.CaptureFixture[str]) -> None:
    await released(stage)
    code, _ = await railguard(
        "freeze", "--service", "web", "--reason", "r", "--until", "soon", "--url", url(stage)
    )
    assert code == 2
    err = capsys.readouterr().err
    assert "railguard: until: not a time or a duration: 'soon'" in err
    assert err.rstrip().endswith("(400)")


async def test_token_problems_exit_2(
    stage: Stage, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    await released(stage)
    monkeypatch.setenv("RAILGUARD_ADMIN_TOKEN", "not-the-token")
    assert (await railguard("status", "--url", url(stage)))[0] == 2
    assert "RAILGUARD_ADMIN_TOKEN is not the daemon's" in capsys.readouterr().err
    monkeypatch.delenv("RAILGUARD_ADMIN_TOKEN")
    assert (await railguard("status", "--url", url(stage)))[0] == 2
    assert "RAILGUARD_ADMIN_TOKEN is not set" in capsys.readouterr().err
    monkeypatch.setenv("RAILGUARD_ADMIN_TOKN", "typo")
    assert (await railguard("status", "--url", url(stage)))[0] == 2
    assert "unknown variable RAILGUARD_ADMIN_TOKN" in capsys.readouterr().err


async def test_a_daemon_that_is_not_running_exits_1(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RAILGUARD_ADMIN_TOKEN", ADMIN_TOKEN)
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    code, _ = await railguard("status", "--url", f"http://127.0.0.1:{port}")
    assert code == 1
    assert f"is railguard running at http://127.0.0.1:{port}?" in capsys.readouterr().err


async def test_a_failing_daemon_exits_1(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, stage: Stage
) -> None:
    await released(stage)
    await daemon_of(stage).store.close()  # type: ignore[union-attr]  # status now fails
    code, _ = await railguard("status", "--url", url(stage))
    assert code == 1
    assert "the daemon failed (500)" in capsys.readouterr().err


def test_formatting_of_what_the_api_gives() -> None:
    assert deployment_text(None) == "-"
    assert deployment_text({"id": "d", "status": "SUCCESS", "meta": {}}) == "d (SUCCESS)"
    record = {"id": 3, "service": "web", "from": "a", "to": "b", "error": None}
    assert progress_line(record | {"state": "intent"}) == "rollback #3 of web: intent: a -> b"
    assert progress_line(record | {"state": "sent"}) == "rollback #3 of web: sent"
    assert progress_line(record | {"state": "abandoned", "error": "gone"}).endswith(": gone")
    table = status_table({"services": []})
    assert table.splitlines()[0] == "railguard ?"
