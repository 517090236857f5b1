"""The REST verbs of the fake API server (a part of :class:`~.server.FakeKube`).

Each verb reads and writes the state :class:`~.server.FakeKube` holds and
answers as the real server would: the object, or :class:`~.errors.ApiStatus`.
"""

from __future__ import annotations

import base64
import copy
import datetime as dt
import json
import re
import uuid
from dataclasses import dataclass
from typing import Any

import httpx2

from . import fields
from .errors import (
    ApiStatus,
    already_exists,
    apply_conflict,
    conflict,
    details_of,
    invalid,
    not_found,
    status_body,
)
from .faults import Call
from .resources import ResourceType
from .selectors import SelectorError, field_selector, label_selector
from .tokens import TokenGrant
from .watch import END, Watcher, WatchStream

Obj = dict[str, Any]
Key = tuple[str, str, str, str]  # group, plural, namespace, name

PARTIAL_METADATA = "PartialObjectMetadata"
_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


def format_time(when: dt.datetime) -> str:
    return when.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Stored:
    obj: Obj
    managers: list[fields.Manager]


def _namespace_mismatch() -> ApiStatus:
    return ApiStatus(
        400,
        "the namespace of the provided object does not match the namespace sent on the request",
    )


class RestVerbs:
    """get, list, watch, create, update, patch (4 kinds), delete, deletecollection
    and TokenRequests; mixed into :class:`~.server.FakeKube`, whose state it uses."""

    # State and helpers of FakeKube this part uses.
    _objects: dict[Key, Any]
    _history: dict[Key, list[tuple[int, Obj | None]]]
    _log: list[Any]
    _rv: int
    _compacted: int
    _watchers: set[Watcher]
    strict_namespaces: bool

    def _check_namespace(self, rtype: ResourceType, namespace: str) -> None:
        exists = ("", "namespaces", "", namespace) in self._objects
        if self.strict_namespaces and rtype.namespaced and not exists:
            raise not_found(self.resource("namespaces"), namespace)  # type: ignore[attr-defined]

    def _key(self, rtype: ResourceType, namespace: str | None, name: str) -> Key:
        return (rtype.group, rtype.plural, (namespace or "") if rtype.namespaced else "", name)

    def _list(self, call: Call, rtype: ResourceType) -> Obj:
        try:
            labels = label_selector(call.params.get("labelSelector"))
            selected = field_selector(call.params.get("fieldSelector"))
        except SelectorError as exc:
            raise ApiStatus(400, str(exc)) from None
        limit = int(call.params.get("limit") or 0)
        token = call.params.get("continue")
        if token:
            at, start = self._decode_continue(token)
        else:
            at, start = self._rv, None
            requested = call.params.get("resourceVersion")
            if requested not in (None, "", "0") and _version(requested) > self._rv:
                raise ApiStatus(
                    504,
                    f"Too large resource version: {requested}, current: {self._rv}",
                    reason="Timeout",
                    details={
                        "causes": [
                            {
                                "reason": "ResourceVersionTooLarge",
                                "message": "Too large resource version",
                            }
                        ],
                        "retryAfterSeconds": 1,
                    },
                )
        objects = self._snapshot(rtype, call.namespace or None, at)
        chosen = [
            (k, o) for k, o in objects if (start is None or k > start) and labels(o) and selected(o)
        ]
        metadata: Obj = {"resourceVersion": str(at)}
        if limit and len(chosen) > limit:
            page, rest = chosen[:limit], chosen[limit:]
            metadata["continue"] = self._encode_continue(at, page[-1][0])
            if not call.params.get("labelSelector") and not call.params.get("fieldSelector"):
                metadata["remainingItemCount"] = len(rest)
        else:
            page = chosen
        items = []
        for _, obj in page:
            item = copy.deepcopy(obj)
            if not rtype.custom:  # typed lists carry no apiVersion/kind per item
                item.pop("apiVersion", None)
                item.pop("kind", None)
            items.append(item)
        return {
            "kind": f"{rtype.kind}List",
            "apiVersion": rtype.api_version,
            "metadata": metadata,
            "items": items,
        }

    def _snapshot(
        self, rtype: ResourceType, namespace: str | None, at: int
    ) -> list[tuple[str, Obj]]:
        found = []
        for key, revisions in self._history.items():
            if key[:2] != (rtype.group, rtype.plural) or (
                namespace is not None and key[2] != namespace
            ):
                continue
            obj = None
            for rv, revision in revisions:
                if rv <= at:
                    obj = revision
            if obj is not None:
                found.append((f"{key[2]}/{key[3]}", obj))
        return sorted(found)

    def _encode_continue(self, at: int, start: str) -> str:
        raw = json.dumps({"v": "meta.k8s.io/v1", "rv": at, "start": start}).encode()
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    def _decode_continue(self, token: str) -> tuple[int, str]:
        try:
            data = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
            at, start = int(data["rv"]), str(data["start"])
        except (ValueError, KeyError, TypeError):
            raise ApiStatus(400, f"continue key is not valid: {token}") from None
        if at < self._compacted:
            raise ApiStatus(
                410,
                "The provided continue parameter is too old to display a consistent list result. "
                "You can start a new list without the continue parameter.",
                reason="Expired",
            )
        return at, start

    def _gone_status(self, version: int, *, watch: bool) -> Obj:
        message = f"too old resource version: {version} ({self._compacted + 1})"
        return status_body(410, "Expired", message)

    def _watch(self, call: Call, rtype: ResourceType) -> httpx2.Response:
        try:
            watcher = Watcher(
                rtype,
                call.namespace or None,
                label_selector(call.params.get("labelSelector")),
                field_selector(call.params.get("fieldSelector")),
                call.params.get("allowWatchBookmarks") in ("true", "1"),
            )
        except SelectorError as exc:
            raise ApiStatus(400, str(exc)) from None
        requested = call.params.get("resourceVersion")
        timeout = float(call.params.get("timeoutSeconds") or 0) or None
        if requested in (None, "", "0"):
            for _, obj in self._snapshot(rtype, watcher.namespace, self._rv):
                if watcher.matches(obj):
                    watcher.send("ADDED", obj)
        else:
            since = _version(requested)
            if since < self._compacted:
                watcher.send("ERROR", self._gone_status(since, watch=True))
                watcher.queue.put_nowait(END)
                stream = WatchStream(watcher, None, self._sleep, self._watchers.discard)
                return httpx2.Response(
                    200, headers={"Content-Type": "application/json"}, stream=stream
                )
            for change in self._log:
                if change.rv > since and change.rtype == rtype:
                    watcher.offer(change)
        self._watchers.add(watcher)
        stream = WatchStream(watcher, timeout, self._sleep, self._watchers.discard)
        return httpx2.Response(200, headers={"Content-Type": "application/json"}, stream=stream)

    def _create(self, call: Call, rtype: ResourceType, manager: str, dry_run: bool) -> Obj:
        obj = self._body(call, rtype)
        meta = obj.setdefault("metadata", {})
        if meta.get("resourceVersion"):
            # The real server answers this with an internal error (no reason).
            raise ApiStatus(
                500, "resourceVersion should not be set on objects to be created", reason=""
            )
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = f"{meta['generateName']}{uuid.uuid4().hex[:5]}"
        name = str(meta.get("name") or "")
        self._validate_name(rtype, name, obj)
        key = self._key(rtype, call.namespace, name)
        if key in self._objects:
            raise already_exists(rtype, name)
        self._check_namespace(rtype, call.namespace)
        if rtype.has_status and rtype.plural != "namespaces":
            obj.pop("status", None)  # set through the status subresource only
        self._prepare_new(rtype, obj, call.namespace)
        managers: list[fields.Manager] = []
        self._own(managers, None, obj, rtype, manager, "")
        if dry_run:
            return obj
        return copy.deepcopy(self._commit(rtype, key, obj, managers, None))

    def _update(self, call: Call, rtype: ResourceType, manager: str, dry_run: bool) -> Obj:
        obj = self._body(call, rtype)
        meta = obj.setdefault("metadata", {})
        if meta.get("name") and meta["name"] != call.name:
            raise ApiStatus(
                400,
                f"the name of the object ({meta['name']}) does not match the name on the URL "
                f"({call.name})",
            )
        key = self._key(rtype, call.namespace, call.name)
        stored = self._objects.get(key)
        if stored is None:
            raise not_found(rtype, call.name)
        old = stored.obj
        wanted = str(meta.get("resourceVersion") or "")
        if not wanted and rtype.custom:
            raise invalid(
                rtype,
                call.name,
                "metadata.resourceVersion",
                "Invalid value: 0x0: must be specified for an update",
            )
        if wanted and wanted != old["metadata"]["resourceVersion"]:
            raise conflict(rtype, call.name)
        uid = meta.get("uid")
        if uid and uid != old["metadata"].get("uid"):
            raise conflict(
                rtype,
                call.name,
                f"Precondition failed: UID in precondition: {uid}, UID in object meta: "
                f"{old['metadata'].get('uid')}",
            )
        return self._write(rtype, key, stored, obj, call.subresource, manager, dry_run, None)

    def _patch(
        self, call: Call, rtype: ResourceType, manager: str, dry_run: bool
    ) -> tuple[int, Obj]:
        key = self._key(rtype, call.namespace, call.name)
        stored = self._objects.get(key)
        patch = call.body
        if call.patch_type == "apply":
            if not call.field_manager:
                raise invalid(
                    rtype, call.name, "fieldManager", "Required value: is required for apply patch"
                )
            if not isinstance(patch, dict) or not patch.get("apiVersion") or not patch.get("kind"):
                raise ApiStatus(400, "apiVersion and kind must be set in an apply patch")
            self._check_type(rtype, patch)
            meta = patch.get("metadata") or {}
            if meta.get("name") and meta["name"] != call.name:
                raise ApiStatus(
                    400,
                    f"the name of the object ({meta['name']}) does not match the name on the URL "
                    f"({call.name})",
                )
            if stored is None:
                if call.subresource:
                    raise not_found(rtype, call.name)
                return 201, self._apply_create(call, rtype, patch, dry_run)
            wanted = str(meta.get("resourceVersion") or "")
            if wanted and wanted != stored.obj["metadata"]["resourceVersion"]:
                raise conflict(rtype, call.name)
            config = self._scoped(rtype, patch, call.subresource)
            managers = copy.deepcopy(stored.managers)
            new, conflicts = fields.apply(
                managers,
                self._unscoped_view(stored.obj),
                config,
                rtype.list_maps,
                manager=call.field_manager,
                subresource=call.subresource,
                api_version=rtype.api_version,
                time=self._now(),
                force=call.params.get("force") in ("true", "1"),
            )
            if conflicts and call.params.get("force") not in ("true", "1"):
                raise apply_conflict(conflicts)
            return 200, self._write(
                rtype, key, stored, new, call.subresource, call.field_manager, dry_run, managers
            )
        if stored is None:
            raise not_found(rtype, call.name)
        if call.patch_type == "strategic" and rtype.custom:
            raise ApiStatus(
                415,
                "the body of the request was in an unknown format - accepted media types include: "
                "application/json-patch+json, application/merge-patch+json, "
                "application/apply-patch+yaml",
            )
        current = copy.deepcopy(stored.obj)
        if call.patch_type == "json":
            new = fields.json_patch(current, patch)
        elif not isinstance(patch, dict):
            raise ApiStatus(400, "a merge patch must be a JSON object")
        elif call.patch_type == "strategic":
            new = fields.strategic_merge_patch(current, patch, rtype.list_maps)
        else:
            new = fields.merge_patch(current, patch)
        wanted = str((new.get("metadata") or {}).get("resourceVersion") or "")
        if wanted != stored.obj["metadata"]["resourceVersion"]:
            raise conflict(rtype, call.name)
        return 200, self._write(rtype, key, stored, new, call.subresource, manager, dry_run, None)

    def _apply_create(self, call: Call, rtype: ResourceType, patch: Obj, dry_run: bool) -> Obj:
        obj = self._scoped(rtype, copy.deepcopy(patch), "")
        meta = obj.setdefault("metadata", {})
        meta["name"] = call.name
        self._validate_name(rtype, call.name, obj)
        if rtype.namespaced and meta.get("namespace") not in (None, "", call.namespace):
            raise _namespace_mismatch()
        self._check_namespace(rtype, call.namespace)
        meta.pop("resourceVersion", None)
        managers: list[fields.Manager] = []
        applied, _ = fields.apply(
            managers,
            {},
            obj,
            rtype.list_maps,
            manager=str(call.field_manager),
            subresource="",
            api_version=rtype.api_version,
            time=self._now(),
            force=True,
        )
        self._prepare_new(rtype, applied, call.namespace)
        if dry_run:
            return applied
        key = self._key(rtype, call.namespace, call.name)
        return copy.deepcopy(self._commit(rtype, key, applied, managers, None))

    def _scoped(self, rtype: ResourceType, obj: Obj, subresource: str) -> Obj:
        """What a write to this endpoint may change: only status on "status",
        status conditions on "approval", everything but status on the main
        resource of a type with a status subresource."""
        if subresource in ("status", "approval"):
            meta = obj.get("metadata") or {}
            kept: Obj = {
                "apiVersion": obj.get("apiVersion"),
                "kind": obj.get("kind"),
                "metadata": {k: meta[k] for k in ("name", "namespace") if k in meta},
            }
            status = obj.get("status")
            if subresource == "approval":
                status = {"conditions": (status or {}).get("conditions") or []}
            if status is not None:
                kept["status"] = status
            return kept
        if rtype.has_status and rtype.plural != "namespaces":
            return {k: v for k, v in obj.items() if k != "status"}
        return obj

    @staticmethod
    def _unscoped_view(obj: Obj) -> Obj:
        view = copy.deepcopy(obj)
        view.get("metadata", {}).pop("managedFields", None)
        return view

    def _write(
        self,
        rtype: ResourceType,
        key: Key,
        stored: Stored,
        new: Obj,
        subresource: str,
        manager: str,
        dry_run: bool,
        applied_managers: list[fields.Manager] | None,
    ) -> Obj:
        """Finish an update or patch: keep what this endpoint may not change,
        server fields, generation, ownership; no write when nothing changed."""
        old = stored.obj
        if subresource in ("status", "approval"):
            result = copy.deepcopy(old)
            status = new.get("status")
            if subresource == "approval":
                result.setdefault("status", {})["conditions"] = (status or {}).get(
                    "conditions"
                ) or []
            elif status is None:
                result.pop("status", None)
            else:
                result["status"] = status
            new = result
        elif rtype.has_status and rtype.plural != "namespaces":
            new = {k: v for k, v in new.items() if k != "status"}
            if "status" in old:
                new["status"] = copy.deepcopy(old["status"])
        self._restore_server_fields(rtype, old, new)
        if rtype.plural == "secrets":
            _string_data(new)
        self._bump_generation(rtype, old, new)
        if applied_managers is None:
            managers = copy.deepcopy(stored.managers)
            self._own(managers, old, new, rtype, manager, subresource)
        else:
            managers = applied_managers
        if _same(old, new) and _same_owners(stored.managers, managers):
            return copy.deepcopy(old)
        if dry_run:
            return new
        meta = new["metadata"]
        if meta.get("deletionTimestamp") and not meta.get("finalizers"):
            self._commit(rtype, key, None, [], old)
            gone = copy.deepcopy(new)
            gone["metadata"]["resourceVersion"] = str(self._rv)
            return gone
        return copy.deepcopy(self._commit(rtype, key, new, managers, old))

    def _delete(
        self, rtype: ResourceType, namespace: str, name: str, options: Any, dry_run: bool
    ) -> Obj:
        key = self._key(rtype, namespace, name)
        stored = self._objects.get(key)
        if stored is None:
            raise not_found(rtype, name)
        old = stored.obj
        preconditions = (options or {}).get("preconditions") or {}
        if preconditions.get("resourceVersion") not in (None, old["metadata"]["resourceVersion"]):
            raise conflict(
                rtype,
                name,
                f"Precondition failed: ResourceVersion in precondition: "
                f"{preconditions['resourceVersion']}, ResourceVersion in object meta: "
                f"{old['metadata']['resourceVersion']}",
            )
        if preconditions.get("uid") not in (None, old["metadata"].get("uid")):
            raise conflict(
                rtype,
                name,
                f"Precondition failed: UID in precondition: {preconditions['uid']}, UID in "
                f"object meta: {old['metadata'].get('uid')}",
            )
        if dry_run:
            return copy.deepcopy(old)
        if old["metadata"].get("finalizers"):
            if old["metadata"].get("deletionTimestamp"):
                return copy.deepcopy(old)
            new = copy.deepcopy(old)
            new["metadata"]["deletionTimestamp"] = self._now()
            new["metadata"]["deletionGracePeriodSeconds"] = 0
            return copy.deepcopy(self._commit(rtype, key, new, stored.managers, old))
        if rtype.plural == "namespaces":
            for other in [k for k in self._objects if k[2] == name and k[:2] != key[:2]]:
                other_type = self._types[other[:2]]
                if other_type.namespaced:
                    self._commit(other_type, other, None, [], self._objects[other].obj)
        self._commit(rtype, key, None, [], old)
        return {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Success",
            "details": {**details_of(rtype, name), "uid": old["metadata"].get("uid")},
        }

    def _delete_collection(self, call: Call, rtype: ResourceType, dry_run: bool) -> Obj:
        listed = self._list(
            Call(
                "list",
                call.group,
                call.plural,
                "",
                call.namespace,
                "",
                {k: v for k, v in call.params.items() if k in ("labelSelector", "fieldSelector")},
                None,
                None,
                None,
            ),
            rtype,
        )
        for item in listed["items"]:
            meta = item["metadata"]
            self._delete(rtype, meta.get("namespace") or "", meta["name"], None, dry_run)
        return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success"}

    def _token(self, call: Call, rtype: ResourceType) -> Obj:
        if self._key(rtype, call.namespace, call.name) not in self._objects:
            raise not_found(rtype, call.name)
        body = call.body or {}
        spec = dict(body.get("spec") or {})
        seconds = int(spec.get("expirationSeconds") or 3600)
        if seconds < 600:
            token_type = ResourceType(
                "authentication.k8s.io", "v1", "tokenrequests", "TokenRequest", True
            )
            raise invalid(
                token_type,
                call.name,
                "spec.expirationSeconds",
                f"Invalid value: {seconds}: may not specify a duration less than 10 minutes",
            )
        audiences = list(spec.get("audiences") or self.default_audiences)
        now = self._clock_now()
        expires = (now + dt.timedelta(seconds=seconds)).replace(microsecond=0)
        sa = self._objects[self._key(rtype, call.namespace, call.name)].obj
        grant = TokenGrant(
            call.namespace,
            call.name,
            str(sa["metadata"].get("uid")),
            audiences,
            expires,
            next(self._serial),
        )
        return {
            "kind": "TokenRequest",
            "apiVersion": "authentication.k8s.io/v1",
            "metadata": {
                "name": call.name,
                "namespace": call.namespace,
                "creationTimestamp": format_time(now),
            },
            "spec": {"audiences": audiences, "expirationSeconds": seconds, "boundObjectRef": None},
            "status": {
                "token": self.token_issuer(grant),
                "expirationTimestamp": format_time(expires),
            },
        }

    # == helpers =======================================================================

    def _body(self, call: Call, rtype: ResourceType) -> Obj:
        if not isinstance(call.body, dict):
            raise ApiStatus(400, "the body of the request must be a JSON object")
        obj = copy.deepcopy(call.body)
        self._check_type(rtype, obj)
        obj["apiVersion"], obj["kind"] = rtype.api_version, rtype.kind
        meta = obj.setdefault("metadata", {})
        if rtype.namespaced:
            if meta.get("namespace") not in (None, "", call.namespace):
                raise _namespace_mismatch()
            meta["namespace"] = call.namespace
        return obj

    @staticmethod
    def _check_type(rtype: ResourceType, obj: Obj) -> None:
        version = obj.get("apiVersion")
        if version and version != rtype.api_version:
            raise ApiStatus(
                400,
                f"the API version in the data ({version}) does not match the expected API "
                f"version ({rtype.api_version})",
            )
        kind = obj.get("kind")
        if kind and kind != rtype.kind:
            raise ApiStatus(
                400,
                f"the kind in the data ({kind}) does not match the expected kind ({rtype.kind})",
            )

    @staticmethod
    def _validate_name(rtype: ResourceType, name: str, obj: Obj | None = None) -> None:
        if not name:
            raise invalid(
                rtype, "", "metadata.name", "Required value: name or generateName is required"
            )
        checked = name
        if (rtype.group, rtype.plural) == ("certificates.k8s.io", "clustertrustbundles"):
            # A bundle linked to a signer is named "<signer, '/' as ':'>:<DNS subdomain>";
            # one without a signer has no ':' (ValidateClusterTrustBundleName).
            signer = str(((obj or {}).get("spec") or {}).get("signerName") or "")
            prefix = signer.replace("/", ":") + ":"
            if signer and not name.startswith(prefix):
                raise invalid(
                    rtype,
                    name,
                    "metadata.name",
                    f'Invalid value: "{name}": ClusterTrustBundle for signerName {signer} '
                    f"must be named with prefix {prefix}",
                )
            if not signer and ":" in name:
                raise invalid(
                    rtype,
                    name,
                    "metadata.name",
                    f'Invalid value: "{name}": ClusterTrustBundle without signer name must '
                    'not have ":" in its name',
                )
            checked = name.removeprefix(prefix) if signer else name
            if signer and (len(checked) > 253 or not _NAME.match(checked)):
                # The suffix goes through IsDNS1123Subdomain, whose message names the regex.
                raise invalid(
                    rtype,
                    name,
                    "metadata.name",
                    f'Invalid value: "{name}": a lowercase RFC 1123 subdomain must consist of '
                    "lower case alphanumeric characters, '-' or '.', and must start and end with "
                    "an alphanumeric character (e.g. 'example.com', regex used for validation is "
                    "'[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')",
                )
        if len(checked) > 253 or not _NAME.match(checked):
            raise invalid(
                rtype,
                name,
                "metadata.name",
                f'Invalid value: "{name}": a lowercase RFC 1123 subdomain must consist of lower '
                "case alphanumeric characters, '-' or '.', and must start and end with an "
                "alphanumeric character",
            )

    def _prepare_new(self, rtype: ResourceType, obj: Obj, namespace: str) -> None:
        meta = obj.setdefault("metadata", {})
        obj["apiVersion"], obj["kind"] = rtype.api_version, rtype.kind
        if rtype.namespaced:
            meta["namespace"] = namespace
        else:
            meta.pop("namespace", None)
        meta["uid"] = str(uuid.uuid4())
        meta["creationTimestamp"] = self._now()
        for server_field in ("resourceVersion", "managedFields", "deletionTimestamp", "selfLink"):
            meta.pop(server_field, None)
        if rtype.generation:
            meta["generation"] = 1
        else:
            meta.pop("generation", None)
        if rtype.plural == "secrets":
            _string_data(obj)
            obj.setdefault("type", "Opaque")
        if rtype.plural == "namespaces":
            obj.setdefault("spec", {"finalizers": ["kubernetes"]})
            obj.setdefault("status", {"phase": "Active"})
            meta.setdefault("labels", {})["kubernetes.io/metadata.name"] = meta.get("name")

    @staticmethod
    def _restore_server_fields(rtype: ResourceType, old: Obj, new: Obj) -> None:
        meta = new.setdefault("metadata", {})
        old_meta = old["metadata"]
        for name in (
            "uid",
            "creationTimestamp",
            "generation",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "name",
            "namespace",
        ):
            if name in old_meta:
                meta[name] = old_meta[name]
            else:
                meta.pop(name, None)
        meta["resourceVersion"] = old_meta["resourceVersion"]
        meta.pop("managedFields", None)
        new["apiVersion"], new["kind"] = old["apiVersion"], old["kind"]

    @staticmethod
    def _bump_generation(rtype: ResourceType, old: Obj, new: Obj) -> None:
        if not rtype.generation:
            return

        def content(obj: Obj) -> Obj:
            return {k: v for k, v in obj.items() if k not in ("metadata", "status")}

        if content(old) != content(new):
            new["metadata"]["generation"] = int(old["metadata"].get("generation") or 0) + 1

    def _own(
        self,
        managers: list[fields.Manager],
        old: Obj | None,
        new: Obj,
        rtype: ResourceType,
        manager: str,
        subresource: str,
    ) -> None:
        fields.record_update(
            managers,
            self._unscoped_view(old) if old else None,
            self._unscoped_view(new),
            rtype.list_maps,
            manager=manager,
            subresource=subresource,
            api_version=rtype.api_version,
            time=self._now(),
        )


