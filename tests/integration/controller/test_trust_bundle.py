"""Trust bundles (issue 12, point 4) against the real API server and trust-manager.

The controller runs under the shipped manager role; trust-manager is upstream's
binary built from its Go module, under its chart's RBAC. Relying parties are
modelled by ``openssl verify -CAfile <the bundle trust-manager wrote into
their namespace>``.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import subprocess
import uuid
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from lightkube import ApiError, codecs
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.models.rbac_v1 import RoleRef, Subject
from lightkube.resources.core_v1 import ConfigMap, Namespace, Secret
from lightkube.resources.rbac_authorization_v1 import RoleBinding

from akv_devcluster import DevCluster
from akv_devcluster.trustmanager import Bundle, start_trust_manager, stop_trust_manager
from akv_issuer.controller.ca_lifecycle.trust.plan import LABEL_ISSUER_NAME, LABEL_TRUST_BUNDLE
from akv_issuer.controller.core import ANNOTATION_ISSUER, LABEL_MANAGED_BY
from support.controller_harness import REPO, Env, csr_pem, wait_for


def _certs(pem: str | None) -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates(pem.encode()) if pem else []


async def _configmap(env: Env, name: str, namespace: str) -> dict[str, Any] | None:
    try:
        return dict((await env.kube.get(ConfigMap, name, namespace=namespace)).to_dict())
    except ApiError as err:
        if err.status.code == 404:
            return None
        raise


async def _wait_bundle(env: Env, name: str, namespace: str, key: str, count: int) -> dict[str, Any]:
    found: dict[str, Any] = {}

    async def check() -> bool:
        obj = await _configmap(env, name, namespace)
        found.clear()
        found.update(obj or {})
        return len(_certs(((obj or {}).get("data") or {}).get(key))) == count

    await wait_for(check, what=f"ConfigMap {namespace}/{name} with {count} CAs", env=env)
    return found


async def _issue(env: Env, name: str, issuer: str, *, kind: str = "Issuer") -> bytes:
    await env.create_request(name, csr_pem(cn=f"{name}.example.com"), issuer, kind=kind)
    await env.approve(name)
    request = await env.wait_request(name, "Issued")
    leaf = x509.load_pem_x509_certificates(base64.b64decode(request["status"]["certificate"]))[0]
    return leaf.public_bytes(serialization.Encoding.PEM)


def _openssl_verify(
    tmp: Path, bundle_pem: str, leaf_pem: bytes
) -> subprocess.CompletedProcess[str]:
    folder = tmp / uuid.uuid4().hex[:8]
    folder.mkdir()
    (folder / "bundle.pem").write_text(bundle_pem)
    (folder / "leaf.pem").write_bytes(leaf_pem)
    return subprocess.run(
        ["openssl", "verify", "-CAfile", str(folder / "bundle.pem"), str(folder / "leaf.pem")],
        capture_output=True,
        text=True,
        check=False,
    )


def _unrelated_leaf() -> bytes:
    """A leaf of a CA nobody published, with the same names as ours."""
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Unrelated CA")])
    leaf_key = ec.generate_private_key(ec.SECP256R1())
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "x.example.com")]))
        .issuer_name(ca_name)
        .public_key(leaf_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .sign(ca_key, hashes.SHA256())
    )
    return leaf.public_bytes(serialization.Encoding.PEM)


async def test_trust_manager_spreads_old_and_new_ca_during_a_rotation(
    env: Env, devcluster: DevCluster
) -> None:
    suffix = uuid.uuid4().hex[:6]
    issuer, bundle_name, target_ns = f"tb-{suffix}", f"tb-{suffix}-ca", f"relying-{suffix}"
    old = await env.make_ca("EC", curve="P-256")
    spec = env.issuer_spec(old, trustBundle={"configMapName": bundle_name, "overlap": "1h"})
    await env.create_issuer(issuer, spec, cluster=True)
    env.start_controller("--issuer-recheck-interval", "2s")
    await env.wait_issuer(issuer, "True", cluster=True)

    # A ClusterIssuer's bundle lives in the cluster resource namespace.
    published = await _wait_bundle(env, bundle_name, env.cluster_namespace, "ca.crt", 1)
    labels = published["metadata"]["labels"]
    assert labels[LABEL_MANAGED_BY] == "azure-keyvault-issuer"
    assert labels[LABEL_TRUST_BUNDLE] == "true"
    assert labels[LABEL_ISSUER_NAME] == issuer
    assert published["metadata"]["annotations"][ANNOTATION_ISSUER] == f"ClusterIssuer/{issuer}"
    assert _certs(published["data"]["ca.crt"]) == [old.cert]

    await env.kube.create(Namespace(metadata=ObjectMeta(name=target_ns)))
    await asyncio.to_thread(start_trust_manager, devcluster, env.cluster_namespace)
    try:
        await env.kube.create(
            Bundle(
                metadata=ObjectMeta(name=f"relying-{suffix}"),
                spec={
                    "sources": [
                        {
                            "configMap": {
                                "selector": {"matchLabels": {LABEL_ISSUER_NAME: issuer}},
                                "key": "ca.crt",
                            }
                        }
                    ],
                    "target": {
                        "configMap": {"key": "trust.pem"},
                        "namespaceSelector": {
                            "matchLabels": {"kubernetes.io/metadata.name": target_ns}
                        },
                    },
                },
            )
        )
        await _wait_bundle(env, f"relying-{suffix}", target_ns, "trust.pem", 1)
        leaf_old = await _issue(env, "leaf-old", issuer, kind="ClusterIssuer")

        # Rotate: a new key version and a new CA certificate as a new secret version.
        new = await env.rotate_ca(old.name, "EC", curve="P-256")

        async def switched() -> bool:
            obj = await env.get_issuer(issuer, cluster=True)
            return bool(obj.get("status", {}).get("keyVersion") == new.key_version)

        await wait_for(switched, what="issuer switched to the new key version", env=env)
        published = await _wait_bundle(env, bundle_name, env.cluster_namespace, "ca.crt", 2)
        assert _certs(published["data"]["ca.crt"]) == [new.cert, old.cert]
        target = await _wait_bundle(env, f"relying-{suffix}", target_ns, "trust.pem", 2)
        trusted = target["data"]["trust.pem"]
        assert {c.fingerprint(hashes.SHA256()) for c in _certs(trusted)} == {
            old.cert.fingerprint(hashes.SHA256()),
            new.cert.fingerprint(hashes.SHA256()),
        }
        leaf_new = await _issue(env, "leaf-new", issuer, kind="ClusterIssuer")

        for leaf in (leaf_old, leaf_new):
            result = _openssl_verify(env.tmp, trusted, leaf)
            assert result.returncode == 0, result.stdout + result.stderr
        refused = _openssl_verify(env.tmp, trusted, _unrelated_leaf())
        assert refused.returncode != 0, refused.stdout
        await env.wait_event(issuer, "TrustBundleUpdated", namespace="default")
    finally:
        await asyncio.to_thread(stop_trust_manager, devcluster)
        await env.kube.delete(Bundle, f"relying-{suffix}")


async def test_previous_ca_survives_a_restart_and_the_secret_copy_follows(env: Env) -> None:
    # The Secret copy needs the shipped, unbound writer role bound here.
    with (REPO / "config" / "rbac" / "trust_bundle_secret_writer_role.yaml").open() as handle:
        (writer,) = codecs.load_all_yaml(handle)
    await env.kube.apply(writer, field_manager="akv-tests")
    await env.kube.apply(
        RoleBinding(
            metadata=ObjectMeta(name="trust-bundle-secret-writer", namespace=env.namespace),
            roleRef=RoleRef(
                apiGroup="rbac.authorization.k8s.io", kind="ClusterRole", name=writer.metadata.name
            ),
            subjects=[Subject(kind="ServiceAccount", name="controller", namespace=env.namespace)],
        ),
        field_manager="akv-tests",
    )
    old = await env.make_ca("EC", curve="P-256")
    spec = env.issuer_spec(
        old, trustBundle={"configMapName": "bundle", "secretName": "bundle", "key": "roots.pem"}
    )
    await env.create_issuer("durable", spec)
    first = env.start_controller("--issuer-recheck-interval", "2s")
    await env.wait_issuer("durable", "True")
    await _wait_bundle(env, "bundle", env.namespace, "roots.pem", 1)
    first.terminate()

    # The CA rotates while no controller runs; the next one must still retire
    # (not forget) the old CA, reading it back from the ConfigMap.
    new = await env.rotate_ca(old.name, "EC", curve="P-256")
    env.start_controller("--issuer-recheck-interval", "2s")
    published = await _wait_bundle(env, "bundle", env.namespace, "roots.pem", 2)
    assert _certs(published["data"]["roots.pem"]) == [new.cert, old.cert]

    async def secret_follows() -> bool:
        secret = await env.kube.get(Secret, "bundle", namespace=env.namespace)
        data = (secret.data or {}).get("roots.pem")
        return (
            data is not None and base64.b64decode(data).decode() == (published["data"]["roots.pem"])
        )

    await wait_for(secret_follows, what="Secret copy of the bundle", env=env)


async def test_a_configmap_the_controller_does_not_manage_is_left_alone(env: Env) -> None:
    await env.kube.create(
        ConfigMap(
            metadata=ObjectMeta(name="someone-elses", namespace=env.namespace),
            data={"ca.crt": "not ours"},
        )
    )
    ca = await env.make_ca("EC", curve="P-256")
    await env.create_issuer(
        "polite", env.issuer_spec(ca, trustBundle={"configMapName": "someone-elses"})
    )
    controller = env.start_controller("--issuer-recheck-interval", "2s")
    await env.wait_issuer("polite", "True")
    _type, _reason, message = await env.wait_event("polite", "TrustBundleFailed", type_="Warning")
    assert "not managed by azure-keyvault-issuer" in message
    untouched = await _configmap(env, "someone-elses", env.namespace)
    assert untouched is not None
    assert untouched["data"] == {"ca.crt": "not ours"}
    labels = {"issuer_kind": "Issuer", "issuer_namespace": env.namespace, "issuer_name": "polite"}
    assert controller.metric("akv_issuer_trust_bundle_failures_total", **labels) >= 1
    # Signing does not depend on the bundle: the issuer stays Ready and issues.
    await _issue(env, "still-issues", "polite")
