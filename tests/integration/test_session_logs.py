"""The controller logs of the whole test session hold no credential the session used.

Runs after every other test (``session_end``, ordered in tests/conftest.py):
it scans every log file the controller harness wrote in this session for the
emulator's service-principal secret and federated token, the controllers' and
test identities' ServiceAccount tokens, whatever the emulator's admin API
handed out, and for the shapes of the emulator's access tokens, JWTs and PEM
private keys (tests/fixtures/secret_scan.py). Run alone, it has nothing to scan
and skips. tests/unit/test_secret_scan.py shows the scan finds what is planted.
"""

from __future__ import annotations

import pytest

from fixtures.secret_scan import SessionSecrets

pytestmark = [pytest.mark.integration, pytest.mark.session_end]


def test_no_credential_in_any_controller_log_of_the_session(
    session_secrets: SessionSecrets,
) -> None:
    logs = [path for path in session_secrets.logs if path.exists()]
    if not logs:
        pytest.skip("no controller ran in this session")
    secrets = session_secrets.all_secrets()
    assert secrets, "the session registered controller logs but no credential to look for"
    findings = session_secrets.scan()
    assert not findings, "credentials in controller logs:\n" + "\n".join(map(str, findings))
    print(f"\nscanned {len(logs)} controller logs for {len(secrets)} credentials: clean")
