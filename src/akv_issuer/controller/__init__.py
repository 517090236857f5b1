"""Kubernetes side of the issuer: CRD types, reconcilers, runtime."""
