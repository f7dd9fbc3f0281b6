"""Shared pytest configuration for the flowproto test suite.

pytest-trio runs in trio mode (see ``setup.cfg``), so ``async def`` tests run
under Trio without a marker.

With ``FLOWPROTO_NO_SKIPS=1`` (set by ``.ci/run`` once every extra installed) a
skipped test fails the run: CI runs every test it has, or says loudly why not.

``HYPOTHESIS_PROFILE=ci`` (set by ``.ci/run``) makes the property tests deterministic:
each tests the same examples on every run (seeded from the test itself), keeps no example
database, and has no per-example deadline, so a loaded machine cannot fail one for being
slow. Run without it, locally, they draw new examples each time.
"""

from __future__ import annotations

import os

import pytest
from hypothesis import settings

settings.register_profile("ci", derandomize=True, database=None, deadline=None, print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if os.environ.get("FLOWPROTO_NO_SKIPS") != "1":
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = reporter.stats.get("skipped", []) if reporter is not None else []
    if skipped:
        names = ", ".join(sorted({report.nodeid for report in skipped}))
        print(f"\nFLOWPROTO_NO_SKIPS=1 but {len(skipped)} tests skipped: {names}")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
