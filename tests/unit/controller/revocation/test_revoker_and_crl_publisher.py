"""Revocation and CRLs (``akv_issuer.controller.revocation``): the revoker acting
on the revoke annotation, the CRL publisher signing each issuer's CRL through
Key Vault, and the revocation ConfigMap both write with a resourceVersion
precondition and one in-process lock per issuer.

Wired by ``revocation.setup(host, issuers)`` into a ``core.Host`` on the
in-memory API server, with informers and workers running; the issuer is a
ClusterIssuer with ``spec.crl.enabled`` whose successful check is given
directly; Key Vault is the CA's FakeSigner (``gate`` holds a sign in flight,
so a test can change the ConfigMap or the lease meanwhile).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from lightkube.resources.core_v1 import ConfigMap

from akv_issuer.controller import revocation
from akv_issuer.controller.api import CLUSTER_ISSUER_KIND, CertificateRequest, ClusterIssuer
from akv_issuer.controller.core import IssuerKey
from akv_issuer.keyvault import ErrorKind, KeyVaultError
from support.controllerkit import (
    CLUSTER_NS,
    FakeHost,
    FakeIssuers,
    TestCA,
    condition,
    events,
    issued_request,
    issuer_object,
    issuer_spec,
)
from support.fakeclock import FakeClock, settle, wait_until
from support.fakekube import FakeKube

VAULT = IssuerKey(CLUSTER_ISSUER_KIND, "", "vault")
REVOKE = "azure-keyvault-issuer.gonicus.de/revoke"
REVOKED = "azure-keyvault-issuer.gonicus.de/revoked"
LIST = "akv-revocations-clusterissuer-vault"  # in the cluster resource namespace


@dataclass
class Revocations:
    kube: FakeKube
    clock: FakeClock
    host: FakeHost
    issuers: FakeIssuers
    ca: TestCA

    def request(self, name: str, *, revoke: str | None = "keyCompromise") -> x509.Certificate:
        """A request issued a certificate of this CA, annotated to be revoked."""
        leaf = self.ca.issue(f"{name}.example.com")
        annotations = {REVOKE: revoke} if revoke is not None else None
        self.kube.add(issued_request(name, VAULT, leaf, self.ca, annotations=annotations))
        return leaf

    def annotate(self, name: str, reason: str = "keyCompromise") -> None:
        def change(obj: dict[str, Any]) -> None:
            obj["metadata"].setdefault("annotations", {})[REVOKE] = reason

        self.kube.modify(CertificateRequest, name, "apps", change)

    def annotations(self, name: str) -> dict[str, str]:
        obj = self.kube.get(CertificateRequest, name, "apps")
        assert obj is not None
        return dict(obj["metadata"].get("annotations") or {})

    def config_map(self) -> dict[str, Any] | None:
        return self.kube.get(ConfigMap, LIST, CLUSTER_NS)

    def lines(self) -> list[str]:
        found = self.config_map()
        return str(((found or {}).get("data") or {}).get("revocations") or "").splitlines()

    def crl(self) -> x509.CertificateRevocationList | None:
        pem = ((self.config_map() or {}).get("data") or {}).get("crl.pem")
        return x509.load_pem_x509_crl(pem.encode()) if pem else None

    def crl_number(self) -> int | None:
        crl = self.crl()
        if crl is None:
            return None
        return crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number

    def crl_current(self) -> dict[str, Any] | None:
        return condition(self.kube.get(ClusterIssuer, "vault"), "CRLCurrent")


@pytest.fixture
async def revocations(
    kube: FakeKube, clock: FakeClock, host: FakeHost, issuers: FakeIssuers, ca: TestCA
) -> Revocations:
    kube.add(issuer_object(VAULT, spec=issuer_spec(crl={"enabled": True, "validity": "24h"})))
    stored = kube.get(ClusterIssuer, "vault")
    assert stored is not None
    issuers.checked[VAULT] = ca.checked(VAULT, stored, at=clock.now())
    revocation.setup(host, issuers)
    await host.start()
    return Revocations(kube, clock, host, issuers, ca)


def key_id(ca: TestCA) -> str:
    """The CA key as a revocation line names it (SHA-256 over its SPKI, 8 octets)."""
    der = ca.key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(der).hexdigest()[:16]


def another_replicas_line(ca: TestCA, serial: int) -> Callable[[dict[str, Any]], None]:
    """A revocation recorded by another replica meanwhile (a ConfigMap update)."""
    line = (
        f"{serial:x} superseded 2030-01-01T00:00:00Z 2031-01-01T00:00:00Z {key_id(ca)} apps/other"
    )

    def change(obj: dict[str, Any]) -> None:
        data = obj.setdefault("data", {})
        data["revocations"] = "".join(
            f"{x}\n" for x in sorted([*str(data.get("revocations") or "").splitlines(), line])
        )

    return change


# -- the revoker ---------------------------------------------------------------------------


async def test_a_revoked_certificate_is_recorded_marked_and_listed_in_a_crl_that_verifies(
    revocations: Revocations,
) -> None:
    t = revocations
    leaf = t.request("web")

    await wait_until(lambda: REVOKED in t.annotations("web"), what="marked revoked")
    await wait_until(lambda: t.crl() is not None, what="CRL signed")
    await settle()

    serial = f"{leaf.serial_number:x}"
    (line,) = t.lines()
    assert line.startswith(f"{serial} keyCompromise 2030-01-01T00:00:00Z ")
    assert line.endswith(f" {key_id(t.ca)} apps/web")
    assert t.annotations("web")[REVOKED] == (
        f"serial={serial} reason=keyCompromise at=2030-01-01T00:00:00Z"
    )
    crl = t.crl()
    assert crl is not None
    assert crl.is_signature_valid(t.ca.key.public_key())
    assert crl.issuer == t.ca.cert.subject
    entry = crl.get_revoked_certificate_by_serial_number(leaf.serial_number)
    assert entry is not None
    assert entry.extensions.get_extension_for_class(x509.CRLReason).value.reason == (
        x509.ReasonFlags.key_compromise
    )
    assert crl.next_update_utc - crl.last_update_utc == dt.timedelta(hours=24)
    assert t.ca.signer.calls == 1  # one sign per CRL
    (on_request,) = events(t.kube, reason="Revoked", name="web")
    assert on_request["message"].startswith(f"certificate serial {serial} revoked (keyCompromise)")
    assert f"recorded in ConfigMap {CLUSTER_NS}/{LIST}" in on_request["message"]
    assert len(events(t.kube, reason="Revoked", name="vault")) == 1
    config_map = t.config_map()
    assert config_map is not None
    assert config_map["metadata"]["labels"]["app.kubernetes.io/managed-by"] == (
        "azure-keyvault-issuer"
    )
    assert config_map["metadata"]["annotations"]["azure-keyvault-issuer.gonicus.de/issuer"] == (
        "ClusterIssuer/vault"
    )


async def test_the_crl_condition_is_written_beside_ready_under_its_own_field_manager(
    revocations: Revocations,
) -> None:
    t = revocations
    t.issuers.changed(VAULT)

    await wait_until(lambda: t.crl_current() is not None, what="CRLCurrent")

    current = t.crl_current()
    assert current is not None
    assert (current["status"], current["reason"]) == ("True", "Current")
    assert current["message"] == ("CRL number 1 with 0 entries, valid until 2030-01-02T00:00:00Z")
    assert current["observedGeneration"] == 1
    ready = condition(t.kube.get(ClusterIssuer, "vault"), "Ready")
    assert ready is not None
    assert ready["status"] == "True"  # the issuer reconciler's condition is left alone
    owned = t.kube.managers(ClusterIssuer, "vault")
    assert '.status.conditions[type="CRLCurrent"]' in " ".join(
        owned["azure-keyvault-issuer-crl/Apply/status"]
    )


async def test_an_unchanged_crl_is_not_signed_again_until_it_is_due(
    revocations: Revocations,
) -> None:
    t = revocations
    t.issuers.changed(VAULT)
    await wait_until(lambda: t.crl() is not None, what="CRL 1")
    await settle()

    t.issuers.changed(VAULT)  # say, the issuer was checked again
    await settle()
    assert t.ca.signer.calls == 1
    assert t.crl_number() == 1

    await t.clock.advance(17 * 3600)  # nextUpdate is 8h away: inside renewBefore (24h / 3)
    t.issuers.changed(VAULT)
    await wait_until(lambda: t.crl_number() == 2, what="CRL 2")
    assert t.ca.signer.calls == 2
    crl = t.crl()
    assert crl is not None
    assert crl.last_update_utc.isoformat() == "2030-01-01T17:00:00+00:00"


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        (
            "not-issued",
            "the request is not Issued (Ready reason Pending): only an issued certificate "
            "can be revoked; the annotation is acted on if the request is issued later",
        ),
        (
            "other-ca",
            "was not signed by the current CA of ClusterIssuer vault",
        ),
        (
            "bad-reason",
            "revocation reason 'certificateHold' is not one of",
        ),
    ],
)
async def test_a_revocation_that_cannot_be_done_is_refused_once_and_nothing_recorded(
    revocations: Revocations, setup: str, message: str
) -> None:
    t = revocations
    leaf = (TestCA("Another CA") if setup == "other-ca" else t.ca).issue("web.example.com")
    obj = issued_request(
        "web",
        VAULT,
        leaf,
        t.ca,
        annotations={REVOKE: "certificateHold" if setup == "bad-reason" else "keyCompromise"},
    )
    if setup == "not-issued":
        ready = obj["status"]["conditions"][-1]
        ready.update(status="False", reason="Pending", message="waiting")
        del obj["status"]["certificate"]
    t.kube.add(obj)

    await wait_until(lambda: events(t.kube, reason="RevocationRefused") != [], what="refused")

    (refused,) = events(t.kube, reason="RevocationRefused")
    assert refused["type"] == "Warning"
    assert message in refused["message"]
    assert REVOKED not in t.annotations("web")
    assert t.config_map() is None
    assert t.ca.signer.calls == 0

    t.kube.modify(
        CertificateRequest, "web", "apps", lambda o: o["metadata"].update(labels={"a": "b"})
    )
    await settle()
    assert len(events(t.kube, reason="RevocationRefused")) == 1  # not repeated


async def test_a_revocation_waits_for_an_issuer_not_checked_yet(
    revocations: Revocations,
) -> None:
    t = revocations
    del t.issuers.checked[VAULT]
    t.request("web")

    await wait_until(lambda: events(t.kube, reason="RevocationDelayed") != [], what="delayed")

    (delayed,) = events(t.kube, reason="RevocationDelayed")
    assert delayed["message"] == (
        "ClusterIssuer vault is not Ready; the revocation waits for its next check"
    )
    assert VAULT in t.issuers.check_requests
    assert t.config_map() is None
    assert REVOKED not in t.annotations("web")


async def test_a_list_another_controller_owns_is_never_written(
    revocations: Revocations,
) -> None:
    t = revocations
    t.kube.add(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": LIST, "namespace": CLUSTER_NS},
            "data": {"mine": "yes"},
        }
    )
    t.request("web")

    await wait_until(lambda: events(t.kube, reason="RevocationRefused") != [], what="refused")

    (refused,) = events(t.kube, reason="RevocationRefused")
    assert refused["message"] == (
        f"ConfigMap {CLUSTER_NS}/{LIST} exists and is not managed by azure-keyvault-issuer; "
        "nothing recorded"
    )
    config_map = t.config_map()
    assert config_map is not None
    assert config_map["data"] == {"mine": "yes"}
    assert t.kube.calls("patch", ConfigMap) == []


# -- the ConfigMap changes meanwhile: 409 ---------------------------------------------------


async def test_a_revocation_recorded_meanwhile_by_another_replica_is_kept(
    revocations: Revocations,
) -> None:
    t = revocations
    t.request("first")
    await wait_until(lambda: REVOKED in t.annotations("first"), what="first revoked")
    await wait_until(lambda: t.crl() is not None, what="first CRL")
    await settle()

    held = t.kube.hold("patch", ConfigMap)
    leaf = t.request("second")
    await held.arrived.wait()
    t.kube.modify(ConfigMap, LIST, CLUSTER_NS, another_replicas_line(t.ca, 0xABCDEF))
    held.release()

    await wait_until(lambda: REVOKED in t.annotations("second"), what="second revoked")
    await wait_until(lambda: len(t.lines()) == 3, what="three lines")
    serials = {line.split(" ")[0] for line in t.lines()}
    assert {"abcdef", f"{leaf.serial_number:x}"} <= serials
    conflicts = [c for c in t.kube.calls("patch", ConfigMap) if c.status == 409]
    assert len(conflicts) == 1


async def test_a_revocation_another_replica_dated_ahead_of_this_clock_is_listed_as_of_now(
    revocations: Revocations,
) -> None:
    # A replica whose clock runs five minutes ahead recorded a revocation: the
    # CRL signed now lists it at its thisUpdate (RFC 5280 forbids a later
    # date), first time, with one sign and no failure on the way.
    t = revocations
    t.issuers.changed(VAULT)
    await wait_until(lambda: t.crl() is not None, what="first CRL")
    await settle()
    line = f"abcdef superseded 2030-01-01T00:05:00Z 2031-01-01T00:00:00Z {key_id(t.ca)} apps/other"

    def change(obj: dict[str, Any]) -> None:
        obj.setdefault("data", {})["revocations"] = f"{line}\n"

    t.kube.modify(ConfigMap, LIST, CLUSTER_NS, change)
    t.issuers.changed(VAULT)  # the next run of the publisher reads the list anew

    await wait_until(lambda: t.crl_number() == 2, what="second CRL")
    await settle()
    crl = t.crl()
    assert crl is not None
    entry = crl.get_revoked_certificate_by_serial_number(0xABCDEF)
    assert entry is not None
    assert entry.revocation_date_utc == crl.last_update_utc
    assert crl.last_update_utc == dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
    assert t.ca.signer.calls == 2
    current = t.crl_current()
    assert current is not None
    assert (current["status"], current["reason"]) == ("True", "Current")


async def test_a_crl_whose_list_changed_while_signing_is_signed_again_with_every_entry(
    revocations: Revocations,
) -> None:
    """The CRL publisher's write carries the resourceVersion it read: a revocation
    that landed during the sign (another replica) makes it 409, and the CRL is
    signed again with that entry -- the first one is never served."""
    t = revocations
    t.ca.signer.gate = asyncio.Event()
    leaf = t.request("web")
    await wait_until(lambda: t.ca.signer.calls == 1, what="CRL sign in flight")

    t.kube.modify(ConfigMap, LIST, CLUSTER_NS, another_replicas_line(t.ca, 0xABCDEF))
    t.ca.signer.gate.set()

    await wait_until(lambda: t.crl() is not None, what="CRL written")
    await settle()
    crl = t.crl()
    assert crl is not None
    assert crl.is_signature_valid(t.ca.key.public_key())
    assert {r.serial_number for r in crl} == {leaf.serial_number, 0xABCDEF}
    assert t.crl_number() == 1  # the CRL never written did not use up a number
    assert t.ca.signer.calls == 2
    crl_writes = [c for c in t.kube.calls("patch", ConfigMap) if "crl.pem" in c.body["data"]]
    assert [c.status for c in crl_writes] == [409, 200]


async def test_a_revocation_waits_while_the_crl_is_being_signed(
    revocations: Revocations,
) -> None:
    """One lock per issuer: the revoker does not write the list while the CRL
    publisher is between reading it and writing the CRL."""
    t = revocations
    t.ca.signer.gate = asyncio.Event()
    t.issuers.changed(VAULT)
    await wait_until(lambda: t.ca.signer.calls == 1, what="CRL sign in flight")
    writes = len(t.kube.calls("create", ConfigMap)) + len(t.kube.calls("patch", ConfigMap))

    leaf = t.request("web")
    await settle()
    assert len(t.kube.calls("create", ConfigMap)) + len(t.kube.calls("patch", ConfigMap)) == writes
    assert REVOKED not in t.annotations("web")

    t.ca.signer.gate.set()
    await wait_until(lambda: REVOKED in t.annotations("web"), what="revoked")
    await wait_until(lambda: t.crl_number() == 2, what="CRL 2")
    crl = t.crl()
    assert crl is not None
    assert crl.get_revoked_certificate_by_serial_number(leaf.serial_number) is not None
    assert [c.status for c in t.kube.calls("patch", ConfigMap)] == [200, 200]  # no 409


# -- the lease -------------------------------------------------------------------------------


async def test_a_replica_that_lost_its_lease_signs_and_writes_no_crl(
    revocations: Revocations,
) -> None:
    t = revocations
    t.host.lease_lost = True

    t.issuers.changed(VAULT)
    await settle()

    assert t.ca.signer.calls == 0
    assert t.config_map() is None
    assert t.crl_current() is None
    assert t.host.sample("keyvault_requests_total", operation="sign", status_code="200") == 0


async def test_a_replica_that_lost_its_lease_leaves_a_due_crl_to_the_next_leader(
    revocations: Revocations,
) -> None:
    t = revocations
    t.issuers.changed(VAULT)
    await wait_until(lambda: t.crl() is not None, what="CRL 1")
    await settle()
    served = t.config_map()

    t.host.lease_lost = True
    await t.clock.advance(20 * 3600)  # CRL 1 is due for re-signing
    t.issuers.changed(VAULT)
    await settle()

    assert t.ca.signer.calls == 1
    assert t.config_map() == served  # CRL 1 is still what every replica serves


# -- when re-signing fails ----------------------------------------------------------------


async def test_while_key_vault_fails_the_stored_crl_is_served_and_the_condition_says_so(
    revocations: Revocations,
) -> None:
    t = revocations
    t.issuers.changed(VAULT)
    await wait_until(lambda: t.crl() is not None, what="CRL 1")
    served = (t.config_map() or {})["data"]["crl.pem"]

    await t.clock.advance(20 * 3600)  # due: nextUpdate is 4 h away
    t.ca.signer.fail_next(transient_error(), times=2)
    t.issuers.changed(VAULT)
    await wait_until(lambda: (t.crl_current() or {}).get("reason") == "ResignFailing")

    current = t.crl_current()
    assert current is not None
    assert current["status"] == "False"
    assert current["message"] == (
        "re-signing the CRL fails (Key Vault: the vault answered 503); CRL number 1 is "
        "served until its nextUpdate 2030-01-02T00:00:00Z"
    )
    assert (t.config_map() or {})["data"]["crl.pem"] == served
    (failed,) = events(t.kube, reason="CRLSignFailed")
    assert failed["type"] == "Warning"

    # Backing off now: a check of the issuer does not cut that short, a revocation does.
    await t.clock.advance(5 * 3600)  # past nextUpdate
    first = t.request("first")
    await wait_until(lambda: (t.crl_current() or {}).get("reason") == "Expired")

    current = t.crl_current()
    assert current is not None
    assert current["message"].startswith(
        "CRL number 1 expired at 2030-01-02T00:00:00Z and could not be re-signed "
        "(Key Vault: the vault answered 503)"
    )
    assert REVOKED in t.annotations("first")  # recorded: the next CRL will list it
    assert len(events(t.kube, reason="CRLSignFailed")) == 1  # once per distinct failure

    second = t.request("second")  # Key Vault is back
    await wait_until(lambda: t.crl_number() == 2, what="CRL 2")
    crl = t.crl()
    assert crl is not None
    assert {r.serial_number for r in crl} == {first.serial_number, second.serial_number}
    current = t.crl_current()
    assert current is not None
    assert (current["status"], current["reason"]) == ("True", "Current")


async def test_no_crl_is_signed_for_an_issuer_not_checked_yet(
    revocations: Revocations,
) -> None:
    t = revocations
    del t.issuers.checked[VAULT]

    t.issuers.changed(VAULT)
    await wait_until(lambda: t.crl_current() is not None, what="CRLCurrent")

    current = t.crl_current()
    assert current is not None
    assert (current["status"], current["reason"]) == ("False", "NotSigned")
    assert current["message"] == "no CRL signed yet: ClusterIssuer vault is not Ready"
    assert VAULT in t.issuers.check_requests
    assert t.ca.signer.calls == 0


def transient_error() -> Exception:
    return KeyVaultError(ErrorKind.TRANSIENT, "the vault answered 503", status=503)
