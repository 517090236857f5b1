"""``akv-issuer controller``: run the cert-manager external issuer controller.

Every flag has an environment variable fallback (shown in ``--help``), so a
Deployment can be configured either way; a flag given on the command line
wins over the environment.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import gc
import logging
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

from akv_issuer.cli.errors import CLIError
from akv_issuer.controller.api import parse_go_duration
from akv_issuer.controller.core.config import (
    LEADER_ELECTION_ID,
    ControllerConfig,
    default_identity,
    default_namespace,
)
from akv_issuer.keyvault import BudgetConfig

_TRUE = {"1", "true", "yes", "on"}
DEPRECATED_EMULATOR = (
    "--emulator (AKV_EMULATOR) is deprecated and will be removed: use "
    "--no-verify-challenge-resource (AKV_VERIFY_CHALLENGE_RESOURCE=false)"
)


def _env(name: str, default: Any) -> Any:
    value = os.environ.get(name)
    return default if value is None or value == "" else value


def _env_bool(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in _TRUE


def _env_switch(name: str, on: bool) -> bool:
    """An on/off variable whose unset (or empty) value means ``on``: any other
    value is on only when it is one of ``_TRUE``."""
    value = os.environ.get(name)
    if value is None or value == "":
        return on
    return value.strip().lower() in _TRUE


def _duration(text: str) -> dt.timedelta:
    try:
        value = parse_go_duration(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
    if value <= dt.timedelta(0):
        raise argparse.ArgumentTypeError(f"{text!r} must be longer than 0s")
    return value


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


class _DeprecatedEmulator(argparse.Action):
    """``--emulator``: the old name of ``--no-verify-challenge-resource``, remembered
    (in its own dest) so that a deprecation warning can be logged."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, **kwargs)

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        namespace.verify_challenge_resource = False
        setattr(namespace, self.dest, True)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    def flag(name: str, env: str, helptext: str, **kwargs: Any) -> None:
        default = kwargs.get("default")
        # Show the effective default (environment included) unless the text explains it.
        if default not in (None, False) and "(default" not in helptext:
            helptext = f"{helptext} (default {default})"
        parser.add_argument(name, help=f"{helptext} [env {env}]", **kwargs)

    def switch(name: str, env: str, helptext: str, *, on: bool, off_if: bool = False) -> None:
        # A feature switch: --name and --no-name, defaulting to its variable
        # (unset: `on`); `off_if` is an older variable that also turns it off.
        default = _env_switch(env, on) and not off_if
        flag(name, env, helptext, action=argparse.BooleanOptionalAction, default=default)

    flag(
        "--kubeconfig",
        "KUBECONFIG",
        "kubeconfig file (default: in-cluster, then $KUBECONFIG)",
        default=_env("KUBECONFIG", None),
    )
    flag(
        "--cluster-resource-namespace",
        "AKV_CLUSTER_RESOURCE_NAMESPACE",
        "namespace a ClusterIssuer's Secrets are read from (default: POD_NAMESPACE, the "
        "in-cluster namespace, else azure-keyvault-issuer-system)",
        default=_env("AKV_CLUSTER_RESOURCE_NAMESPACE", None),
    )
    flag(
        "--leader-elect",
        "AKV_LEADER_ELECT",
        "elect a leader on a Lease; standbys wait",
        action="store_true",
        default=_env_bool("AKV_LEADER_ELECT"),
    )
    flag(
        "--leader-election-namespace",
        "AKV_LEADER_ELECTION_NAMESPACE",
        "namespace of the leader Lease (default: as --cluster-resource-namespace)",
        default=_env("AKV_LEADER_ELECTION_NAMESPACE", None),
    )
    flag(
        "--leader-election-id",
        "AKV_LEADER_ELECTION_ID",
        "name of the leader Lease",
        default=_env("AKV_LEADER_ELECTION_ID", LEADER_ELECTION_ID),
    )
    flag(
        "--leader-election-identity",
        "POD_NAME",
        "this replica's identity in the Lease (default: hostname plus a random suffix)",
        default=None,
    )
    flag(
        "--lease-duration",
        "AKV_LEASE_DURATION",
        "Lease duration",
        type=_duration,
        default=_env("AKV_LEASE_DURATION", "15s"),
    )
    flag(
        "--renew-deadline",
        "AKV_RENEW_DEADLINE",
        "leader gives up if not renewed within",
        type=_duration,
        default=_env("AKV_RENEW_DEADLINE", "10s"),
    )
    flag(
        "--retry-period",
        "AKV_RETRY_PERIOD",
        "interval of Lease renewals and attempts",
        type=_duration,
        default=_env("AKV_RETRY_PERIOD", "2s"),
    )
    flag(
        "--metrics-bind-address",
        "AKV_METRICS_BIND_ADDRESS",
        "address of /metrics; 0 disables",
        default=_env("AKV_METRICS_BIND_ADDRESS", ":8080"),
    )
    flag(
        "--health-probe-bind-address",
        "AKV_HEALTH_PROBE_BIND_ADDRESS",
        "address of /healthz and /readyz; 0 disables",
        default=_env("AKV_HEALTH_PROBE_BIND_ADDRESS", ":8081"),
    )
    flag(
        "--crl-bind-address",
        "AKV_CRL_BIND_ADDRESS",
        "address of the CRL endpoint (/crl/issuer/<namespace>/<name>.crl, "
        "/crl/clusterissuer/<name>.crl), served by every replica; 0 disables",
        default=_env("AKV_CRL_BIND_ADDRESS", ":8082"),
    )
    flag(
        "--concurrency",
        "AKV_CONCURRENCY",
        "Key Vault sign calls in flight at once (requests are read and written by "
        "this many workers plus 8)",
        type=_positive_int,
        default=_env("AKV_CONCURRENCY", "4"),
    )
    flag(
        "--retry-budget",
        "AKV_RETRY_BUDGET",
        "how long (from a request's creation) throttling and transient Key Vault errors are "
        "retried before the request is Failed",
        type=_duration,
        default=_env("AKV_RETRY_BUDGET", "1h"),
    )
    flag(
        "--issuer-recheck-interval",
        "AKV_ISSUER_RECHECK_INTERVAL",
        "how often a Ready issuer's key and CA are checked again",
        type=_duration,
        default=_env("AKV_ISSUER_RECHECK_INTERVAL", "5m"),
    )
    flag(
        "--ca-expiry-warning",
        "AKV_CA_EXPIRY_WARNING",
        "warn (event and metric) this long before a CA certificate expires",
        type=_duration,
        default=_env("AKV_CA_EXPIRY_WARNING", "720h"),
    )
    flag(
        "--keyvault-timeout",
        "AKV_KEYVAULT_TIMEOUT",
        "timeout of one Key Vault call",
        type=_duration,
        default=_env("AKV_KEYVAULT_TIMEOUT", "30s"),
    )
    switch(
        "--keyvault-budget",
        "AKV_KEYVAULT_BUDGET",
        "wait for each vault's throttling budget (Key Vault's weighted 10-second limits, "
        "docs/controller.md) instead of running into 429; --no-keyvault-budget turns it "
        "off (default on)",
        on=True,
    )
    flag(
        "--keyvault-budget-units",
        "AKV_KEYVAULT_BUDGET_UNITS",
        "VAULT_URL=UNITS: a vault's budget per 10 s in software RSA-2048 transactions "
        "instead of Key Vault's 4000 (a subscription with other limits); repeatable, "
        "the variable comma-separated",
        action="append",
        default=None,
        metavar="VAULT_URL=UNITS",
    )
    flag(
        "--tls-ca-file",
        "AKV_TLS_CA_FILE",
        "extra CA bundle to trust for Key Vault (a local emulator)",
        default=_env("AKV_TLS_CA_FILE", None),
    )
    switch(
        "--verify-challenge-resource",
        "AKV_VERIFY_CHALLENGE_RESOURCE",
        "keep the Azure SDK's check that the auth challenge's resource matches the vault's "
        "domain; --no-verify-challenge-resource turns it off, only for a local Key Vault "
        "emulator, never against Azure (default on)",
        on=True,
        off_if=_env_bool("AKV_EMULATOR"),
    )
    # Deprecated alias of --no-verify-challenge-resource (and AKV_EMULATOR of
    # AKV_VERIFY_CHALLENGE_RESOURCE=false), kept so existing scripts and manifests
    # work; hidden from --help, `run` logs a warning when either is used.
    parser.add_argument(
        "--emulator",
        dest="deprecated_emulator",
        action=_DeprecatedEmulator,
        default=_env_bool("AKV_EMULATOR"),
        help=argparse.SUPPRESS,
    )
    switch(
        "--kubernetes-csrs",
        "AKV_KUBERNETES_CSRS",
        "also sign Kubernetes CertificateSigningRequests whose signerName is "
        "clusterissuers.<group>/<name> (needs the CSR rules of the shipped ClusterRole); "
        "--no-kubernetes-csrs turns it off (default on)",
        on=True,
    )
    # --- issue 25 point 3 (signer-linked ClusterTrustBundles) ---
    switch(
        "--cluster-trust-bundles",
        "AKV_CLUSTER_TRUST_BUNDLES",
        "publish the trust anchors of issuers with spec.clusterTrustBundles as "
        "signer-linked ClusterTrustBundles (Kubernetes 1.37+; needs the RBAC the Helm value "
        "controller.clusterTrustBundles renders); default off",
        on=False,
    )
    switch(
        "--pod-certificates",
        "AKV_POD_CERTIFICATES",
        "also sign PodCertificateRequests (Kubernetes 1.37+) addressed to an issuer with "
        "spec.podCertificates (needs the ClusterRole rules of the chart's "
        "controller.podCertificates; on an API server that does not serve them this is "
        "logged once and left off); --no-pod-certificates turns it off (default off)",
        on=False,
    )
    switch(
        "--issuer-ambient-credentials",
        "AKV_ISSUER_AMBIENT_CREDENTIALS",
        "let namespaced Issuers use the controller's own Azure identity (spec.auth unset) "
        "and federate its ServiceAccount (auth.workloadIdentity); "
        "--no-issuer-ambient-credentials confines them to auth.serviceAccountRef and "
        "auth.clientSecret, for clusters shared by tenants. ClusterIssuers are not "
        "affected (default on)",
        on=True,
    )
    flag(
        "--shutdown-timeout",
        "AKV_SHUTDOWN_TIMEOUT",
        "how long in-flight work may finish after SIGTERM",
        type=_duration,
        default=_env("AKV_SHUTDOWN_TIMEOUT", "30s"),
    )
    flag(
        "--log-format",
        "AKV_LOG_FORMAT",
        "text or json",
        choices=["text", "json"],
        default=_env("AKV_LOG_FORMAT", "text"),
    )
    flag(
        "--log-level",
        "AKV_LOG_LEVEL",
        "debug, info, warning or error",
        choices=["debug", "info", "warning", "error"],
        default=_env("AKV_LOG_LEVEL", "info"),
    )


