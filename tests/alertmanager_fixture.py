"""A real Prometheus Alertmanager for tests, on a free port, with one receiver that sends nothing.

Use it by importing the fixture into a test module::

    from tests.alertmanager_fixture import alertmanager_server  # noqa: F401

and asking for ``alertmanager`` (its base URL). It is started once per test session, so tests
give their alerts keys of their own. Without Debian's ``prometheus-alertmanager`` binary
(listed in .ci/apt-packages) the tests are skipped, except in CI (``CI=true``), where they
fail.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests import servers

BINARIES = ("prometheus-alertmanager", "alertmanager")
"""Bounds a broken start only; Alertmanager is ready in well under a second."""
CONFIG = """\
route:
  receiver: "null"
receivers:
  - name: "null"
"""


@pytest.fixture(scope="session", name="alertmanager")
def alertmanager_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The base URL of an Alertmanager started once per test session."""
    alertmanager = servers.binary(BINARIES, "prometheus-alertmanager")
    root = tmp_path_factory.mktemp("alertmanager")
    config = root / "alertmanager.yml"
    config.write_text(CONFIG)
    process, url = servers.start(
        "alertmanager",
        lambda listen: [
            alertmanager,
            f"--config.file={config}",
            f"--storage.path={root / 'data'}",
            f"--web.listen-address={listen}",
            # Empty: no gossip port, so parallel sessions cannot form a cluster.
            "--cluster.listen-address=",
        ],
        root / "alertmanager.log",
    )
    try:
        yield url
    finally:
        servers.stop(process)
