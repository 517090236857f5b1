"""The CRD YAML and the Python model agree, and the YAML is a valid structural schema."""

from __future__ import annotations

import copy
import re
from typing import Any

import pytest

from akv_issuer.controller import api
from support.api_schema import (
    CLUSTER_ISSUER_CRD,
    ISSUER_CRD,
    SAMPLES,
    flatten,
    load_one,
    validate,
    version_schema,
)

CRDS = {
    api.ISSUER_KIND: (ISSUER_CRD, api.ISSUER_PLURAL, "Namespaced"),
    api.CLUSTER_ISSUER_KIND: (CLUSTER_ISSUER_CRD, api.CLUSTER_ISSUER_PLURAL, "Cluster"),
}


def _facts(definition: api.FieldDef) -> dict[str, Any]:
    return {
        "type": definition.type,
        "required": definition.required,
        "pattern": definition.pattern,
        "enum": list(definition.enum) if definition.enum is not None else None,
        "minimum": definition.minimum,
        "maxLength": definition.max_length,
        "maxItems": definition.max_items,
        "default": definition.default,
    }


@pytest.mark.parametrize("kind", sorted(CRDS))
def test_crd_names_match_the_constants(kind: str) -> None:
    path, plural, scope = CRDS[kind]
    crd = load_one(path)
    assert crd["apiVersion"] == "apiextensions.k8s.io/v1"
    assert crd["metadata"]["name"] == f"{plural}.{api.GROUP}"
    spec = crd["spec"]
    assert spec["group"] == api.GROUP
    assert spec["scope"] == scope
    assert spec["names"]["kind"] == kind
    assert spec["names"]["plural"] == plural
    assert spec["names"]["singular"] == kind.lower()
    assert spec["names"]["listKind"] == f"{kind}List"
    assert "cert-manager" in spec["names"]["categories"]
    assert f"akv{kind.lower()}" in spec["names"]["shortNames"]
    (version,) = spec["versions"]
    assert version["name"] == api.VERSION
    assert version["served"] is True
    assert version["storage"] is True
    assert version["subresources"] == {"status": {}}
    columns = {c["name"]: c for c in version["additionalPrinterColumns"]}
    assert columns["Ready"]["jsonPath"] == '.status.conditions[?(@.type=="Ready")].status'
    assert columns["Reason"]["jsonPath"] == '.status.conditions[?(@.type=="Ready")].reason'
    assert columns["Key"]["jsonPath"] == ".spec.keyName"
    assert columns["Age"]["jsonPath"] == ".metadata.creationTimestamp"
    # The CA's NotAfter as the timestamp itself: kubectl renders a `date`
    # column as an age, "<invalid>" for every time in the future.
    assert columns["CA Not After"] == {
        "name": "CA Not After",
        "type": "string",
        "priority": 1,
        "jsonPath": ".status.caNotAfter",
    }
    # Columns shown without -o wide, in order.
    default_columns = [
        c["name"] for c in version["additionalPrinterColumns"] if not c.get("priority")
    ]
    assert default_columns == ["Ready", "Reason", "Key", "Age"]


def test_issuer_and_cluster_issuer_share_one_schema() -> None:
    issuer = load_one(ISSUER_CRD)["spec"]["versions"][0]
    cluster = load_one(CLUSTER_ISSUER_CRD)["spec"]["versions"][0]
    assert issuer == cluster


def test_spec_schema_and_model_declare_the_same_fields() -> None:
    schema = version_schema(load_one(ISSUER_CRD))["properties"]["spec"]
    in_yaml = flatten(schema)
    in_model = {path: _facts(d) for path, d in api.SPEC_FIELDS.items()}
    assert sorted(in_yaml) == sorted(in_model)
    for path in in_yaml:
        assert in_yaml[path] == in_model[path], path


def test_status_schema_and_model_declare_the_same_fields() -> None:
    schema = version_schema(load_one(ISSUER_CRD))["properties"]["status"]
    in_yaml = flatten(schema)
    in_model = {path: _facts(d) for path, d in api.STATUS_FIELDS.items()}
    assert sorted(in_yaml) == sorted(in_model)
    for path in in_yaml:
        assert in_yaml[path] == in_model[path], path


ALL_SAMPLES = (
    "issuer.yaml",
    "clusterissuer.yaml",
    "issuer-go-version.yaml",
    # caSource's three sources exclude each other (and caSecretName, caRenewal.automatic).
    "issuer-managed-hsm.yaml",
    "clusterissuer-managed-hsm.yaml",
    "issuer-keyvault-certificate.yaml",
    "issuer-serviceaccount.yaml",
    # spec.pool: a member for each way of naming its CA.
    "clusterissuer-pool.yaml",
    # spec.podCertificates (issue 25)
    "clusterissuer-pod-certificates.yaml",
)


