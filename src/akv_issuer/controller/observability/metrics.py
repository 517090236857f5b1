"""Prometheus series of the controller, on a registry of its own.

An own registry (rather than the process-global default) keeps tests and
several controllers in one process from colliding; the process collectors are
added explicitly so the usual ``process_*`` series are still exported.
"""

from __future__ import annotations

import contextlib
import time

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from akv_issuer.controller.api import IssuerReason
from akv_issuer.keyvault import VaultBudgets
from akv_issuer.runtime.buildinfo import build_info
from akv_issuer.runtime.errors import UnexpectedErrors

PREFIX = "akv_issuer"


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        build = build_info()
        Gauge(
            f"{PREFIX}_build_info",
            "Always 1; the labels say which build runs (version, commit, Python).",
            ["version", "commit", "python"],
            registry=self.registry,
        ).labels(build.version, build.commit or "unknown", build.python).set(1)
        issuer = ["issuer_kind", "issuer_namespace", "issuer_name"]
        self.issued = Counter(
            f"{PREFIX}_certificaterequests_issued",
            "CertificateRequests signed and written as Issued.",
            issuer,
            registry=self.registry,
        )
        self.failed = Counter(
            f"{PREFIX}_certificaterequests_failed",
            "CertificateRequests ended as Failed or Denied, by reason.",
            [*issuer, "reason"],
            registry=self.registry,
        )
        self.pending = Counter(
            f"{PREFIX}_certificaterequests_pending_transitions",
            "Times a CertificateRequest was left Pending, by reason.",
            [*issuer, "reason"],
            registry=self.registry,
        )
        # By request kind (CertificateRequest, CertificateSigningRequest,
        # PodCertificateRequest): how each ended. The counters above keep their
        # labels (dashboards and alerts read them); this one tells the kinds apart.
        self.finished = Counter(
            f"{PREFIX}_requests_finished",
            "Requests ended, by request kind and outcome (Issued, Denied, Failed).",
            ["request_kind", "outcome"],
            registry=self.registry,
        )
        self.sign_seconds = Histogram(
            f"{PREFIX}_sign_duration_seconds",
            "Time to build and sign one certificate (Key Vault round trip included).",
            issuer,
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=self.registry,
        )
        self.keyvault_calls = Counter(
            f"{PREFIX}_keyvault_requests",
            "Key Vault operations made by the controller, by operation and HTTP status.",
            ["operation", "status_code"],
            registry=self.registry,
        )
        # auth.serviceAccountRef: TokenRequests (cached, so about one per
        # ServiceAccount and hour), by HTTP status ("201", "403", "404", "error").
        self.service_account_tokens = Counter(
            f"{PREFIX}_serviceaccount_token_requests",
            "ServiceAccount TokenRequests made for auth.serviceAccountRef, by result.",
            ["result"],
            registry=self.registry,
        )
        self.ca_expiry = Gauge(
            f"{PREFIX}_ca_certificate_expiry_timestamp_seconds",
            "NotAfter of each issuer's CA certificate, as a Unix timestamp.",
            issuer,
            registry=self.registry,
        )
        self.ca_expiring = Gauge(
            f"{PREFIX}_ca_certificate_expiring",
            "1 when the issuer's CA certificate expires within the warning window.",
            issuer,
            registry=self.registry,
        )
        self.key_version_pending = Gauge(
            f"{PREFIX}_key_version_pending",
            "1 while the issuer's key has a newer version than the one signing and no CA "
            "certificate is stored for it yet (keyVersion unset).",
            issuer,
            registry=self.registry,
        )
        self.ca_renewal_due = Gauge(
            f"{PREFIX}_ca_renewal_due",
            "1 while the issuer's CA certificate is in its renewal window and was not "
            "renewed (an intermediate, automatic renewal off, or a failed renewal).",
            issuer,
            registry=self.registry,
        )
        self.ca_renewals = Counter(
            f"{PREFIX}_ca_renewals",
            "Automatic renewals of a root CA certificate, by result (Renewed, RenewalFailed).",
            [*issuer, "result"],
            registry=self.registry,
        )
        self.reissue_pending = Gauge(
            f"{PREFIX}_reissue_pending",
            "Certificates of the issuer still to be re-issued after a CA change (spec.reissue).",
            issuer,
            registry=self.registry,
        )
        self.reissue_triggered = Counter(
            f"{PREFIX}_reissue_triggered",
            "Certificates whose re-issuance the controller triggered after a CA change.",
            issuer,
            registry=self.registry,
        )
        self.trust_bundle_certificates = Gauge(
            f"{PREFIX}_trust_bundle_certificates",
            "CA certificates in the issuer's published trust bundle (the current CA's "
            "anchor plus previous ones still in their overlap).",
            issuer,
            registry=self.registry,
        )
        self.trust_bundle_failures = Counter(
            f"{PREFIX}_trust_bundle_failures",
            "Trust bundle publications that failed (write refused, conflict, API error); "
            "each is retried with backoff.",
            issuer,
            registry=self.registry,
        )
        self.issuer_ready = Gauge(
            f"{PREFIX}_issuer_ready",
            "1 when the issuer is Ready, else 0.",
            issuer,
            registry=self.registry,
        )
        # Which reason keeps the issuer not Ready (docs/api.md lists them): alert on
        # the ones only an administrator can fix (Forbidden, KeyVaultNetworkDenied, ...).
        self.issuer_not_ready = Gauge(
            f"{PREFIX}_issuer_not_ready_reason",
            "1 for the Ready condition's reason while the issuer is not Ready; no series "
            "while it is Ready.",
            [*issuer, "reason"],
            registry=self.registry,
        )
        # spec.pool: each member, 1 while it signs (Ready), 0 while set aside.
        self.pool_member_ready = Gauge(
            f"{PREFIX}_pool_member_ready",
            "CA pools: 1 while the member signs (Ready), 0 while it is set aside "
            "(Unavailable or Invalid).",
            [*issuer, "member"],
            registry=self.registry,
        )
        self._pool_members: dict[tuple[str, str, str], set[str]] = {}
        self.queue_depth = Gauge(
            f"{PREFIX}_workqueue_depth",
            "Keys waiting in a work queue (ready now).",
            ["queue"],
            registry=self.registry,
        )
        self.queue_delayed = Gauge(
            f"{PREFIX}_workqueue_delayed",
            "Keys scheduled for a later retry in a work queue.",
            ["queue"],
            registry=self.registry,
        )
        self.is_leader = Gauge(
            f"{PREFIX}_leader",
            "1 while this replica holds the leader lease (or runs without election).",
            registry=self.registry,
        )
        self.status_write_retries = Counter(
            f"{PREFIX}_status_write_retries",
            "Status writes retried with a result kept in memory (never re-signed).",
            registry=self.registry,
        )
        self.revocations = Counter(
            f"{PREFIX}_revocations",
            "Revocation annotations handled, by result (accepted, refused).",
            [*issuer, "result"],
            registry=self.registry,
        )
        self.crl_entries = Gauge(
            f"{PREFIX}_crl_entries",
            "Revoked certificates listed in the issuer's current CRL.",
            issuer,
            registry=self.registry,
        )
        self.crl_number = Gauge(
            f"{PREFIX}_crl_number",
            "CRL number of the issuer's current CRL.",
            issuer,
            registry=self.registry,
        )
        self.crl_this_update = Gauge(
            f"{PREFIX}_crl_this_update_timestamp_seconds",
            "thisUpdate of the issuer's current CRL, as a Unix timestamp.",
            issuer,
            registry=self.registry,
        )
        self.crl_next_update = Gauge(
            f"{PREFIX}_crl_next_update_timestamp_seconds",
            "nextUpdate of the issuer's current CRL, as a Unix timestamp; relying parties "
            "reject the CRL after it.",
            issuer,
            registry=self.registry,
        )
        self.crl_age = _AgeCollector(
            f"{PREFIX}_crl_age_seconds",
            "Seconds since thisUpdate of the issuer's current CRL (computed at scrape).",
            issuer,
        )
        self.registry.register(self.crl_age)
        self.crl_signs = Counter(
            f"{PREFIX}_crl_signs",
            "CRLs signed for the issuer, by result (Signed, Failed); each Signed is one "
            "Key Vault sign.",
            [*issuer, "result"],
            registry=self.registry,
        )

        self.events_dropped = Counter(
            f"{PREFIX}_events_dropped",
            "Kubernetes Events not sent because the event queue was full or the "
            "process was shutting down.",
            registry=self.registry,
        )
        self.informer_handler_errors = Counter(
            f"{PREFIX}_informer_handler_errors",
            "Objects an informer's handler raised on (logged with a traceback; the "
            "object waits for its next change or the next list).",
            ["informer"],
            registry=self.registry,
        )
        self.unexpected_errors = Counter(
            f"{PREFIX}_unexpected_errors",
            "Exceptions no code path expected (a bug, not a cluster's or a vault's "
            "failure), by component: logged with a traceback once per object and error "
            "type, then retried with backoff.",
            ["component"],
            registry=self.registry,
        )
        # Where every part of the controller reports such an exception.
        self.unexpected = UnexpectedErrors(self.unexpected_errors)
        self.signs_in_flight = Gauge(
            f"{PREFIX}_keyvault_signs_in_flight",
            "Key Vault sign calls in flight (at most --concurrency).",
            registry=self.registry,
        )
        # The per-vault throttling budget (keyvault.budget; the gateway waits on it).
        self.budget_wait_seconds = Histogram(
            f"{PREFIX}_keyvault_budget_wait_seconds",
            "Time a Key Vault sign or key read waited for its vault's throttling budget.",
            ["operation"],
            buckets=(0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=self.registry,
        )
        self.budgets = BudgetCollector()
        self.registry.register(self.budgets)

    def set_not_ready_reason(
        self, kind: str, namespace: str, name: str, reason: str | None
    ) -> None:
        """The issuer's not-Ready reason (None: it is Ready): one series at a time."""
        for known in IssuerReason:
            if str(known) != reason:
                with contextlib.suppress(KeyError):
                    self.issuer_not_ready.remove(kind, namespace, name, str(known))
        if reason is not None:
            self.issuer_not_ready.labels(kind, namespace, name, reason).set(1)

    def set_pool_members(
        self, kind: str, namespace: str, name: str, ready: dict[str, bool]
    ) -> None:
        """The issuer's pool members (empty: no pool); members no longer listed go."""
        labels = (kind, namespace, name)
        for gone in self._pool_members.get(labels, set()) - set(ready):
            with contextlib.suppress(KeyError):
                self.pool_member_ready.remove(*labels, gone)
        for member, up in ready.items():
            self.pool_member_ready.labels(*labels, member).set(1 if up else 0)
        if ready:
            self._pool_members[labels] = set(ready)
        else:
            self._pool_members.pop(labels, None)

    def forget_issuer(self, kind: str, namespace: str, name: str) -> None:
        self.set_not_ready_reason(kind, namespace, name, None)
        self.set_pool_members(kind, namespace, name, {})
        for gauge in (
            self.ca_expiry,
            self.ca_expiring,
            self.issuer_ready,
            self.key_version_pending,
            self.ca_renewal_due,
            self.reissue_pending,
            self.trust_bundle_certificates,
            self.trust_bundle_failures,
            self.crl_entries,
            self.crl_number,
            self.crl_this_update,
            self.crl_next_update,
        ):
            with contextlib.suppress(KeyError):
                gauge.remove(kind, namespace, name)
        self.crl_age.forget((kind, namespace, name))


class BudgetCollector(Collector):
    """The vaults' budgets at scrape time (the gateway sets ``source``): the share of
    each vault's 10-second window in use, and its throttled calls -- 429s the vault
    answered (``by="vault"``) and calls the budget refused at once because their
    issuer had enough waiting (``by="budget"``)."""

    USED = f"{PREFIX}_keyvault_budget_used_ratio"
    THROTTLED = f"{PREFIX}_keyvault_throttled"

    def __init__(self) -> None:
        self.source: VaultBudgets | None = None

    def describe(self) -> list[Metric]:
        return list(self._families())

    def collect(self) -> list[Metric]:
        used, throttled = self._families()
        budgets = self.source
        if budgets is None:
            return [used, throttled]
        for vault, ratio in budgets.in_use().items():
            used.add_metric([vault], ratio)
        for vault, stats in list(budgets.stats.items()):
            throttled.add_metric([vault, "vault"], stats.throttled)
            throttled.add_metric([vault, "budget"], stats.refused)
        return [used, throttled]

    def _families(self) -> tuple[GaugeMetricFamily, CounterMetricFamily]:
        return (
            GaugeMetricFamily(
                self.USED,
                "Share of the vault's 10-second throttling budget in use (1 = its figure).",
                labels=["vault"],
            ),
            CounterMetricFamily(
                self.THROTTLED,
                "Key Vault calls throttled, by vault: 429s the vault answered (by=vault), "
                "calls refused at once by the budget (by=budget).",
                labels=["vault", "by"],
            ),
        )


class _AgeCollector(Collector):
    """A gauge whose value is "now minus a stored timestamp", computed at
    scrape time (a plain Gauge would only be as fresh as its last set)."""

    def __init__(self, name: str, documentation: str, labels: list[str]) -> None:
        self._name = name
        self._documentation = documentation
        self._labels = labels
        self._since: dict[tuple[str, ...], float] = {}

    def set(self, labels: tuple[str, ...], since: float) -> None:
        self._since[labels] = since

    def forget(self, labels: tuple[str, ...]) -> None:
        self._since.pop(labels, None)

    def describe(self) -> list[GaugeMetricFamily]:
        return [GaugeMetricFamily(self._name, self._documentation, labels=self._labels)]

    def collect(self) -> list[GaugeMetricFamily]:
        family = GaugeMetricFamily(self._name, self._documentation, labels=self._labels)
        now = time.time()
        for labels, since in list(self._since.items()):
            family.add_metric(list(labels), max(0.0, now - since))
        return [family]
