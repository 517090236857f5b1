"""Fixtures of tests/lint: each matrix is made once and linted in one batch
(one zlint process, pkilint in this process); the tests then look up their case."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from lightkube import ApiError, AsyncClient
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import Namespace
from lightkube.resources.rbac_authorization_v1 import ClusterRoleBinding

from akv_devcluster import DevCluster
from akv_emulator.testing import EmulatorProcess
from akv_issuer.controller.api import CertificateRequest, ClusterIssuer, Issuer
from support.controller_harness import open_env
from support.lint.cli_artefacts import CLI_CASES, CLIBuilder, build_cli_artefacts
from support.lint.controller_artefacts import CONTROLLER_CASES, build_controller_artefacts
from support.lint.linters import LintRun


@pytest.fixture(scope="session")
def cli_lint(
    emulator_process: EmulatorProcess, tmp_path_factory: pytest.TempPathFactory
) -> LintRun:
    """Every CLI artefact (tests/support/lint/cli_artefacts.py), linted."""
    tmp = tmp_path_factory.mktemp("lint-cli")
    built = build_cli_artefacts(emulator_process, tmp)
    run = LintRun.lint(CLI_CASES, built.artefacts, built.errors, tmp / "lint-report.txt")
    print(f"\nlint report of the CLI artefacts: {run.report_path}")
    return run


@pytest_asyncio.fixture(scope="module")
async def controller_lint(
    kube_client: AsyncClient,
    manager_role: str,
    devcluster: DevCluster,
    emulator_process: EmulatorProcess,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[LintRun]:
    """Every controller artefact (tests/support/lint/controller_artefacts.py), linted;
    one controller in its own namespace, stopped after the module's tests (it
    watches every namespace, so it must not outlive them into other tests)."""
    tmp = tmp_path_factory.mktemp("lint-controller")
    namespace = f"akv-lint-{uuid.uuid4().hex[:6]}"
    await kube_client.create(Namespace(metadata=ObjectMeta(name=namespace)))
    env, binding = await open_env(
        kube_client, devcluster, emulator_process, namespace, manager_role, tmp
    )
    cli = CLIBuilder(emulator_process, tmp, prefix="lint-ctrl")
    built = None
    try:
        built = await build_controller_artefacts(env, cli)
        run = LintRun.lint(CONTROLLER_CASES, built.artefacts, built.errors, tmp / "lint-report.txt")
        print(f"\nlint report of the controller artefacts: {run.report_path}")
        yield run
    finally:
        for controller in env.controllers:
            controller.kill()
        if built is not None:
            await built.cleanup()
        cli.keys.close()
        await env.kv.close()
        for name in env.cluster_issuers:
            with contextlib.suppress(ApiError):
                await kube_client.delete(ClusterIssuer, name)
        await kube_client.deletecollection(Issuer, namespace=namespace)
        await kube_client.deletecollection(CertificateRequest, namespace=namespace)
        with contextlib.suppress(ApiError):
            await kube_client.delete(ClusterRoleBinding, binding)
        with contextlib.suppress(ApiError):
            await kube_client.delete(Namespace, namespace)
