"""The pytest plugin of the whole suite: fixture plugins, tier markers, order.

Registered by both top-level conftests (tests/conftest.py, tools/tests/conftest.py);
pytest registers a plugin module once however often it is named.
"""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from types import FrameType

import pytest

from support.tiers import NoTier, tier_of

pytest_plugins = [
    "support.secret_scan",  # first: the others import it
    "support.emulator",
    "support.cluster",
    "support.node",
]


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def pytest_configure(config: pytest.Config) -> None:
    # `make <tier>` ends a tier over its time limit with SIGTERM (hack/tier.sh):
    # handled like Ctrl-C, pytest then tears the session fixtures down (clusters,
    # emulators, controllers) instead of dying with them still running.
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _interrupt)


# tryfirst: before `-m` deselects by marker.
@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark every test with its tier (support/tiers.py); ``session_end`` tests last.

    ``session_end`` tests look at what the whole session left behind (the
    controllers' logs).
    """
    tiers: dict[Path, str] = {}
    for item in items:
        if item.path not in tiers:
            try:
                tiers[item.path] = tier_of(item.path, config.rootpath)
            except NoTier as exc:
                raise pytest.UsageError(str(exc)) from None
        item.add_marker(tiers[item.path])
    last = [item for item in items if item.get_closest_marker("session_end")]
    rest = [item for item in items if not item.get_closest_marker("session_end")]
    items[:] = rest + last
