"""Every kind of certificate and CRL the controller makes (CertificateRequests
and Kubernetes CSRs of each key and SAN type, a sub-CA, renewed roots, CRLs
from spec.crl) passes zlint's and pkilint's RFC-level lints, waivers aside
(tests/support/lint/linters.py)."""

from __future__ import annotations

import pytest

from support.lint.controller_artefacts import CONTROLLER_CASES
from support.lint.linters import LintCase, LintRun


@pytest.mark.parametrize("case", CONTROLLER_CASES, ids=lambda case: case.id)
def test_controller_artefact_passes_the_rfc_lints(controller_lint: LintRun, case: LintCase) -> None:
    controller_lint.check(case.id)
