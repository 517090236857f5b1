"""Top-level conftest of the test tools' own tests: the same plugin as tests/ (tests/support)."""

pytest_plugins = ["support.plugin"]
