"""What the tests share: fixture plugins, harnesses and helpers (tests/README.md).

Importable as ``support`` because pyproject.toml's pytest ``pythonpath`` puts
``tests/`` on the path; test files import from here and never edit
``sys.path``. ``support.plugin`` is the one pytest plugin both top-level
conftests (tests/ and tools/tests/) register: it loads the fixture plugins
(``secret_scan``, ``emulator``, ``cluster``, ``node``) and sets each test's
tier marker from its folder (``tiers``). The rest are plain modules:
``controller_harness`` (our controller as a subprocess), ``e2e_harness``
(with cert-manager), ``node_install`` (the chart on a node), ``deploy``
(helm/kubectl rendering), ``pki`` (keys, CSRs, a local signer, openssl),
``api_schema`` (our CRDs' schemas), ``tls`` (a throwaway CA for local TLS
servers), ``fakekube`` (an in-memory Kubernetes API server behind the real
lightkube client, its own README.md) with ``fakeclock``, ``lint`` (the
certificate lint harness of tests/lint), ``measure`` (a rough
measurement script, not a test).
"""
