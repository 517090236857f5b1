"""Pod certificates on a real node: Kubernetes 1.37's PodCertificateRequests
signed with the Key Vault key, trust published as a signer-linked
ClusterTrustBundle, used by Pods for mutual TLS (issue 25).

Our chart (one replica, ``controller.podCertificates`` and
``controller.clusterTrustBundles`` on) in a namespace enforcing the
`restricted` Pod Security Standard, and a ClusterIssuer of its own CA key with
``spec.podCertificates`` (Pods of namespaces labelled for it, a SPIFFE ID and a
DNS name per Pod, 1 h certificates that the kubelet starts refreshing
10 minutes after issuance) and ``spec.clusterTrustBundles``.

Two Pods (``restricted`` too) run the project's image with a small Python
script (``MTLS_SCRIPT``, passed in the Pod spec; nothing of it is in the
image): each mounts a ``podCertificate`` projected volume from our signer and
a ``clusterTrustBundle`` projected volume selected by signer name and label,
serves TLS requiring a client certificate, and calls the other every 2 s. Each
side checks the other's identity: the client the server's DNS name (hostname
check) and SPIFFE ID, the server the client's SPIFFE ID; every attempt is a
JSON line in the Pod's log, and a new context per connection re-reads the
files the kubelet refreshes.

In order: the Pods talk; ``akv-issuer ca rotate`` puts both anchors into the
bundle (the API object and the files in the Pods); a Pod of a namespace the
policy does not allow never starts and its request is Denied with reason
NamespaceNotAllowed; the kubelet refreshes both Pods' certificates at
beginRefreshAt, they chain to the new CA and the Pods talked throughout with
no failed exchange.

The refresh comes 11-17 minutes after the Pods started, so the node tier runs
the first three tests first, then the node modules that run no controller of
ours while the kubelet's refresh is awaited, then the refresh check, then the
rest (``support.node``, "order"; tests/README.md). Run alone, the module keeps
its order and waits.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from lightkube import Client
from lightkube.core.exceptions import ApiError
from lightkube.generic_resource import create_namespaced_resource
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import Event, Namespace, Pod, Secret, Service, ServiceAccount

from akv_devcluster import DevCluster
from akv_devcluster import binaries as bins
from akv_emulator.testing import EmulatorProcess, environ_with
from akv_issuer.controller.api import (
    API_VERSION,
    ClusterIssuer,
    ClusterTrustBundle,
    cluster_trust_bundle_name,
    signer_resource_name,
)
from support.node import run
from support.node_install import (
    CHART,
    SP_SECRET,
    chart_values,
    emulator_ca_configmap,
    helm,
    restricted_namespace,
    tool,
    wait_until,
)

# Most of the time is the kubelet's: a refresh 10 minutes after issuance
# (the API's earliest), plus its jitter of up to 5 minutes and its refresh
# pass of 1 to 2 minutes.
pytestmark = pytest.mark.timeout(900)

PodCertificateRequest = create_namespaced_resource(
    "certificates.k8s.io", "v1", "PodCertificateRequest", "podcertificaterequests"
)

RELEASE = "akv-podcert"
TRUST_DOMAIN = "node.test"
ALLOWED_LABEL = ("pod-mtls.test/allowed", "yes")
BUNDLE_LABEL = "pod-mtls.test/bundle"
IDENTITY_DIR = "/var/run/pod-identity"
TRUST_DIR = "/var/run/pod-trust"
PORT = 8443
# The longest wait for the kubelet's refresh after the rotation.
REFRESH_LIMIT = 22 * 60.0

# The Pods' program: serve mutual TLS and call the peer, both checking the
# other's identity; one JSON line per attempt. Only the standard library.
MTLS_SCRIPT = r"""
import hashlib, json, os, socket, ssl, sys, threading, time

ME, PEER = os.environ["ME"], os.environ["PEER_ADDR"]
PEER_DNS, PEER_ID = os.environ["PEER_DNS"], os.environ["PEER_SPIFFE"]
IDENTITY, TRUST = os.environ["IDENTITY_DIR"], os.environ["TRUST_DIR"]
LOG = threading.Lock()


