"""The one error type a CLI command raises for a user mistake."""


class CLIError(Exception):
    """A one-line, user-facing error; the process exits non-zero without a traceback."""
