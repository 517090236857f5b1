"""Errors as the real API server words them: a ``Status`` body and its HTTP code."""

from __future__ import annotations

from typing import Any

from . import fields
from .resources import ResourceType

Obj = dict[str, Any]

REASONS = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    405: "MethodNotAllowed",
    409: "Conflict",
    410: "Expired",
    415: "UnsupportedMediaType",
    422: "Invalid",
    429: "TooManyRequests",
    500: "InternalError",
    503: "ServiceUnavailable",
    504: "Timeout",
}


class ApiStatus(Exception):
    """An answer with a ``Status`` body (an error, as the real server words it)."""

    def __init__(
        self,
        code: int,
        message: str,
        reason: str | None = None,
        details: Obj | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.reason = reason if reason is not None else REASONS.get(code, "")
        self.details = details
        self.headers = headers or {}

    def body(self) -> Obj:
        return status_body(self.code, self.reason, self.message, self.details)


def status_body(code: int, reason: str, message: str, details: Obj | None = None) -> Obj:
    body: Obj = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
    }
    if reason:  # an internal error has none
        body["reason"] = reason
    body["code"] = code
    if details is not None:
        body["details"] = details
    return body


def details_of(rtype: ResourceType, name: str) -> Obj:
    details: Obj = {"name": name}
    if rtype.group:
        details["group"] = rtype.group
    details["kind"] = rtype.plural
    return details


def not_found(rtype: ResourceType, name: str) -> ApiStatus:
    return ApiStatus(404, f'{rtype.qualified} "{name}" not found', details=details_of(rtype, name))


def conflict(rtype: ResourceType, name: str, why: str | None = None) -> ApiStatus:
    why = why or (
        "the object has been modified; please apply your changes to the latest version "
        "and try again"
    )
    return ApiStatus(
        409,
        f'Operation cannot be fulfilled on {rtype.qualified} "{name}": {why}',
        details=details_of(rtype, name),
    )


def invalid(rtype: ResourceType, name: str, path: str, detail: str) -> ApiStatus:
    details = details_of(rtype, name)
    details["kind"] = rtype.kind
    details["causes"] = [{"reason": "FieldValueInvalid", "message": detail, "field": path}]
    # The qualified kind, as the API server says it: "ConfigMap",
    # "ClusterTrustBundle.certificates.k8s.io".
    kind = f"{rtype.kind}.{rtype.group}" if rtype.group else rtype.kind
    return ApiStatus(422, f'{kind} "{name}" is invalid: {path}: {detail}', details=details)


def already_exists(rtype: ResourceType, name: str) -> ApiStatus:
    return ApiStatus(
        409,
        f'{rtype.qualified} "{name}" already exists',
        reason="AlreadyExists",
        details=details_of(rtype, name),
    )


def no_such_resource() -> ApiStatus:
    return ApiStatus(404, "the server could not find the requested resource", details={})


def _manager(c: fields.Conflict) -> str:
    """A manager as the API server names it in conflicts: an applier by its
    name, an updater with the API version of its write."""
    text = f'"{c.manager}"'
    if c.subresource:
        text += f' with subresource "{c.subresource}"'
    if c.operation == "Update":
        text += f" using {c.api_version}"
    return text


def apply_conflict(conflicts: list[fields.Conflict]) -> ApiStatus:
    causes = [
        {
            "reason": "FieldManagerConflict",
            "message": f"conflict with {_manager(c)}",
            "field": fields.dotted(c.path),
        }
        for c in conflicts
    ]
    if len(conflicts) == 1:
        c = conflicts[0]
        text = f"Apply failed with 1 conflict: conflict with {_manager(c)}: {fields.dotted(c.path)}"
    else:
        by_manager: dict[str, list[str]] = {}
        for c in conflicts:
            by_manager.setdefault(_manager(c), []).append(fields.dotted(c.path))
        lines = []
        for manager in sorted(by_manager):
            lines.append(f"conflicts with {manager}:")
            lines.extend(f"- {path}" for path in by_manager[manager])
        text = f"Apply failed with {len(conflicts)} conflicts: " + "\n".join(lines)
    return ApiStatus(409, text, reason="Conflict", details={"causes": causes})
