"""End-to-end fixtures: the real cert-manager controller plus our controller.

One cert-manager controller and one azure-keyvault-issuer controller serve the
whole session (starting them is the slow part); every test gets its own
namespace and its own issuers. The controller harness of the integration
tests (tests/integration/controller/controller_harness.py) is reused as is.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration" / "controller"))

from controller_harness import issuer_crds, manager_role
from e2e_harness import cert_manager, e2e, session_env

__all__ = ["cert_manager", "e2e", "issuer_crds", "manager_role", "session_env"]
