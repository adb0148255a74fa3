"""Adversarial review of high availability (issue 14): each test is a finding."""

from __future__ import annotations

import pytest

from monitor.errors import ConfigError
from monitor.settings import load_environment

# -- DATABASE_URL: what libpq refuses only when it connects is said by `check` (exit 2) ------


@pytest.mark.parametrize(
    ("url", "said"),
    [
        ("postgresql://u:s3cr%zzet@db:5432/railguard", "invalid percent-encoded token"),
        ("postgresql://u:s3cret@db:5432/railguard?bogus=1", 'invalid URI query parameter: "bogus"'),
        ("postgresql://u:s3cret@db:notaport/railguard", "port 'notaport'"),
        ("postgresql://u:s3cret@db:5432/railguard?port=99999", "port '99999'"),
        ("postgresql://u:s3cret@db:5432/railguard?sslmode=bogus", "sslmode 'bogus'"),
        ("postgresql://u:s3cret@[::1/railguard", 'matching "]"'),
    ],
)
def test_a_database_url_libpq_cannot_use_is_a_config_error_without_the_password(
    url: str, said: str
) -> None:
    with pytest.raises(ConfigError, match="DATABASE_URL: ") as e:
        load_environment({"DATABASE_URL": url})
    assert said in str(e.value)
    assert "s3cr" not in str(e.value)


@pytest.mark.parametrize(
    "url",
    [
        "postgres://u:s3cret@db:5432/railguard",  # Heroku's scheme
        "postgresql://u:s3%40cret@db/railguard?sslmode=require",
        "postgresql://u:pw@h1:5432,h2:5433/railguard?target_session_attrs=read-write",
        "postgresql:///railguard?host=/var/run/postgresql",
        "postgresql://u@%2Fvar%2Frun%2Fpostgresql/railguard",
    ],
)
def test_a_database_url_libpq_can_use_is_kept(url: str) -> None:
    kept = load_environment({"DATABASE_URL": url}).database_url
    assert kept is not None
    assert kept.get_secret_value() == url
