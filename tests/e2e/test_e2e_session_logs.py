"""The controller logs of the e2e session hold no credential the session used.

The same check as tests/integration/test_session_logs.py (the check
itself: ``support.secret_scan.check_session_logs``): the e2e tier runs in a
session of its own (``make e2e``), with its own controller and its own
ServiceAccount tokens, so its logs are scanned at its end (``session_end``).
"""

from __future__ import annotations

import pytest

from support.secret_scan import SessionSecrets, check_session_logs

pytestmark = pytest.mark.session_end


def test_no_credential_in_any_controller_log_of_the_e2e_session(
    session_secrets: SessionSecrets,
) -> None:
    check_session_logs(session_secrets)
