"""The issuer on the runtime: one package per feature, wired by the app.

``api`` (the CRD model and every user-visible name) < ``observability``
(metrics, audit records) < ``core`` (what every feature shares: value types,
the issuer side's interface and hooks, the Key Vault call accounting, the
settings) < the features ``issuers``, ``requests``, ``ca_lifecycle``,
``revocation``, ``identity`` (independent of each other, each with one
``setup()``) < ``app`` (the manager calling each ``setup()``). The order is
an import-linter contract (pyproject.toml); docs/controller.md has the map.
"""
