"""Fixtures of the controller integration tests (defined in controller_harness)."""

from controller_harness import env, issuer_crds, manager_role

__all__ = ["env", "issuer_crds", "manager_role"]