def _version(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ApiStatus(
            400, f'Invalid value: "{text}": strconv.ParseUint: parsing "{text}": invalid syntax'
        ) from None


def partial(obj: Obj) -> Obj:
    if obj.get("kind") == "Status":
        return obj
    return {
        "kind": PARTIAL_METADATA,
        "apiVersion": "meta.k8s.io/v1",
        "metadata": copy.deepcopy(obj.get("metadata") or {}),
    }


def _string_data(obj: Obj) -> None:
    string_data = obj.pop("stringData", None)
    if string_data:
        data = obj.setdefault("data", {})
        for k, v in string_data.items():
            data[k] = base64.b64encode(str(v).encode()).decode()


def _comparable(obj: Obj) -> Obj:
    view = copy.deepcopy(obj)
    view.get("metadata", {}).pop("managedFields", None)
    view.get("metadata", {}).pop("resourceVersion", None)
    return view


def _same(old: Obj, new: Obj) -> bool:
    return _comparable(old) == _comparable(new)


def _same_owners(a: list[fields.Manager], b: list[fields.Manager]) -> bool:
    def key(ms: list[fields.Manager]) -> list[tuple[str, str, str, frozenset[fields.Path]]]:
        return sorted(
            ((m.manager, m.operation, m.subresource, frozenset(m.owned)) for m in ms),
            key=lambda t: t[:3],
        )

    return key(a) == key(b)


def parse_yaml(body: bytes) -> Any:
    try:
        import yaml
    except ImportError:  # pragma: no cover - the dev environment has PyYAML
        raise ApiStatus(
            400, "an apply patch in YAML needs PyYAML in the test environment"
        ) from None
    try:
        return yaml.safe_load(body)
    except yaml.YAMLError as exc:
        raise ApiStatus(400, f"error decoding YAML: {exc}") from None
