"""Shared pytest configuration: fixture plugins live in tests/fixtures/."""

import pytest

pytest_plugins = [
    "fixtures.secret_scan",  # first: the others import it
    "fixtures.emulator",
    "fixtures.cluster",
]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Run the end-to-end tests last, and the ``session_end`` tests after them.

    The end-to-end tests share the session's control plane but start
    cert-manager's controller on it, whose built-in approver approves every
    CertificateRequest in the cluster; the integration tests need to approve
    (or not) by themselves. ``session_end`` tests look at what the whole
    session left behind (the controllers' logs).
    """
    last = [item for item in items if item.get_closest_marker("session_end")]
    rest = [item for item in items if not item.get_closest_marker("session_end")]
    e2e = [item for item in rest if "e2e" in item.path.parts]
    others = [item for item in rest if "e2e" not in item.path.parts]
    items[:] = others + e2e + last
