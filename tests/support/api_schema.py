"""Reading the CRD YAML, and a small validator for what our schemas use.

The validator covers only the OpenAPI keywords our CRDs contain (and says so
when it meets another), so sample manifests and status bodies can be checked
against the schema without an API server. CEL rules are not evaluated here
(parse_issuer_spec enforces the same rule). Server-side validation of the same
schema is exercised by the integration tests.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "config"
CRD_DIR = CONFIG / "crd" / "bases"
ISSUER_CRD = CRD_DIR / "azure-keyvault-issuer.gonicus.de_issuers.yaml"
CLUSTER_ISSUER_CRD = CRD_DIR / "azure-keyvault-issuer.gonicus.de_clusterissuers.yaml"
SAMPLES = CONFIG / "samples"

HANDLED_KEYWORDS = {
    "type",
    # maps (clusterTrustBundles.labels): string values under any key
    "additionalProperties",
    "maxProperties",
    "description",
    "properties",
    "required",
    "items",
    "pattern",
    "enum",
    "minimum",
    "maxLength",
    "maxItems",
    "default",
    "format",
    "x-kubernetes-list-type",
    "x-kubernetes-list-map-keys",
    "x-kubernetes-validations",
}


def load_one(path: Path) -> dict[str, Any]:
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    assert len(docs) == 1, f"{path} must hold exactly one document, has {len(docs)}"
    doc: dict[str, Any] = docs[0]
    return doc


def version_schema(crd: dict[str, Any]) -> dict[str, Any]:
    (version,) = crd["spec"]["versions"]
    schema: dict[str, Any] = version["schema"]["openAPIV3Schema"]
    return schema


def flatten(node: dict[str, Any], prefix: str = "") -> dict[str, dict[str, Any]]:
    """``{dotted.path: {type, required, pattern, ...}}`` for every property below node.

    Array items are folded into their array: ``array[<item type>]``, with the
    item's constraints; an array of objects continues with ``path.child``.
    """
    result: dict[str, dict[str, Any]] = {}
    required = set(node.get("required", ()))
    for name, child in node.get("properties", {}).items():
        path = f"{prefix}{name}"
        facts: dict[str, Any] = {"required": name in required}
        target = child
        if child["type"] == "array":
            target = child["items"]
            facts["type"] = f"array[{target['type']}]"
            facts["maxItems"] = child.get("maxItems")
        else:
            facts["type"] = child["type"]
            facts["maxItems"] = None
        for key in ("pattern", "enum", "minimum", "maxLength", "default"):
            facts[key] = target.get(key)
        result[path] = facts
        if target["type"] == "object":
            result.update(flatten(target, f"{path}."))
    return result


_JSON_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "boolean": (bool,),
    "integer": (int,),
    "object": (dict,),
    "array": (list,),
}


def validate(value: Any, schema: dict[str, Any], path: str = "") -> list[str]:
    """Errors of ``value`` against ``schema`` (unknown fields count as errors,
    as the API server would silently prune them)."""
    unknown = set(schema) - HANDLED_KEYWORDS
    assert not unknown, f"validator does not know {sorted(unknown)} at {path or '<root>'}"
    errors: list[str] = []
    expected = schema["type"]
    if not isinstance(value, _JSON_TYPES[expected]) or (
        expected == "integer" and isinstance(value, bool)
    ):
        return [f"{path}: expected {expected}, got {type(value).__name__}"]
    if "enum" in schema and value not in schema["enum"]:
        errors.append(f"{path}: {value!r} not in enum")
    if "pattern" in schema and re.fullmatch(schema["pattern"], value) is None:
        errors.append(f"{path}: {value!r} does not match {schema['pattern']}")
    if "maxLength" in schema and len(value) > schema["maxLength"]:
        errors.append(f"{path}: longer than {schema['maxLength']}")
    if "minimum" in schema and value < schema["minimum"]:
        errors.append(f"{path}: below {schema['minimum']}")
    rfc3339 = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)"
    if schema.get("format") == "date-time" and re.fullmatch(rfc3339, value) is None:
        errors.append(f"{path}: {value!r} is not RFC 3339")
    if schema.get("format") == "byte" and (
        re.fullmatch(r"[A-Za-z0-9+/]*={0,2}", value) is None or len(value) % 4
    ):
        errors.append(f"{path}: not base64")
    if expected == "array":
        if "maxItems" in schema and len(value) > schema["maxItems"]:
            errors.append(f"{path}: more than {schema['maxItems']} items")
        for index, item in enumerate(value):
            errors += validate(item, schema["items"], f"{path}[{index}]")
    if expected == "object":
        properties = schema.get("properties", {})
        additional = schema.get("additionalProperties")
        if "maxProperties" in schema and len(value) > schema["maxProperties"]:
            errors.append(f"{path}: more than {schema['maxProperties']} properties")
        for name in schema.get("required", ()):
            if name not in value:
                errors.append(f"{path}.{name}: required")
        for name, item in value.items():
            if name not in properties and isinstance(additional, dict):
                errors += validate(item, additional, f"{path}[{name!r}]")
                continue
            if name not in properties:
                errors.append(f"{path}.{name}: unknown field (would be pruned)")
                continue
            errors += validate(item, properties[name], f"{path}.{name}")
    return errors
