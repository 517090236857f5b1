"""Top-level conftest of tests/: the suite's plugin (tests/support/plugin.py)."""

pytest_plugins = ["support.plugin"]