def log(**fields):
    # Server and client threads both log: one write per record, under a lock,
    # or print's text and newline interleave into two records on one line.
    line = json.dumps({"at": time.time(), **fields}) + "\n"
    with LOG:
        sys.stdout.write(line)
        sys.stdout.flush()


def fingerprint(der):
    return hashlib.sha256(der).hexdigest()


def read(folder, name):
    # The kubelet swaps the whole folder (its ..data link) at once: read one
    # generation, again if it went away meanwhile.
    for _ in range(3):
        data = os.path.realpath(os.path.join(folder, "..data"))
        try:
            with open(os.path.join(data, name)) as f:
                return data, f.read()
        except FileNotFoundError:
            time.sleep(0.1)
    raise RuntimeError(f"{folder}/{name} keeps changing")


def context(server):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER if server else ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.verify_mode = ssl.CERT_REQUIRED
    data, _ = read(IDENTITY, "tls.crt")
    ctx.load_cert_chain(os.path.join(data, "tls.crt"), os.path.join(data, "tls.key"))
    ctx.load_verify_locations(cadata=read(TRUST, "anchors.pem")[1])
    return ctx


def own_fingerprint():
    pem = read(IDENTITY, "tls.crt")[1]
    first = pem[: pem.index("-----END CERTIFICATE-----") + 25]
    return fingerprint(ssl.PEM_cert_to_DER_cert(first))


def names(cert, kind):
    return [value for key, value in cert.get("subjectAltName", ()) if key == kind]


def handle(conn):
    try:
        with context(server=True).wrap_socket(conn, server_side=True) as tls:
            tls.settimeout(5)
            uris = names(tls.getpeercert(), "URI")
            if PEER_ID not in uris:
                log(role="server", ok=False, error=f"client identity {uris} is not {PEER_ID}")
                return
            caller = tls.recv(256).decode()
            tls.sendall(f"{ME} greets {caller}".encode())
            log(role="server", ok=True, peer_uri=uris, peer_fp=fingerprint(tls.getpeercert(True)))
    except Exception as exc:
        log(role="server", ok=False, error=repr(exc))
    finally:
        conn.close()


def serve():
    server = socket.create_server(("0.0.0.0", int(os.environ["PORT"])))
    while True:
        conn, _ = server.accept()
        threading.Thread(target=handle, args=(conn,), daemon=True).start()


threading.Thread(target=serve, daemon=True).start()
while True:
    try:
        ctx = context(server=False)
        with socket.create_connection((PEER, int(os.environ["PORT"])), timeout=5) as raw:
            with ctx.wrap_socket(raw, server_hostname=PEER_DNS) as tls:
                tls.settimeout(5)
                cert = tls.getpeercert()
                uris = names(cert, "URI")
                if PEER_ID not in uris:
                    raise ValueError(f"server identity {uris} is not {PEER_ID}")
                tls.sendall(ME.encode())
                reply = tls.recv(256).decode()
                if not reply:
                    raise ValueError("the server closed the connection")
                log(role="client", ok=True, peer_uri=uris, peer_dns=names(cert, "DNS"),
                    peer_fp=fingerprint(tls.getpeercert(True)), own_fp=own_fingerprint(),
                    reply=reply)
    except Exception as exc:
        log(role="client", ok=False, error=repr(exc))
    time.sleep(2)