def _parent(spec: dict[str, Any], path: str) -> tuple[Any, str]:
    """The object holding ``path``'s last part (in a list: the first item that sets it)."""
    *parents, leaf = path.split(".")
    node: Any = spec
    for depth, part in enumerate(parents):
        node = node[part]
        if isinstance(node, list):
            rest = [*parents[depth + 1 :], leaf]
            node = next(item for item in node if _value_at(item, rest) is not None)
    return node, leaf


def _value_at(node: Any, parts: list[str]) -> Any:
    for depth, part in enumerate(parts):
        if isinstance(node, list):
            found = (_value_at(item, parts[depth:]) for item in node)
            return next((value for value in found if value is not None), None)
        node = node.get(part) if isinstance(node, dict) else None
    return node


def _full_spec_for(path: str) -> dict[str, Any]:
    """The first sample that sets ``path``: between them the samples set every
    field (clientSecret and workloadIdentity exclude each other, and the full
    sample leaves keyVersion unset to show the default)."""
    for sample in ALL_SAMPLES:
        spec: dict[str, Any] = load_one(SAMPLES / sample)["spec"]
        if _value_at(spec, path.split(".")) is not None:
            return copy.deepcopy(spec)
    raise AssertionError(f"no sample sets spec.{path}; samples must use every field")


_WRONG_TYPE: dict[str, Any] = {
    "string": 12345,
    "boolean": "yes",
    "integer": "1",
    "object": "x",
}


@pytest.mark.parametrize("path", sorted(api.SPEC_FIELDS))
def test_parser_reads_every_declared_field_with_the_declared_type(path: str) -> None:
    """Breaking the type of any field makes parsing fail *at that field*: so the
    parser reads it, and checks the type the schema declares."""
    spec = _full_spec_for(path)
    api.parse_issuer_spec(spec)  # the unbroken sample is fine
    node, leaf = _parent(spec, path)
    declared = api.SPEC_FIELDS[path].type
    node[leaf] = "x" if declared.startswith("array[") else _WRONG_TYPE[declared]
    with pytest.raises(api.SpecError) as caught:
        api.parse_issuer_spec(spec)
    # A pool member's field is named with its index (pool.members[2].keyName).
    assert re.sub(r"\[\d+\]", "", caught.value.field) == path
    assert "must be" in caught.value.reason


@pytest.mark.parametrize("path", sorted(p for p, d in api.SPEC_FIELDS.items() if d.required))
def test_parser_enforces_the_schemas_required_fields(path: str) -> None:
    spec = _full_spec_for(path)
    node, leaf = _parent(spec, path)
    del node[leaf]
    with pytest.raises(api.SpecError) as caught:
        api.parse_issuer_spec(spec)
    assert str(caught.value).endswith(": is required")
    assert re.sub(r"\[\d+\]", "", caught.value.field) == path


@pytest.mark.parametrize("sample", ALL_SAMPLES)
def test_samples_are_valid_against_the_crd_schema(sample: str) -> None:
    manifest = load_one(SAMPLES / sample)
    crd_path, _, scope = CRDS[manifest["kind"]]
    assert manifest["apiVersion"] == api.API_VERSION
    assert ("namespace" in manifest["metadata"]) == (scope == "Namespaced")
    schema = version_schema(load_one(crd_path))
    # metadata is ObjectMeta, validated by the API server itself.
    body = {k: v for k, v in manifest.items() if k != "metadata"}
    assert validate(body, schema) == []


