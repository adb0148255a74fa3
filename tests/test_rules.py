"""Rule files: strict models, duplicates, and the dry run that refuses broken rules at load."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from monitor.errors import ConfigError
from monitor.model import Op, Rule, Signal
from monitor.rules import builtin_rules_path, dry_run, load_rule_files

Write = Callable[..., Path]


def rule_text(**fields: str) -> str:
    base = {"name": '"r"', "signal": '"error_rate"', "op": '">"', "threshold": "0.1", "for": '"1m"'}
    base.update(fields)
    body = "\n".join(f"{k} = {v}" for k, v in base.items() if v)
    return f"[[rules]]\n{body}\n"


def test_builtin_rules_are_the_seed_rules() -> None:
    rules = load_rule_files([builtin_rules_path()])
    summary = {
        name: (r.spec.signal, r.spec.op, r.spec.threshold, r.spec.for_) for name, r in rules.items()
    }
    assert summary == {
        "health-failing": (Signal.HEALTH, Op.LT, 1.0, 180.0),
        "error-rate": (Signal.ERROR_RATE, Op.GT, 0.05, 120.0),
        "memory-high": (Signal.MEMORY, Op.GT, 0.9, 300.0),
        "deployment-crashed": (Signal.DEPLOYMENT, Op.LT, 1.0, 60.0),
    }
    assert rules["deployment-crashed"].spec.tolerance == 0.5


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        pytest.param(
            {"threshold": "5"},
            "can never fire: error_rate values lie in 0..1, none is > 5 "
            '(rates are fractions: did you mean "5%"?)',
            id="percent confusion",
        ),
        pytest.param(
            {"op": '">="', "threshold": "0"},
            "always fires: every error_rate value (0..1) is >= 0",
            id="always fires",
        ),
        pytest.param(
            {"signal": '"health"', "op": '">"', "threshold": "1"},
            "can never fire: health values lie in 0..1",
            id="health above one",
        ),
        pytest.param(
            {"signal": '"deployment"', "op": '"<"', "threshold": "0"},
            "can never fire: deployment values lie in 0..1",
            id="deployment below zero",
        ),
        pytest.param(
            {"signal": '"deployment"', "op": '"<"', "threshold": "2"},
            "always fires: every deployment value (0..1) is < 2",
            id="deployment always below two",
        ),
        pytest.param({"op": '"=>"'}, "rules[0].op: Input should be", id="bad op"),
        pytest.param({"signal": '"latency"'}, "rules[0].signal: Input should be", id="bad signal"),
        pytest.param({"name": '"Bad Name"'}, "rules[0].name: String should match", id="bad name"),
        pytest.param({"tolerance": "1.5"}, "rules[0].tolerance", id="tolerance above one"),
        pytest.param({"for": '"soon"'}, "rules[0].for: not a duration", id="bad for"),
        pytest.param({"extra": "1"}, "rules[0].extra: unknown key", id="unknown key"),
        pytest.param({"for": ""}, "rules[0].for: required key is missing", id="missing for"),
    ],
)
def test_broken_rules_fail_at_load(write: Write, fields: dict[str, str], expected: str) -> None:
    path = write(rule_text(**fields), "rules.toml")
    with pytest.raises(ConfigError) as caught:
        load_rule_files([path])
    assert f"{path}: " in str(caught.value)
    assert expected in str(caught.value)


def test_duplicate_rule_names_name_both_files(write: Write) -> None:
    a = write(rule_text(), "a.toml")
    b = write(rule_text(), "b.toml")
    with pytest.raises(
        ConfigError, match=f"{b}: rules\\[0\\].name: rule 'r' is already defined in {a}"
    ):
        load_rule_files([a, b])


def test_empty_rule_file(write: Write) -> None:
    with pytest.raises(ConfigError, match="rules"):
        load_rule_files([write("rules = []\n", "empty.toml")])


def test_percent_thresholds(write: Write) -> None:
    rules = load_rule_files([write(rule_text(threshold='"12.5%"'), "p.toml")])
    assert rules["r"].spec.threshold == 0.125


def _rule(**kw: object) -> Rule:
    base: dict[str, object] = {
        "name": "r",
        "signal": Signal.MEMORY,
        "op": Op.GT,
        "threshold": 0.9,
        "for_": 60.0,
        "max_gap": 30.0,
    }
    base.update(kw)
    return Rule(**base)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "rule",
    [
        _rule(),
        _rule(for_=0.0),
        _rule(tolerance=0.5),
        _rule(signal=Signal.HEALTH, op=Op.EQ, threshold=0.0),
        _rule(signal=Signal.HEALTH, op=Op.NE, threshold=1.0),
        _rule(signal=Signal.DEPLOYMENT, op=Op.LT, threshold=1.0, tolerance=0.5),
        _rule(signal=Signal.DEPLOYMENT, op=Op.EQ, threshold=0.0),
        _rule(op=Op.LE, threshold=0.1),
    ],
)
def test_dry_run_accepts_sane_rules(rule: Rule) -> None:
    assert dry_run(rule, interval=15.0) is None


def test_dry_run_refuses_a_window_no_sample_can_cover() -> None:
    problem = dry_run(_rule(max_gap=10.0), interval=15.0)
    assert problem is not None
    assert "max_gap 10s is shorter than the interval 15s" in problem
