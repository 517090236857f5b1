"""Features used where the shipped RBAC does not allow them (issue 24, point 5).

The controller runs under the roles a default install binds (no re-issuing,
no revocation confirmations, ConfigMaps in the cluster resource namespace
only) or those plus a namespace grant, against the real kube-apiserver: its
403s are the API server's own. Each feature must say which permission is
missing and which chart value grants it (reason ``Forbidden``), keep what it
can (signing, a recorded revocation), and work once the grant is given.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import uuid
from typing import Any

from cryptography import x509
from lightkube import ApiError
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import ConfigMap, Namespace, Secret
from lightkube.types import PatchType

from akv_issuer.controller.api import API_VERSION, CertificateRequest, Issuer
from akv_issuer.controller.core import IssuerKey
from akv_issuer.controller.revocation.store import ANNOTATION_REVOKE, ANNOTATION_REVOKED, list_name
from support.controller_harness import CA, Env, condition, csr_pem, wait_for


async def _issuer_in(env: Env, namespace: str, name: str, spec: dict[str, Any]) -> None:
    await env.kube.create(
        Issuer(
            apiVersion=API_VERSION,
            kind="Issuer",
            metadata=ObjectMeta(name=name, namespace=namespace),
            spec=spec,
        )
    )


async def _wait_condition(
    env: Env, name: str, namespace: str, type_: str, status: str, reason: str
) -> dict[str, Any]:
    found: dict[str, Any] = {}

    async def check() -> bool:
        obj = await env.get_issuer(name, namespace=namespace)
        cond = condition(obj, type_) or {}
        found.clear()
        found.update(cond)
        return cond.get("status") == status and cond.get("reason") == reason

    await wait_for(check, what=f"{namespace}/{name} {type_}={status}/{reason}", env=env)
    return found


async def _issue(env: Env, name: str, issuer: str, namespace: str) -> x509.Certificate:
    await env.create_request(name, csr_pem("ec"), issuer, namespace=namespace)
    await env.approve(name, namespace=namespace)
    request = await env.wait_request(name, "Issued", namespace=namespace)
    return x509.load_pem_x509_certificates(base64.b64decode(request["status"]["certificate"]))[0]


async def _revoke(env: Env, name: str, namespace: str) -> None:
    await env.kube.patch(
        CertificateRequest,
        name,
        {"metadata": {"annotations": {ANNOTATION_REVOKE: "keyCompromise"}}},
        namespace=namespace,
        patch_type=PatchType.MERGE,
    )


async def _wait_warning(env: Env, name: str, namespace: str, message: str) -> None:
    """A Warning event Forbidden with exactly ``message`` on ``name``."""

    async def check() -> bool:
        found = await env.events_for(name, namespace)
        return ("Warning", "Forbidden", message) in found

    await wait_for(check, what=f"Forbidden on {name}: {message}", env=env)


async def _configmap(env: Env, name: str, namespace: str) -> dict[str, Any] | None:
    try:
        return (await env.kube.get(ConfigMap, name, namespace=namespace)).to_dict()
    except ApiError as err:
        if err.status.code == 404:
            return None
        raise


async def test_reissue_without_its_switch_says_forbidden_and_works_once_granted(
    env: Env,
) -> None:
    await env.bind_features()  # the default install: rbac.reissue off
    old = await env.make_ca("EC", curve="P-256")
    name = f"reissue-{uuid.uuid4().hex[:6]}"
    await env.create_issuer(name, env.issuer_spec(old, reissue={"onCAChange": True}))
    controller = env.start_controller()
    await env.wait_issuer(name, "True")
    new = await env.rotate_ca(old.name, "EC", curve="P-256")
    await env.kube.patch(
        Issuer,
        name,
        {"spec": {"keyVersion": new.key_version}},
        namespace=env.namespace,
        patch_type=PatchType.MERGE,
    )
    reissuing = await _wait_condition(env, name, env.namespace, "Reissuing", "True", "Forbidden")
    assert reissuing["message"] == (
        "re-issuing stopped: the controller may not get/list/patch certificates and "
        "certificates/status (cert-manager.io) cluster-wide (forbidden); grant it with the "
        "Helm value rbac.reissue=true (kustomize: the component reissue); retried at the "
        "next check"
    )
    # A failing sweep is retried at the next periodic check, not restarted by
    # the check its own end asks for (that was a tight loop of 403s).
    assert controller.log().count("re-issuing stopped") <= 2
    # Signing is not affected.
    ready = await env.wait_issuer(name, "True")
    assert ready["status"]["keyVersion"] == new.key_version

    # The value switched on: the next check (within 30 s while re-issuing) finishes.
    await env.bind_features("reissue")
    await _wait_condition(env, name, env.namespace, "Reissuing", "False", "Complete")


async def test_revocation_without_its_switch_is_recorded_and_says_forbidden(env: Env) -> None:
    await env.bind_features()  # the default install: rbac.revocation off
    ca = await env.make_ca("EC", curve="P-256")
    name = f"revoke-{uuid.uuid4().hex[:6]}"
    await env.create_issuer(name, env.issuer_spec(ca, crl={"enabled": True, "validity": "1h"}))
    controller = env.start_controller()
    await env.wait_issuer(name, "True")
    leaf = await _issue(env, "victim", name, env.namespace)
    await _revoke(env, "victim", env.namespace)

    event = await env.wait_event("victim", "Forbidden", type_="Warning")
    where = f"{env.namespace}/{list_name(IssuerKey('Issuer', env.namespace, name))}"
    assert event[2] == (
        f"certificate serial {leaf.serial_number:x} is revoked (recorded in ConfigMap {where}, "
        "listed in the issuer's next CRL), but the request is not annotated "
        f"{ANNOTATION_REVOKED}: the controller may not patch certificaterequests "
        "(cert-manager.io) cluster-wide (forbidden); grant it with the Helm value "
        "rbac.revocation=true (kustomize: the component revocation)"
    )
    await env.wait_event("victim", "Revoked", type_="Normal")
    # The revocation is the fact: in the served CRL, without the confirmation.
    path = f"/crl/issuer/{env.namespace}/{name}.crl"

    async def listed() -> bool:
        status, body, _ = controller.crl(path)
        if status != 200:
            return False
        crl = x509.load_der_x509_crl(body)
        return crl.get_revoked_certificate_by_serial_number(leaf.serial_number) is not None

    await wait_for(listed, what="the revoked serial in the served CRL", env=env)
    request = await env.get_request("victim")
    assert ANNOTATION_REVOKED not in (request["metadata"].get("annotations") or {})


async def test_an_issuer_outside_the_granted_namespaces_says_forbidden_until_granted(
    env: Env,
) -> None:
    """Trust bundle, CRL and revocation of an Issuer whose namespace the
    controller may not write ConfigMaps in; signing works meanwhile; the
    namespace grant (rbac.configMapNamespaces) makes all three work."""
    team = f"{env.namespace}-team"
    await env.kube.create(Namespace(metadata=ObjectMeta(name=team)))
    try:
        await _outside_the_granted_namespaces(env, team)
    finally:
        for resource in (CertificateRequest, Issuer):
            with contextlib.suppress(ApiError):
                await env.kube.deletecollection(resource, namespace=team)
        with contextlib.suppress(ApiError):
            await env.kube.delete(Namespace, team)


async def _outside_the_granted_namespaces(env: Env, team: str) -> None:
    ca: CA = await env.make_ca("EC", curve="P-256")
    name = "team-ca"
    spec = env.issuer_spec(
        ca, trustBundle={"configMapName": "team-ca-bundle"}, crl={"enabled": True}
    )
    await _issuer_in(env, team, name, spec)
    env.start_controller()
    grant = f"grant it with the Helm value rbac.configMapNamespaces (add {team})"
    missing = (
        f"the controller may not get/create/patch configmaps in namespace {team} (forbidden); "
        f"{grant} or rbac.clusterWideConfigMaps=true (kustomize: a RoleBinding of "
        f"configmap-writer-role in {team}, or the component cluster-wide-configmaps)"
    )
    await _wait_warning(
        env, name, team, f"trust bundle ConfigMap {team}/team-ca-bundle not written: {missing}"
    )
    key = IssuerKey("Issuer", team, name)
    crl = await _wait_condition(env, name, team, "CRLCurrent", "False", "Forbidden")
    assert crl["message"] == (
        f"no CRL signed yet: the revocation ConfigMap {team}/{list_name(key)} is out of "
        f"reach: {missing}"
    )
    await _wait_warning(env, name, team, crl["message"])
    # Signing does not need any of it.
    leaf = await _issue(env, "leaf", name, team)
    await _revoke(env, "leaf", team)
    await _wait_warning(
        env,
        "leaf",
        team,
        f"certificate serial {leaf.serial_number:x} cannot be recorded as revoked in "
        f"ConfigMap {team}/{list_name(key)}: {missing}; retried every 120s",
    )
    assert env.controllers[-1].crl(f"/crl/issuer/{team}/{name}.crl")[0] == 404
    assert await _configmap(env, "team-ca-bundle", team) is None

    # The namespace granted (a restart takes the revocation up at once rather
    # than after its 2-minute retry).
    await env.grant_configmaps(team)
    env.controllers[-1].terminate()
    env.start_controller()

    async def bundle() -> bool:
        found = await _configmap(env, "team-ca-bundle", team)
        return found is not None and bool((found.get("data") or {}).get("ca.crt"))

    await wait_for(bundle, what="the trust bundle in the granted namespace", env=env)
    await _wait_condition(env, name, team, "CRLCurrent", "True", "Current")
    request = await env.get_request("leaf", namespace=team)

    async def confirmed() -> bool:
        got = await env.get_request("leaf", namespace=team)
        request.update(got)
        return ANNOTATION_REVOKED in (got["metadata"].get("annotations") or {})

    await wait_for(confirmed, what="the revocation recorded and confirmed", env=env)
    stored = await _configmap(env, list_name(key), team)
    assert stored is not None
    assert f"{leaf.serial_number:x} keyCompromise" in stored["data"]["revocations"]


async def test_a_client_secret_outside_the_granted_namespaces_names_the_grant_until_given(
    env: Env,
) -> None:
    """The default install reads Secrets only in the cluster resource namespace
    (no cluster-wide `get`): a namespaced Issuer elsewhere with auth.clientSecret
    is refused by the API server (403). Its Ready condition says exactly that --
    the Secret, the namespace, and the chart value that grants the read -- and
    it is rechecked slowly, not in a loop; the namespace granted
    (rbac.secretNamespaces), it signs."""
    team = f"{env.namespace}-sp"
    await env.kube.create(Namespace(metadata=ObjectMeta(name=team)))
    try:
        await _client_secret_outside_the_granted_namespaces(env, team)
    finally:
        for resource in (CertificateRequest, Issuer):
            with contextlib.suppress(ApiError):
                await env.kube.deletecollection(resource, namespace=team)
        with contextlib.suppress(ApiError):
            await env.kube.delete(Namespace, team)


async def _client_secret_outside_the_granted_namespaces(env: Env, team: str) -> None:
    ca: CA = await env.make_ca("EC", curve="P-256")
    emulator = env.emulator.env
    await env.kube.create(
        Secret(
            metadata=ObjectMeta(name="team-sp", namespace=team),
            data={"secret": base64.b64encode(emulator.sp_client_secret.encode()).decode()},
        )
    )
    auth = {
        "clientSecret": {
            "tenantID": emulator.tenant_id,
            "clientID": emulator.sp_client_id,
            "secretRef": {"name": "team-sp", "key": "secret"},
        }
    }
    await _issuer_in(env, team, "team-sp-ca", env.issuer_spec(ca, auth=auth))
    controller = env.start_controller()
    ready = await _wait_condition(env, "team-sp-ca", team, "Ready", "False", "AuthSecretForbidden")
    assert ready["message"] == (
        f"Secret {team}/team-sp: the controller may not get secrets in namespace {team} "
        f"(forbidden); grant it with the Helm value rbac.secretNamespaces (add {team}) or "
        f"rbac.clusterWideSecrets=true (kustomize: a RoleBinding of secret-reader-role in "
        f"{team}, or the component cluster-wide-secrets); rechecked no sooner than every 120s "
        "(a controller restart rechecks at once)"
    )
    await _wait_warning_reason(env, "team-sp-ca", team, "AuthSecretForbidden", ready["message"])
    # One check, then nothing for minutes: no retry storm against the API server.
    await asyncio.sleep(6)
    seen = f"Issuer {team}/team-sp-ca is not ready: AuthSecretForbidden"
    checks = [line for line in controller.log().splitlines() if seen in line]
    assert len(checks) == 1, checks
    assert "(next check in 120s)" in checks[0], checks[0]

    # The namespace granted, as rbac.secretNamespaces does (a restart takes it
    # up at once rather than at the 2-minute recheck).
    await env.grant_secrets(team)
    controller.terminate()
    env.start_controller()
    await _wait_condition(env, "team-sp-ca", team, "Ready", "True", "Checked")
    await _issue(env, "leaf", "team-sp-ca", team)


async def _wait_warning_reason(
    env: Env, name: str, namespace: str, reason: str, message: str
) -> None:
    async def check() -> bool:
        return ("Warning", reason, message) in await env.events_for(name, namespace)

    await wait_for(check, what=f"Warning {reason} on {name}", env=env)