"""


@dataclass
class Setup:
    kube: Client
    cluster: DevCluster
    emulator: EmulatorProcess
    key_name: str
    image: str
    signer: str
    bundle_label: str
    old_ca: Path
    workdir: Path
    app_namespace: str = ""
    new_ca: Path | None = None
    rotated_at: float = 0.0
    identities: dict[str, str] = field(default_factory=dict)  # pod -> SPIFFE ID
    remove: Callable[[], None] | None = None

    def close(self) -> None:
        """Remove the issuer, the namespaces and the release (once)."""
        remove, self.remove = self.remove, None
        if remove is not None:
            remove()

    def exec(self, pod: str, *command: str) -> str:
        proc = subprocess.run(
            [tool(bins.KUBECTL), "--kubeconfig", str(self.cluster.kubeconfig_path),
             "-n", self.app_namespace, "exec", pod, "--", *command],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        return proc.stdout

    def read_file(self, pod: str, path: str) -> str:
        return self.exec(pod, "python3", "-c", f"print(open({path!r}).read(), end='')")

    def log(self, pod: str) -> list[dict[str, Any]]:
        """The Pod's JSON records (the container runtime may still join two
        records written at once onto one line: each is read whole)."""
        records: list[dict[str, Any]] = []
        decoder = json.JSONDecoder()
        for line in self.kube.log(pod, namespace=self.app_namespace):
            text, at = line.strip(), 0
            while text.startswith("{", at):
                record, at = decoder.raw_decode(text, at)
                records.append(record)
        return records


def _ca_args(emulator: EmulatorProcess, key_name: str) -> list[str]:
    return ["--vault-url", emulator.env.vault_url, "--key-name", key_name]


def _akv_issuer() -> str:
    return str(Path(sys.executable).parent / "akv-issuer")


# Session scope: the node tier runs this module's first three tests first and
# the refresh check after the modules that run beside the wait
# (support/node.py, "order"); the refresh check's ``refreshed`` uninstalls it
# all before the node tests with controllers of their own.
@pytest.fixture(scope="session")
def setup(
    node_cluster: DevCluster,
    node_kube: Client,
    node_emulator: EmulatorProcess,
    controller_image: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Setup]:
    workdir = tmp_path_factory.mktemp("podcert")
    # A CA of this module's own: the rotation must not touch the other tests' CA.
    key_name = f"pod-ca-{uuid.uuid4().hex[:6]}"
    old_ca = workdir / "old-ca.pem"
    run(
        [_akv_issuer(), "ca", "create", *_ca_args(node_emulator, key_name),
         "--create-key", "ec-p256", "--common-name", "Pod Certificates Test CA",
         "--lifetime", "30d", "--upload-secret", "--out", str(old_ca)],
        env=environ_with(node_emulator.env),
    )  # fmt: skip
    namespace = restricted_namespace(node_kube, "podcert-ctl")
    helm_bin = tool(bins.HELM)
    kubeconfig = node_cluster.kubeconfig_path
    issuer_name = f"pods-{uuid.uuid4().hex[:6]}"
    found = Setup(
        node_kube, node_cluster, node_emulator, key_name, controller_image,
        signer_resource_name("ClusterIssuer", issuer_name), uuid.uuid4().hex[:8], old_ca,
        workdir,
    )  # fmt: skip

    def remove() -> None:
        # The issuer first, while its controller runs (it removes the bundle).
        with contextlib.suppress(ApiError):
            node_kube.delete(ClusterIssuer, issuer_name)
        for ns in (found.app_namespace, namespace):
            if ns:
                with contextlib.suppress(ApiError):
                    node_kube.delete(Namespace, ns)
        subprocess.run(
            [helm_bin, "--kubeconfig", str(kubeconfig), "uninstall", RELEASE,
             "--namespace", namespace, "--ignore-not-found", "--wait", "--timeout", "120s"],
            capture_output=True, timeout=150, check=False,
        )  # fmt: skip

    found.remove = remove
    try:
        _install(found, namespace, issuer_name)
        yield found
    finally:
        found.close()


@pytest.fixture
def refreshed(setup: Setup) -> Iterator[Setup]:
    """The setup for the refresh check, the module's last test: removed after
    it, before the node tests that run controllers of their own."""
    yield setup
    setup.close()


def _install(s: Setup, namespace: str, issuer_name: str) -> None:
    """Our chart with Pod certificates and ClusterTrustBundles on, and the
    ClusterIssuer of the module's CA (its service principal's secret in the
    chart's namespace, the cluster resource namespace); until it is Ready."""
    kube, emulator = s.kube, s.emulator
    emulator_ca_configmap(kube, namespace, emulator)
    values = emulator.env.values
    kube.create(
        Secret(
            metadata=ObjectMeta(name=SP_SECRET, namespace=namespace),
            stringData={"clientSecret": values["AKV_EMULATOR_SP_CLIENT_SECRET"]},
        )
    )
    chart = chart_values(
        s.image,
        emulator,
        replicaCount=1,
        controller={
            "podCertificates": True,
            "clusterTrustBundles": True,
            # The rotation is seen within seconds (default 5m).
            "issuerRecheckInterval": "5s",
        },
    )
    helm(
        tool(bins.HELM), s.cluster.kubeconfig_path, "install", RELEASE, str(CHART),
        "--namespace", namespace, "--wait", "--timeout", "180s", values=chart,
    )  # fmt: skip
    kube.create(
        ClusterIssuer(
            apiVersion=API_VERSION,
            kind="ClusterIssuer",
            metadata=ObjectMeta(name=issuer_name),
            spec={
                "keyVaultBaseURL": emulator.env.vault_url,
                "keyName": s.key_name,
                "auth": {
                    "clientSecret": {
                        "tenantID": emulator.env.tenant_id,
                        "clientID": values["AKV_EMULATOR_SP_CLIENT_ID"],
                        "secretRef": {"name": SP_SECRET, "key": "clientSecret"},
                    }
                },
                "podCertificates": {
                    "namespaceSelector": {"matchLabels": dict([ALLOWED_LABEL])},
                    "spiffeTrustDomain": TRUST_DOMAIN,
                    "dnsNames": [f"$(POD_NAME).$(NAMESPACE).pod.{TRUST_DOMAIN}"],
                    "keyTypes": ["ECDSAP256", "ED25519"],
                    "usages": ["digital signature", "server auth", "client auth"],
                    "maxLifetime": "1h",
                    # 90 % of an hour left is 6 minutes in: the API's 10 minutes.
                    "refreshBeforePercentage": 90,
                },
                "clusterTrustBundles": {
                    "labels": {BUNDLE_LABEL: s.bundle_label},
                    "overlap": "2h",
                },
            },
        )
    )

    def ready() -> bool:
        found = dict(kube.get(ClusterIssuer, issuer_name))
        conditions = (found.get("status") or {}).get("conditions") or []
        return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)

    wait_until(ready, f"ClusterIssuer {issuer_name} Ready")


