"""The certificate and CRL lint harness of tests/lint (docs/linting.md): ``linters``
(zlint and pkilint over a batch, waivers), ``cli_artefacts`` and
``controller_artefacts`` (the matrices), ``csrs`` (their CSRs), ``fixtures``
(``cli_lint``, ``controller_lint``: each matrix made and linted once)."""
