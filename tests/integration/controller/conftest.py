"""Fixtures of the controller integration tests (defined in tests/support/controller_harness.py)."""

from support.controller_harness import env, issuer_crds, manager_role

__all__ = ["env", "issuer_crds", "manager_role"]
