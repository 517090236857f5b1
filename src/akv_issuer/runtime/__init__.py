"""A small, generic Kubernetes controller runtime on top of lightkube.

Nothing in this package knows about issuers, certificates or Key Vault: it
is the machinery any controller needs (list-then-watch informers, a
de-duplicating work queue with backoff, workers that act on what a reconcile
returns, Lease leader election, Kubernetes events, probe and metrics
endpoints, logging). The issuer lives in :mod:`akv_issuer.controller` on top
of it. ``tests/unit/test_layers.py`` keeps the boundary: no module here
imports from ``akv_issuer.controller``, ``akv_issuer.keyvault`` or
``akv_issuer.pki``.
"""
