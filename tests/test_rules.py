"""Rule files: strict models, duplicates, and the dry run that refuses broken rules at load."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from monitor.errors import ConfigError
from monitor.model import Baseline, Op, Rule, Signal
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
        "latency-p95-high": (Signal.LATENCY_P95, Op.GT, 1.0, 300.0),
        "latency-p99-high": (Signal.LATENCY_P99, Op.GT, 2.5, 300.0),
        "latency-p95-regression": (Signal.LATENCY_P95, Op.GT, None, 300.0),
        "error-rate-regression": (Signal.ERROR_RATE, Op.GT, 0.01, 120.0),
    }
    assert rules["deployment-crashed"].spec.tolerance == 0.5
    regression = rules["error-rate-regression"].spec.resolve(15.0)
    assert regression.baseline == Baseline(factor=2.0, min_requests=200, confidence=0.95)
    assert regression.describe() == "error_rate > 1% and > 2x baseline for 2m"
    latency = rules["latency-p95-regression"].spec.resolve(15.0)
    assert latency.describe() == "latency_p95 > 1.5x baseline for 5m"
    assert rules["latency-p95-high"].spec.resolve(15.0).describe() == "latency_p95 > 1s for 5m"
    # Each dry-runs at the default interval and at Railway's poll.
    for loaded in rules.values():
        for interval in (15.0, 60.0):
            rule = loaded.spec.resolve(interval)
            assert dry_run(rule, interval) is None, rule.name


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
        pytest.param(
            {"signal": '"latency_p95"', "threshold": '"5%"'},
            'latency_p95 is a duration: write the threshold as "500ms"',
            id="percent latency",
        ),
        pytest.param(
            {"threshold": '"500ms"'},
            "not a number or a percentage such as \"5%\": '500ms' (durations are for latency",
            id="duration error rate",
        ),
        pytest.param({"threshold": '"lots%"'}, "not a percentage: 'lots%'", id="bad percent"),
        pytest.param({"threshold": "true"}, 'a threshold is a number, "5%"', id="bool threshold"),
        pytest.param({"threshold": ""}, "a rule needs a threshold, a baseline, or both", id="none"),
        pytest.param(
            {"signal": '"memory"', "baseline": "{ factor = 2 }"},
            "baseline: memory is not measured over requests",
            id="memory baseline",
        ),
        pytest.param(
            {"op": '"<"', "baseline": "{ factor = 2 }"},
            "op must be > or >=, not <",
            id="baseline below",
        ),
        pytest.param(
            {"baseline": "{ factor = 0.5 }"},
            "rules[0].baseline.factor: Input should be greater than 1",
            id="factor below one",
        ),
        pytest.param(
            {"baseline": "{ factor = 2, min_requests = 1 }"},
            "rules[0].baseline.min_requests: Input should be greater than or equal to 10",
            id="min requests",
        ),
        pytest.param(
            {"baseline": "{ factor = 2, confidence = 1 }"},
            "rules[0].baseline.confidence",
            id="certainty",
        ),
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


@pytest.mark.parametrize(("written", "seconds"), [('"750ms"', 0.75), ('"2s"', 2.0), ("0.3", 0.3)])
def test_latency_thresholds_are_durations(write: Write, written: str, seconds: float) -> None:
    text = rule_text(signal='"latency_p99"', threshold=written)
    rules = load_rule_files([write(text, "l.toml")])
    assert rules["r"].spec.threshold == seconds


def test_baseline_rules_dry_run_at_load() -> None:
    base = Baseline(factor=3.0, min_requests=50)
    for signal in (Signal.ERROR_RATE, Signal.LATENCY_P50, Signal.LATENCY_P99):
        assert dry_run(_rule(signal=signal, threshold=None, baseline=base), 15.0) is None
    # A floor that no value above the baseline can pass: the dry run says so.
    floor = _rule(signal=Signal.ERROR_RATE, threshold=0.2, baseline=Baseline(factor=100.0))
    assert dry_run(floor, 15.0) is None
    # A huge factor on an error rate still leaves room to fire (the baseline is near zero).
    assert (
        dry_run(_rule(signal=Signal.ERROR_RATE, threshold=None, baseline=floor.baseline), 15.0)
        is None
    )


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