def _namespace(kube: Client, prefix: str, *, allowed: bool) -> str:
    name = restricted_namespace(kube, prefix)
    if allowed:
        kube.patch(Namespace, name, {"metadata": {"labels": dict([ALLOWED_LABEL])}})
    return name


def _pod(
    s: Setup, namespace: str, name: str, account: str, key_type: str, env: dict[str, str]
) -> Pod:
    """A `restricted` Pod of our image: the mTLS script, the two projected volumes."""
    return Pod(
        metadata=ObjectMeta(name=name, namespace=namespace, labels={"app": name}),
        spec={
            "serviceAccountName": account,
            "restartPolicy": "Always",
            "securityContext": {
                "runAsNonRoot": True,
                "runAsUser": 65532,
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            "containers": [
                {
                    "name": "mtls",
                    "image": s.image,
                    "imagePullPolicy": "Never",
                    "command": ["python3", "-u", "-c", MTLS_SCRIPT],
                    "env": [{"name": k, "value": v} for k, v in env.items()],
                    "securityContext": {
                        "allowPrivilegeEscalation": False,
                        "capabilities": {"drop": ["ALL"]},
                        "readOnlyRootFilesystem": True,
                    },
                    "volumeMounts": [
                        {"name": "identity", "mountPath": IDENTITY_DIR, "readOnly": True},
                        {"name": "trust", "mountPath": TRUST_DIR, "readOnly": True},
                    ],
                }
            ],
            "volumes": [
                {
                    "name": "identity",
                    "projected": {
                        "sources": [
                            {
                                "podCertificate": {
                                    "signerName": s.signer,
                                    "keyType": key_type,
                                    "maxExpirationSeconds": 3600,
                                    "keyPath": "tls.key",
                                    "certificateChainPath": "tls.crt",
                                }
                            }
                        ]
                    },
                },
                {
                    "name": "trust",
                    "projected": {
                        "sources": [
                            {
                                "clusterTrustBundle": {
                                    "signerName": s.signer,
                                    "labelSelector": {
                                        "matchLabels": {BUNDLE_LABEL: s.bundle_label}
                                    },
                                    "path": "anchors.pem",
                                }
                            }
                        ]
                    },
                },
            ],
        },
    )


def _spiffe(namespace: str, account: str) -> str:
    return f"spiffe://{TRUST_DOMAIN}/ns/{namespace}/sa/{account}"


def _dns(namespace: str, pod: str) -> str:
    return f"{pod}.{namespace}.pod.{TRUST_DOMAIN}"


def _requests(kube: Client, namespace: str) -> list[dict[str, Any]]:
    return [dict(obj) for obj in kube.list(PodCertificateRequest, namespace=namespace)]


def _terminal(request: dict[str, Any]) -> dict[str, Any] | None:
    for condition in (request.get("status") or {}).get("conditions") or []:
        if condition.get("status") == "True":
            return dict(condition)
    return None


def _time(value: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def _leaf(pem: str) -> x509.Certificate:
    return x509.load_pem_x509_certificates(pem.encode())[0]


def _fp(cert: x509.Certificate) -> str:
    from cryptography.hazmat.primitives.serialization import Encoding

    return hashlib.sha256(cert.public_bytes(Encoding.DER)).hexdigest()


def _verifies(ca: Path, chain_pem: str, workdir: Path) -> bool:
    leaf = workdir / f"leaf-{uuid.uuid4().hex[:6]}.pem"
    leaf.write_text(chain_pem)
    proc = subprocess.run(
        ["openssl", "verify", "-x509_strict", "-purpose", "sslclient", "-CAfile", str(ca),
         str(leaf)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    return proc.returncode == 0


def _bundle(s: Setup) -> dict[str, Any]:
    return dict(s.kube.get(ClusterTrustBundle, cluster_trust_bundle_name(s.signer)))


def _anchors(pem: str) -> set[str]:
    return {_fp(cert) for cert in x509.load_pem_x509_certificates(pem.encode())}


def _ca_fp(path: Path) -> str:
    return _fp(x509.load_pem_x509_certificate(path.read_bytes()))


PODS = ("pod-a", "pod-b")


def test_two_pods_talk_mutual_tls_and_check_each_others_identity(setup: Setup) -> None:
    s = setup
    s.app_namespace = ns = _namespace(s.kube, "podcert-app", allowed=True)
    accounts = {"pod-a": "frontend", "pod-b": "backend"}
    addresses: dict[str, str] = {}
    for pod, account in accounts.items():
        s.kube.create(ServiceAccount(metadata=ObjectMeta(name=account, namespace=ns)))
        service = s.kube.create(
            Service(
                metadata=ObjectMeta(name=pod, namespace=ns),
                spec={"selector": {"app": pod}, "ports": [{"port": PORT, "targetPort": PORT}]},
            )
        )
        addresses[pod] = str(service.spec.clusterIP)
        s.identities[pod] = _spiffe(ns, account)
    key_types = {"pod-a": "ECDSAP256", "pod-b": "ED25519"}
    for pod, peer in (("pod-a", "pod-b"), ("pod-b", "pod-a")):
        env = {
            "ME": pod,
            "PEER_ADDR": addresses[peer],
            "PEER_DNS": _dns(ns, peer),
            "PEER_SPIFFE": s.identities[peer],
            "IDENTITY_DIR": IDENTITY_DIR,
            "TRUST_DIR": TRUST_DIR,
            "PORT": str(PORT),
        }
        s.kube.create(_pod(s, ns, pod, accounts[pod], key_types[pod], env))

    def running() -> bool:
        return all(s.kube.get(Pod, p, namespace=ns).status.phase == "Running" for p in PODS)

    wait_until(running, "both Pods Running (their certificates issued)", limit=240)

    # Each side saw the other's identity: the client the server's DNS name and
    # SPIFFE ID, the server the client's SPIFFE ID.
    for pod, peer in (("pod-a", "pod-b"), ("pod-b", "pod-a")):

        def talked(pod: str = pod) -> dict[str, Any] | None:
            entries = s.log(pod)
            client = next((e for e in entries if e["role"] == "client" and e["ok"]), None)
            server = next((e for e in entries if e["role"] == "server" and e["ok"]), None)
            return client if client and server else None

        client = wait_until(talked, f"{pod} to talk mutual TLS with {peer}", limit=120)
        assert client["peer_uri"] == [s.identities[peer]]
        assert client["peer_dns"] == [_dns(ns, peer)]
        assert client["reply"] == f"{peer} greets {pod}"

    # The requests the kubelet made: Issued by our signer to the policy's
    # identity, refreshed 10 minutes after issuance, chaining to the CA.
    issued = [r for r in _requests(s.kube, ns) if (_terminal(r) or {}).get("type") == "Issued"]
    assert sorted(r["spec"]["podName"] for r in issued) == list(PODS)
    for request in issued:
        status = request["status"]
        pod = request["spec"]["podName"]
        assert request["spec"]["signerName"] == s.signer
        assert _time(status["beginRefreshAt"]) - _time(status["notBefore"]) == 600
        assert _time(status["notAfter"]) - _time(status["notBefore"]) == 3600
        leaf = _leaf(status["certificateChain"])
        san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert san.get_values_for_type(x509.UniformResourceIdentifier) == [s.identities[pod]]
        assert san.get_values_for_type(x509.DNSName) == [_dns(ns, pod)]
        assert _verifies(s.old_ca, status["certificateChain"], s.workdir)
        # What the Pod holds is what the request says.
        assert _leaf(s.read_file(pod, f"{IDENTITY_DIR}/tls.crt")) == leaf

    bundle = _bundle(s)
    assert bundle["spec"]["signerName"] == s.signer
    assert bundle["metadata"]["labels"][BUNDLE_LABEL] == s.bundle_label
    assert _anchors(bundle["spec"]["trustBundle"]) == {_ca_fp(s.old_ca)}
    for pod in PODS:
        assert _anchors(s.read_file(pod, f"{TRUST_DIR}/anchors.pem")) == {_ca_fp(s.old_ca)}


def test_ca_rotation_puts_both_anchors_into_the_bundle_and_the_pods(setup: Setup) -> None:
    s = setup
    assert s.app_namespace, "needs the Pods of the previous test"
    s.new_ca = s.workdir / "new-ca.pem"
    s.rotated_at = time.time()
    run(
        [_akv_issuer(), "ca", "rotate", *_ca_args(s.emulator, s.key_name), "--out",
         str(s.new_ca)],
        env=environ_with(s.emulator.env),
    )  # fmt: skip
    both = {_ca_fp(s.old_ca), _ca_fp(s.new_ca)}
    assert len(both) == 2

    wait_until(
        lambda: _anchors(_bundle(s)["spec"]["trustBundle"]) == both,
        "the ClusterTrustBundle to hold the old and the new CA",
        limit=120,
    )
    for pod in PODS:
        wait_until(
            lambda pod=pod: _anchors(s.read_file(pod, f"{TRUST_DIR}/anchors.pem")) == both,
            f"{pod}'s mounted bundle to hold both anchors",
            limit=180,
        )


def test_a_pod_in_a_namespace_the_issuer_does_not_allow_never_starts(setup: Setup) -> None:
    s = setup
    ns = _namespace(s.kube, "podcert-denied", allowed=False)
    try:
        env = {"ME": "x", "PEER_ADDR": "127.0.0.1", "PEER_DNS": "x", "PEER_SPIFFE": "x",
               "IDENTITY_DIR": IDENTITY_DIR, "TRUST_DIR": TRUST_DIR, "PORT": str(PORT)}  # fmt: skip
        s.kube.create(_pod(s, ns, "intruder", "default", "ECDSAP256", env))

        def denied() -> dict[str, Any] | None:
            for request in _requests(s.kube, ns):
                condition = _terminal(request)
                if condition is not None:
                    return condition
            return None

        condition = wait_until(denied, f"the PodCertificateRequest in {ns} to end", limit=120)
        assert condition["type"] == "Denied"
        assert condition["reason"] == "NamespaceNotAllowed"
        assert f"namespace {ns} does not match" in condition["message"]
        assert f"{ALLOWED_LABEL[0]}={ALLOWED_LABEL[1]}" in condition["message"]

        # What `kubectl describe pod` shows: the kubelet's event with the reason.
        def event() -> list[Event]:
            return [
                e
                for e in s.kube.list(Event, namespace=ns)
                if e.involvedObject.name == "intruder" and e.reason == "Denied"
            ]

        (found, *_) = wait_until(event, "the kubelet's Denied event on the Pod", limit=60)
        assert found.type == "Warning"
        assert "NamespaceNotAllowed" in (found.message or "")
        # Still not started a while later: no certificate, no container.
        time.sleep(20)
        pod = s.kube.get(Pod, "intruder", namespace=ns)
        assert pod.status.phase == "Pending"
        for status in pod.status.containerStatuses or []:
            assert status.state.running is None
            assert status.state.terminated is None
            assert status.started is not True
    finally:
        with contextlib.suppress(ApiError):
            s.kube.delete(Namespace, ns)


@pytest.mark.timeout(REFRESH_LIMIT + 300)
def test_kubelet_refreshes_every_pod_certificate_to_the_new_ca_and_the_pods_keep_talking(
    refreshed: Setup,
) -> None:
    s = refreshed
    assert s.new_ca is not None, "needs the rotation of the previous test"
    new_ca = s.new_ca
    ns = s.app_namespace
    held: dict[str, x509.Certificate] = {}

    def refreshed() -> bool:
        for pod in PODS:
            leaf_pem = s.read_file(pod, f"{IDENTITY_DIR}/tls.crt")
            if not _verifies(new_ca, leaf_pem, s.workdir):
                time.sleep(5)  # minutes to go: no need to ask twice a second
                return False
            held[pod] = _leaf(leaf_pem)
        return True

    wait_until(refreshed, "both Pods to hold a certificate of the new CA", limit=REFRESH_LIMIT)

    # Every Pod certificate the kubelet asked for since the rotation chains to
    # the new CA, and the Pods hold one of those.
    after = [
        r
        for r in _requests(s.kube, ns)
        if _time(r["metadata"]["creationTimestamp"]) > s.rotated_at
        and (_terminal(r) or {}).get("type") == "Issued"
    ]
    assert {r["spec"]["podName"] for r in after} == set(PODS)
    for request in after:
        assert _verifies(new_ca, request["status"]["certificateChain"], s.workdir)
        assert not _verifies(s.old_ca, request["status"]["certificateChain"], s.workdir)
    for pod in PODS:
        assert held[pod] in [
            _leaf(r["status"]["certificateChain"]) for r in after if r["spec"]["podName"] == pod
        ]

    # They talk with the new certificates: each client saw its peer's new one.
    for pod, peer in (("pod-a", "pod-b"), ("pod-b", "pod-a")):
        wait_until(
            lambda pod=pod, peer=peer: any(
                e["role"] == "client" and e["ok"] and e["peer_fp"] == _fp(held[peer])
                for e in s.log(pod)
            ),
            f"{pod} to see {peer}'s new certificate",
            limit=60,
        )

    # And they never stopped: since each first talked, no exchange failed
    # (every 2 s for the whole rotation), and no container restarted.
    for pod in PODS:
        entries = s.log(pod)
        first = next(i for i, e in enumerate(entries) if e["role"] == "client" and e["ok"])
        failed = [e for e in entries[first:] if not e["ok"]]
        assert failed == [], f"{pod}: {failed[:5]}"
        attempts = [e for e in entries[first:] if e["role"] == "client"]
        assert len(attempts) > 100  # about 12 minutes and more at one every 2 s
        status = s.kube.get(Pod, pod, namespace=ns).status
        assert status.containerStatuses[0].restartCount == 0

    # The old anchor is still published: old certificates may be valid for an hour.
    assert _ca_fp(s.old_ca) in _anchors(_bundle(s)["spec"]["trustBundle"])
