"""The fake API server (tests/support/fakekube) answers as the real one does.

One scenario (create/409/404, a stale update, server-side apply with two
managers and keyed conditions, merge-patch preconditions, the status
subresource and generations, pages, watches and 410, deletes, TokenRequests,
the names of signer-linked ClusterTrustBundles)
runs against the session's kube-apiserver and against FakeKube through the
same lightkube client code; what a caller can see (status codes, reasons,
messages, object shapes, managers, watch events) must be equal. When this
fails, the fake has drifted (or the API server changed): fix the fake.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import re
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from lightkube import ApiError, AsyncClient
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import ConfigMap, ServiceAccount, ServiceAccountToken
from lightkube.types import PatchType

from akv_issuer.controller.api.names import CertificateRequest, ClusterTrustBundle
from support.fakekube import PARTIAL_METADATA, FakeKube

Observations = list[tuple[str, Any]]

# A CSR the CertificateRequest schema accepts (any base64 does).
_REQUEST = "LS0tLS1CRUdJTiBDRVJUSUZJQ0FURSBSRVFVRVNULS0tLS0K"


def _ca_pem() -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "drift")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM).decode()


_CA_PEM = _ca_pem()


def _normal(text: str | None) -> str | None:
    """Messages without what differs between servers (times, versions)."""
    if not text:
        return text
    text = re.sub(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", "TIME", text)
    return re.sub(r"\d{2,}", "N", text)


def _error(err: ApiError) -> tuple[Any, ...]:
    status = err.status
    details = status.details
    return (
        status.code,
        status.reason,
        _normal(status.message),
        details.kind if details else None,
        details.group if details else None,
        sorted((c.reason or "", c.field or "") for c in (details.causes or [])) if details else [],
    )


async def _attempt(call: Any) -> Any:
    try:
        result = await call
    except ApiError as err:
        return ("error", *_error(err))
    return ("ok", result)


def _managers(obj: Any) -> list[tuple[str, str, str]]:
    return sorted(
        (m["manager"], m["operation"], m.get("subresource") or "")
        for m in obj["metadata"].get("managedFields") or []
    )


def _fields_of(obj: Any, manager: str) -> Any:
    for entry in obj["metadata"].get("managedFields") or []:
        if entry["manager"] == manager:
            return entry["fieldsV1"]
    return None


def _request(name: str, namespace: str, **extra: Any) -> Any:
    return CertificateRequest(
        {
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"request": _REQUEST, "issuerRef": {"name": "vault", "kind": "Issuer"}},
            **extra,
        }
    )


async def _raw(client: AsyncClient, method: str, res: Any, **kw: Any) -> Any:
    generic: Any = client._client
    request = generic.prepare_request(method, res, **kw)
    response = await generic.send(generic.build_adapter_request(request))
    return response.status_code, json.loads(response.content)


async def _watch(
    client: AsyncClient, namespace: str, version: str, count: int, resource: Any = ConfigMap
) -> list[Any]:
    generic: Any = client._client
    request = generic.prepare_request(
        "list",
        resource,
        namespace=namespace,
        watch=True,
        params={"resourceVersion": version, "timeoutSeconds": 30},
    )
    request.timeout = generic._watch_timeout
    events: list[Any] = []
    response = await generic.send(generic.build_adapter_request(request), stream=True)
    try:
        async with asyncio.timeout(20):
            async for line in response.aiter_lines():
                if line:
                    event = json.loads(line)
                    events.append(event)
                    if len(events) == count or event["type"] == "ERROR":
                        break
    finally:
        await response.aclose()
    return events


def _gone(obj: dict[str, Any]) -> Any:
    if obj.get("kind") != "Status":
        return obj.get("kind"), obj["metadata"].get("name")
    return obj["code"], obj["reason"], (_normal(obj["message"]) or "").split(":")[0]


async def scenario(client: AsyncClient, ns: str) -> Observations:
    seen: Observations = []

    def see(step: str, value: Any) -> None:
        seen.append((step, value))

    # -- create, 409, 404, 422 -----------------------------------------------------------
    made = await client.create(
        ConfigMap(metadata=ObjectMeta(name="drift", namespace=ns), data={"a": "1"})
    )
    raw = made.to_dict()
    see("create metadata keys", sorted(raw["metadata"]))
    see("create managers", _managers(raw))
    see("create fields", _fields_of(raw, "akv-tests"))
    again = await _attempt(
        client.create(ConfigMap(metadata=ObjectMeta(name="drift", namespace=ns)))
    )
    see("create twice", again)
    see("get missing", await _attempt(client.get(ConfigMap, "missing", namespace=ns)))
    see(
        "get missing CR",
        await _attempt(client.get(CertificateRequest, "missing", namespace=ns)),
    )
    see(
        "create versioned",
        (
            await _attempt(
                client.create(
                    ConfigMap(metadata=ObjectMeta(name="v", namespace=ns, resourceVersion="5"))
                )
            )
        )[:3],
    )

    # -- a stale update ------------------------------------------------------------------
    stale = await client.get(ConfigMap, "drift", namespace=ns)
    stale.data = {"a": "2"}
    await client.replace(stale)
    stale.data = {"a": "3"}
    see("stale replace", await _attempt(client.replace(stale)))

    # -- server-side apply ---------------------------------------------------------------
    def config(value: str) -> dict[str, Any]:
        return {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "applied", "namespace": ns},
            "data": {"key": value},
        }

    async def apply(value: str, manager: str, force: bool = False) -> Any:
        return await _attempt(
            client.patch(
                ConfigMap,
                "applied",
                config(value),
                namespace=ns,
                patch_type=PatchType.APPLY,
                field_manager=manager,
                force=force,
            )
        )

    first = await apply("1", "m1")
    see("apply creates", first[0])
    see("apply conflict", await apply("2", "m2"))
    see("apply same value", (await apply("1", "m2"))[0])
    forced = await apply("2", "m2", force=True)
    see("apply forced managers", _managers(forced[1].to_dict()))
    see("apply forced fields", _fields_of(forced[1].to_dict(), "m2"))
    current = await client.get(ConfigMap, "applied", namespace=ns)
    version = current.metadata.resourceVersion
    await client.patch(
        ConfigMap, "applied", {"data": {"other": "x"}}, namespace=ns, patch_type=PatchType.MERGE
    )
    see(
        "merge patch precondition",
        await _attempt(
            client.patch(
                ConfigMap,
                "applied",
                {"metadata": {"resourceVersion": version}, "data": {"key": "3"}},
                namespace=ns,
                patch_type=PatchType.MERGE,
            )
        ),
    )

    two = config("9")
    two["data"]["other"] = "9"
    see(
        "apply conflicts with two managers",
        await _attempt(
            client.patch(
                ConfigMap,
                "applied",
                two,
                namespace=ns,
                patch_type=PatchType.APPLY,
                field_manager="m3",
            )
        ),
    )

    # -- a custom resource: status subresource, keyed conditions, generations -------------
    cr = await client.create(
        _request("cr", ns, status={"conditions": [{"type": "X", "status": "True"}]})
    )
    see("CR create drops status", dict(cr).get("status"))
    see("CR generation", cr.metadata.generation)

    def status(*conditions: dict[str, str]) -> dict[str, Any]:
        return {
            "apiVersion": "cert-manager.io/v1",
            "kind": "CertificateRequest",
            "metadata": {"name": "cr", "namespace": ns},
            "status": {"conditions": list(conditions)},
        }

    def condition(type_: str, value: str) -> dict[str, str]:
        return {
            "type": type_,
            "status": value,
            "reason": "Drift",
            "message": "m",
            "lastTransitionTime": "2030-01-01T00:00:00Z",
        }

    async def apply_status(manager: str, *conditions: dict[str, str]) -> Any:
        return await client.patch(
            CertificateRequest.Status,
            "cr",
            status(*conditions),
            namespace=ns,
            patch_type=PatchType.APPLY,
            field_manager=manager,
            force=True,
        )

    await client.patch(
        CertificateRequest.Status,
        "cr",
        {"status": {"conditions": [condition("Approved", "True")]}},
        namespace=ns,
        patch_type=PatchType.MERGE,
        field_manager="approver",
    )
    await apply_status("akv", condition("Ready", "False"))
    await apply_status("akv-crl", condition("CRLCurrent", "True"))
    written = await apply_status("akv", condition("Ready", "True"))
    see("conditions", [(c["type"], c["status"]) for c in written["status"]["conditions"]])
    see("CR managers", _managers(written))
    see("CR crl fields", _fields_of(written, "akv-crl"))
    see("CR generation after status", written.metadata.generation)
    dropped = await apply_status("akv", condition("Other", "True"))
    see("conditions after akv dropped Ready", [c["type"] for c in dropped["status"]["conditions"]])
    stale_status = status(condition("Other", "False"))
    stale_status["metadata"]["resourceVersion"] = cr.metadata.resourceVersion
    see(
        "apply conflict with an updater of the status",
        await _attempt(
            client.patch(
                CertificateRequest.Status,
                "cr",
                status(condition("Approved", "False")),
                namespace=ns,
                patch_type=PatchType.APPLY,
                field_manager="akv",
            )
        ),
    )
    see(
        "apply precondition",
        await _attempt(
            client.patch(
                CertificateRequest.Status,
                "cr",
                stale_status,
                namespace=ns,
                patch_type=PatchType.APPLY,
                field_manager="akv",
                force=True,
            )
        ),
    )
    before = (await client.get(CertificateRequest, "cr", namespace=ns)).metadata.resourceVersion
    again_status = await apply_status("akv", condition("Other", "True"))
    see("no-op apply keeps the version", again_status.metadata.resourceVersion == before)
    generic: Any = client._client
    partial = await generic.request(
        "patch",
        res=CertificateRequest.Status,
        name="cr",
        namespace=ns,
        obj=status(condition("Other", "True")),
        headers={
            "Content-Type": PatchType.APPLY.value,
            "Accept": f"application/json;as={PARTIAL_METADATA};g=meta.k8s.io;v=v1",
        },
        params={"force": "true", "fieldManager": "akv"},
    )
    see(
        "partial metadata",
        (dict(partial)["kind"], dict(partial)["apiVersion"], "status" in dict(partial)),
    )
    spec_patched = await client.patch(
        CertificateRequest,
        "cr",
        {"spec": {"duration": "1h0m0s"}},
        namespace=ns,
        patch_type=PatchType.MERGE,
    )
    see("CR generation after spec", spec_patched.metadata.generation)
    see(
        "strategic on CR",
        await _attempt(client.patch(CertificateRequest, "cr", {"spec": {}}, namespace=ns)),
    )
    see("CR update without version", (await _attempt(client.replace(_request("cr", ns))))[:3])

    # -- lists and watches ------------------------------------------------------------------
    code, page = await _raw(client, "list", ConfigMap, namespace=ns, params={"limit": 1})
    see("list page", (code, page["kind"], sorted(page["metadata"]), sorted(page["items"][0])))
    code, page = await _raw(client, "list", CertificateRequest, namespace=ns, params={"limit": 5})
    see("CR list", (code, page["kind"], sorted(page["items"][0]) if page["items"] else None))
    listed_version = page["metadata"]["resourceVersion"]
    code, page = await _raw(client, "list", ConfigMap, namespace=ns, params={})
    watch_from = page["metadata"]["resourceVersion"]
    watching = asyncio.create_task(_watch(client, ns, watch_from, 3))
    await asyncio.sleep(0.2)
    await client.create(ConfigMap(metadata=ObjectMeta(name="watched", namespace=ns)))
    await client.patch(
        ConfigMap, "watched", {"data": {"k": "v"}}, namespace=ns, patch_type=PatchType.MERGE
    )
    await client.delete(ConfigMap, "watched", namespace=ns)
    events = await watching
    see("watch events", [(e["type"], e["object"]["metadata"]["name"]) for e in events])
    see("watch object keys", sorted(events[0]["object"]))
    # Compacted away (the watch cache of a CRD starts long after "1"; that of
    # ConfigMaps may still hold "1" on a fresh server).
    old = await _watch(client, ns, "1", 1, CertificateRequest)
    see("watch too old", [(e["type"], _gone(e["object"])) for e in old])
    see("listed version is a number", listed_version.isdigit())

    # -- deletes ---------------------------------------------------------------------------
    for resource, name in ((ConfigMap, "drift"), (CertificateRequest, "cr")):
        code, body = await _raw(client, "delete", resource, name=name, namespace=ns)
        details = dict(body.get("details") or {}, uid=bool(body.get("details", {}).get("uid")))
        see(f"delete {name}", (code, body["kind"], body.get("status"), details))

    # -- TokenRequests -----------------------------------------------------------------------
    ask = ServiceAccountToken(
        metadata=ObjectMeta(name="sa", namespace=ns),
        spec={"audiences": ["api://AzureADTokenExchange"], "expirationSeconds": 3600},
    )
    see("token missing account", await _attempt(client.create(ask, name="sa", namespace=ns)))
    await client.create(ServiceAccount(metadata=ObjectMeta(name="sa", namespace=ns)))
    issued = await client.create(ask, name="sa", namespace=ns)
    see(
        "token",
        (issued.status.token.count("."), issued.spec.expirationSeconds, issued.spec.audiences),
    )
    short = ServiceAccountToken(
        metadata=ObjectMeta(name="sa", namespace=ns), spec={"expirationSeconds": 60}
    )
    see("token too short", (await _attempt(client.create(short, name="sa", namespace=ns)))[:3])

    # -- ClusterTrustBundle names (Kubernetes 1.37) -----------------------------------------
    signer = f"clusterissuers.azure-keyvault-issuer.gonicus.de/drift-{ns}"

    def bundle(name: str, signer_name: str | None) -> Any:
        spec: dict[str, Any] = {"trustBundle": _CA_PEM}
        if signer_name:
            spec["signerName"] = signer_name
        return ClusterTrustBundle(
            {
                "apiVersion": "certificates.k8s.io/v1",
                "kind": "ClusterTrustBundle",
                "metadata": {"name": name},
                "spec": spec,
            }
        )

    linked = signer.replace("/", ":") + ":anchors"
    created = await client.create(bundle(linked, signer))
    see("bundle linked", (created["metadata"]["name"], created["spec"]["signerName"]))
    see("bundle misnamed", await _attempt(client.create(bundle(f"drift-{ns}", signer))))
    see("bundle colon", await _attempt(client.create(bundle(f"x:drift-{ns}", None))))
    see("bundle bad suffix", await _attempt(client.create(bundle(linked[:-7] + "Anchors", signer))))
    await client.delete(ClusterTrustBundle, linked)
    return seen


async def test_the_fake_answers_as_the_real_api_server(
    kube_client: AsyncClient, namespace: str
) -> None:
    real = await scenario(kube_client, namespace)
    kube = FakeKube(namespaces=[namespace])
    kube.register(ClusterTrustBundle)  # served from Kubernetes 1.37
    client = kube.client(field_manager="akv-tests")
    try:
        fake = await scenario(client, namespace)
    finally:
        await client.close()
    print(*fake, sep="\n")  # shown when it fails
    differences = [(r, f) for r, f in zip(real, fake, strict=True) if r != f]
    assert differences == [], "\n".join(f"real: {r}\nfake: {f}\n" for r, f in differences)