def config_from_args(args: argparse.Namespace) -> ControllerConfig:
    def seconds(value: Any) -> float:
        if isinstance(value, str):
            value = _duration(value)
        return float(value.total_seconds())

    def delta(value: Any) -> dt.timedelta:
        return _duration(value) if isinstance(value, str) else value

    cluster_ns = args.cluster_resource_namespace or default_namespace()
    units = args.keyvault_budget_units
    if units is None:
        units = [i.strip() for i in _env("AKV_KEYVAULT_BUDGET_UNITS", "").split(",") if i.strip()]
    try:
        budget = BudgetConfig.parse(
            units, enabled=bool(args.keyvault_budget), max_waiting=int(args.concurrency)
        )
    except ValueError as err:
        raise CLIError(str(err)) from None
    return ControllerConfig(
        cluster_resource_namespace=cluster_ns,
        kubeconfig=args.kubeconfig,
        concurrency=int(args.concurrency),
        retry_budget=delta(args.retry_budget),
        issuer_recheck_interval=delta(args.issuer_recheck_interval),
        ca_expiry_warning=delta(args.ca_expiry_warning),
        leader_elect=bool(args.leader_elect),
        leader_election_namespace=args.leader_election_namespace or cluster_ns,
        leader_election_id=args.leader_election_id,
        identity=args.leader_election_identity or os.environ.get("POD_NAME") or default_identity(),
        lease_duration=seconds(args.lease_duration),
        renew_deadline=seconds(args.renew_deadline),
        retry_period=seconds(args.retry_period),
        metrics_bind_address=args.metrics_bind_address,
        health_probe_bind_address=args.health_probe_bind_address,
        crl_bind_address=args.crl_bind_address,
        keyvault_timeout=seconds(args.keyvault_timeout),
        keyvault_budget=budget,
        tls_ca_file=args.tls_ca_file,
        verify_challenge_resource=bool(args.verify_challenge_resource),
        kubernetes_csrs=bool(args.kubernetes_csrs),
        cluster_trust_bundles=bool(args.cluster_trust_bundles),
        pod_certificates=bool(args.pod_certificates),
        issuer_ambient_credentials=bool(args.issuer_ambient_credentials),
        shutdown_timeout=seconds(args.shutdown_timeout),
    )