def test_status_built_by_the_model_is_valid_against_the_crd_schema() -> None:
    from datetime import UTC, datetime

    now = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
    status = api.build_issuer_status(
        conditions=[
            api.make_condition(
                api.CONDITION_READY,
                api.ConditionStatus.TRUE,
                api.IssuerReason.CHECKED,
                "Key and CA certificate checked",
                observed_generation=3,
                now=now,
            )
        ],
        ca_certificate_pem=b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
        key_id="https://v.vault.azure.net/keys/ca/0123456789abcdef0123456789abcdef",
        key_version="0123456789abcdef0123456789abcdef",
        signature_algorithm="RS256",
        ca_not_after=datetime(2030, 1, 1, tzinfo=UTC),
        last_check_time=now,
        key_attestation={
            "keyID": "https://h.managedhsm.azure.net/keys/ca/0123456789abcdef",
            "result": "Checked",
            "message": "attests this key version",
            "formatVersion": "1.0.0",
            "hsmPlatform": "2",
            "privateKeyAttestationSHA256": "00" * 32,
            "publicKeyAttestationSHA256": "11" * 32,
            "certificates": 3,
            "rootCertificates": [{"subject": "CN=root", "sha256": "22" * 32}],
            "checkTime": "2025-06-01T12:00:00Z",
        },
        members=[
            {
                "name": "westeurope",
                "keyID": "https://v.vault.azure.net/keys/ca/0123456789abcdef0123456789abcdef",
                "state": "Unavailable",
                "reason": "Throttled",
                "message": "pool member 'westeurope': Key Vault throttled signing",
                "caNotAfter": "2030-01-01T00:00:00Z",
            }
        ],
    )
    schema = version_schema(load_one(ISSUER_CRD))["properties"]["status"]
    assert validate(status, schema) == []
    # Every status field the CRD defines is one the model can write.
    assert set(schema["properties"]) == set(status)


# --- structural-schema sanity (rules the API server enforces on the CRD) ----


def _walk(node: dict[str, Any], path: str = "") -> list[tuple[str, dict[str, Any]]]:
    nodes = [(path, node)]
    for name, child in node.get("properties", {}).items():
        nodes += _walk(child, f"{path}.{name}")
    if "items" in node:
        nodes += _walk(node["items"], f"{path}[]")
    return nodes


@pytest.mark.parametrize("kind", sorted(CRDS))
def test_schema_is_structural(kind: str) -> None:
    schema = version_schema(load_one(CRDS[kind][0]))
    for path, node in _walk(schema):
        # Structural: every node has a type; we use no escape hatches.
        assert node.get("type") in {"object", "array", "string", "integer", "boolean"}, path
        assert not any(k.startswith("x-kubernetes-preserve") for k in node), path
        assert "nullable" not in node, path
        if node["type"] == "array":
            assert "items" in node, path
        if "format" in node:
            allowed = {"string": {"byte", "date-time"}, "integer": {"int64", "int32"}}
            assert node["format"] in allowed.get(node["type"], set()), path
        if "pattern" in node:
            assert node["type"] == "string", path
            # Anchored: the API server searches, it does not full-match.
            assert node["pattern"].startswith("^"), path
            assert node["pattern"].endswith("$"), path
            re.compile(node["pattern"])
        for name in node.get("required", ()):
            assert name in node.get("properties", {}), f"{path} requires unknown {name}"
        if "default" in node:
            # Defaults must validate against their own schema and may not sit
            # under metadata.
            assert not path.startswith(".metadata"), path
            bare = {k: v for k, v in node.items() if k != "default"}
            assert validate(node["default"], bare, path) == [], path
        if node.get("x-kubernetes-list-type") == "map":
            item = node["items"]
            for key in node["x-kubernetes-list-map-keys"]:
                assert key in item["required"], f"{path}: map key {key} must be required"
                assert item["properties"][key]["type"] in {"string", "integer"}, path
        for rule in node.get("x-kubernetes-validations", ()):
            assert node["type"] == "object", path
            assert rule["message"], path
            for field in re.findall(r"self\.(\w+)", rule["rule"]):
                assert field in node["properties"], f"{path}: rule names unknown {field}"
    assert schema["properties"]["metadata"] == {"type": "object"}


@pytest.mark.parametrize("field", ["keyVaultBaseURL", "keyName", "keyVersion"])
def test_go_version_spec_fields_keep_their_type(field: str) -> None:
    spec = version_schema(load_one(ISSUER_CRD))["properties"]["spec"]
    assert spec["properties"][field]["type"] == "string"
    # keyVersion was required in the Go version; now it is optional.
    assert spec["required"] == ["keyVaultBaseURL", "keyName"]


def test_go_version_status_fields_keep_their_shape() -> None:
    status = version_schema(load_one(ISSUER_CRD))["properties"]["status"]["properties"]
    assert status["caCertificate"] == {
        "description": status["caCertificate"]["description"],
        "type": "string",
        "format": "byte",
    }
    item = status["conditions"]["items"]
    assert set(item["properties"]) == {
        "type",
        "status",
        "reason",
        "message",
        "lastTransitionTime",
        "observedGeneration",
    }
    assert item["properties"]["status"]["enum"] == ["True", "False", "Unknown"]
    assert item["properties"]["lastTransitionTime"]["format"] == "date-time"
    assert item["properties"]["observedGeneration"]["format"] == "int64"
