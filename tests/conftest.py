"""Shared pytest configuration: fixture plugins live in tests/fixtures/."""

pytest_plugins = [
    "fixtures.emulator",
    "fixtures.cluster",
]