def run(args: argparse.Namespace) -> int:
    # Imported here so `akv-issuer --help` does not load the whole controller.
    from lightkube import ConfigError

    from akv_issuer.controller.app.manager import run_controller
    from akv_issuer.controller.observability.audit import AUDIT_LOGGER
    from akv_issuer.runtime.logs import setup_logging

    setup_logging(args.log_format, args.log_level, always_info=(AUDIT_LOGGER,))
    if args.deprecated_emulator:
        logging.getLogger(__name__).warning(DEPRECATED_EMULATOR)
    config = config_from_args(args)
    # Everything imported so far lives as long as the process: moved out of
    # the collector's reach, the full collections that listing many requests
    # triggers no longer walk it each time (listing 100,000 finished requests:
    # 5.35/5.78 -> 3.63/3.26 s of CPU in an in-process replay of the list).
    gc.freeze()
    # A young generation of 10,000 (net container allocations) instead of 700:
    # what a certificate allocates (decoded objects, the SDK's pipeline state)
    # mostly dies young or is acyclic, yet crossing 700 ran a collection, and
    # every tenth one a generation-1 pass, about every seven certificates.
    # Measured over a 1,000-certificate burst (gc.callbacks): 0.12-0.18 s of
    # collection in 4.2-4.6 s of CPU -> 0.02 s in 4.3 s; idle VmRSS unchanged
    # (73.0 MiB either way). Cyclic garbage still goes, a little later.
    gc.set_threshold(10_000, 10, 10)
    try:
        return asyncio.run(run_controller(config))
    except ConfigError as err:
        # A missing or unusable kubeconfig: the user's input, not a bug.
        raise CLIError(f"kubeconfig: {err}") from None


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "controller",
        help="run the cert-manager external issuer controller",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_arguments(parser)
    handler: Callable[[argparse.Namespace], int] = run
    # The main CLI dispatches on `handler`.
    parser.set_defaults(handler=handler)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="akv-issuer controller",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_arguments(parser)
    try:
        return run(parser.parse_args(argv))
    except CLIError as err:
        print(f"akv-issuer: error: {err}", file=sys.stderr)
        return 1
