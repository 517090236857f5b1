"""The controller logs of the whole test session hold no credential the session used.

Runs after every other test (``session_end``, ordered by tests/support/plugin.py):
it scans every log file the controller harness wrote in this session for the
emulator's service-principal secret and federated token, the controllers' and
test identities' ServiceAccount tokens, whatever the emulator's admin API
handed out, and for the shapes of the emulator's access tokens, JWTs and PEM
private keys (tests/support/secret_scan.py). Run alone, it has nothing to scan
and skips. tests/unit/test_secret_scan.py shows the scan finds what is planted.
The e2e tier, which runs controllers too, has the same test
(tests/e2e/test_e2e_session_logs.py).
"""

from __future__ import annotations

import pytest

from support.secret_scan import SessionSecrets, check_session_logs

pytestmark = pytest.mark.session_end


def test_no_credential_in_any_controller_log_of_the_session(
    session_secrets: SessionSecrets,
) -> None:
    check_session_logs(session_secrets)
