"""Building the plan from a config file: the config and its rule files read and checked,
each service planned (:mod:`monitor.plan`), PR environments' templates tried
(:mod:`monitor.pr_plan`). ``railguard check`` and ``railguard run`` start here.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from pydantic import SecretStr

from monitor.configtypes import Expansions
from monitor.environment import Environment
from monitor.errors import ConfigError
from monitor.maintenance import check_windows
from monitor.plan import Plan, plan_service
from monitor.pr_plan import check_pr_environments
from monitor.redact import Redactor
from monitor.rules import builtin_rules_path, load_rule_files
from monitor.settings import Config, load_config


def _redactor(env: Environment, expansions: Expansions) -> Redactor:
    """Hides what the config's ``${VAR}`` references held and railguard's own secrets."""
    values = dict(expansions.values)
    for name, info in Environment.model_fields.items():
        secret = getattr(env, name)
        if isinstance(secret, SecretStr):
            values.setdefault(str(info.validation_alias), secret.get_secret_value())
    return Redactor(values, expansions.written)


def _rule_paths(config: Config, config_path: Path) -> list[Path]:
    if config.rule_files is None:
        return [builtin_rules_path()]
    return [(config_path.parent / p).resolve() for p in config.rule_files]


def build_plan(path: Path, env: Environment, environ: Mapping[str, str] | None = None) -> Plan:
    """Load the config at ``path`` and its rule files, and check everything."""
    expansions = Expansions()
    config = load_config(path, env, environ, expansions)
    rules = load_rule_files(_rule_paths(config, path))
    for tier_name, policy in config.tiers.items():
        for index, name in enumerate(policy.rules):
            if name not in rules:
                raise ConfigError(
                    f"{path}: tiers.{tier_name}.rules[{index}]: unknown rule {name!r} "
                    f"(known: {', '.join(sorted(rules))})"
                )
    names = [s.name for s in config.services]
    check_windows(path, config.maintenance, names, config.tiers)
    services = tuple(
        plan_service(
            f"{path}: {config.where(i)}",
            service,
            config,
            rules,
            lambda *key, i=i: f"{path}: {config.where(i, *key)}",
        )
        for i, service in enumerate(config.services)
    )
    plan = Plan(
        path=path,
        config=config,
        env=env,
        services=services,
        rules=rules,
        redactor=_redactor(env, expansions),
    )
    check_pr_environments(plan)
    return plan
