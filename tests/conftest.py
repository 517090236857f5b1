"""Shared pytest configuration: fixture plugins live in tests/fixtures/."""

import pytest

pytest_plugins = [
    "fixtures.emulator",
    "fixtures.cluster",
]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Run the end-to-end tests last.

    They share the session's control plane but start cert-manager's controller
    on it, whose built-in approver approves every CertificateRequest in the
    cluster; the integration tests need to approve (or not) by themselves.
    """
    e2e = [item for item in items if "e2e" in item.path.parts]
    others = [item for item in items if "e2e" not in item.path.parts]
    items[:] = others + e2e
