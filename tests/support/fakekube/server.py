"""The in-memory Kubernetes API server: objects, versions, watches and the REST verbs.

:class:`FakeKube` holds the state and answers ``httpx2`` requests (through
:class:`~support.fakekube.transport.FakeTransport`, so the code under test
talks to it with a real ``lightkube.AsyncClient``, or the controller's own
``KubeApi`` on one); tests also read and
change the state directly (``add``, ``get``, ``modify``, ``remove``) and
inject faults. See ``README.md`` beside this file for the semantics served
and what is left out.
"""

from __future__ import annotations

import asyncio
import copy
import datetime as dt
import itertools
import json
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import unquote

import httpx2
from lightkube import AsyncClient, KubeConfig
from lightkube.config.models import Cluster, User
from lightkube.core import resource as lightkube_resource

from akv_issuer.runtime.kubeapi import KubeApi

from . import fields
from .errors import REASONS, ApiStatus, no_such_resource, not_found, status_body
from .faults import VERBS, Call, Fault
from .resources import BUILTIN, ResourceType, from_lightkube
from .rest import PARTIAL_METADATA, RestVerbs, Stored, format_time, parse_yaml, partial
from .tokens import TokenGrant, unsigned_token
from .watch import BREAK, END, Change, Watcher, line

Obj = dict[str, Any]
Key = tuple[str, str, str, str]  # group, plural, namespace, name

SERVER = "https://fake-kube-apiserver.invalid"
TEST_MANAGER = "fakekube-test"
_CONTENT_TYPES = {
    "application/json": None,
    "application/apply-patch+yaml": "apply",
    "application/merge-patch+json": "merge",
    "application/strategic-merge-patch+json": "strategic",
    "application/json-patch+json": "json",
}


def _as_obj(obj: Any) -> Obj:
    if isinstance(obj, dict):
        return copy.deepcopy(obj)
    to_dict = getattr(obj, "to_dict", None)
    if to_dict is None:
        raise TypeError(f"not a Kubernetes object: {obj!r}")
    result: Obj = to_dict()
    return result


class FakeKube(RestVerbs):
    """An in-memory Kubernetes API server.

    ``clock``: a :class:`~support.fakeclock.FakeClock` (or anything with
    ``now()`` and ``async sleep()``) for timestamps, token expiry, watch
    ``timeoutSeconds`` and ``delay`` faults; without one the real clock.
    ``strict_namespaces``: creating in a namespace that does not exist is a
    404, as on a real server (off by default: tests need not make them).
    """

    def __init__(
        self,
        clock: Any = None,
        *,
        strict_namespaces: bool = False,
        namespaces: Iterable[str] = ("default",),
    ) -> None:
        self.clock = clock
        self.strict_namespaces = strict_namespaces
        self._types: dict[tuple[str, str], ResourceType] = {}
        self._kinds: dict[tuple[str, str], ResourceType] = {}
        for rtype in BUILTIN:
            self.register(rtype)
        self._objects: dict[Key, Stored] = {}
        self._history: dict[Key, list[tuple[int, Obj | None]]] = {}
        self._log: list[Change] = []
        self._rv = 100  # as a cluster that has lived a little: "1" is long compacted
        self._compacted = 0
        self._watchers: set[Watcher] = set()
        self._faults: list[Fault] = []
        self._serial = itertools.count(1)
        #: Every request received, in order (see :meth:`calls`).
        self.requests: list[Call] = []
        #: Makes the token of a TokenRequest; replace it to hand out real JWTs.
        self.token_issuer: Callable[[TokenGrant], str] = unsigned_token
        #: Audiences of a TokenRequest that names none.
        self.default_audiences = ["https://kubernetes.default.svc"]
        for name in namespaces:
            self.add({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
        # As on a real server, history before the fake was made is gone: a
        # watch from resourceVersion "1" is 410 Gone.
        self.compact()

    # == clients =================================================================

    def client(
        self,
        *,
        field_manager: str | None = None,
        namespace: str = "default",
        timeout: float = 30.0,
    ) -> AsyncClient:
        """A real ``lightkube.AsyncClient`` whose requests this fake serves."""
        from .transport import FakeTransport

        config = KubeConfig.from_one(
            cluster=Cluster(server=SERVER), user=User(), namespace=namespace
        )
        return AsyncClient(
            config=config,
            field_manager=field_manager,
            timeout=httpx2.Timeout(timeout),
            transport=FakeTransport(self),
            trust_env=False,
        )

    def api(
        self,
        *,
        field_manager: str | None = None,
        namespace: str = "default",
        timeout: float = 30.0,
    ) -> KubeApi:
        """The controller's hot path (``akv_issuer.runtime.kubeapi.KubeApi``)
        on this fake; its ``.client`` is a real ``lightkube.AsyncClient`` on the
        same transport. Close it with ``await api.close()``."""
        from .transport import FakeTransport

        config = KubeConfig.from_one(
            cluster=Cluster(server=SERVER), user=User(), namespace=namespace
        ).get()
        assert config is not None
        return KubeApi(
            config,
            transport=FakeTransport(self),
            field_manager=field_manager,
            timeout=timeout,
            trust_env=False,
        )

    # == resource types ===========================================================

    def register(self, resource: ResourceType | type[Any], **options: Any) -> ResourceType:
        """Serve another resource type (a :class:`ResourceType` or a lightkube
        class; ``options`` as :func:`~.resources.from_lightkube` takes them)."""
        rtype = (
            resource if isinstance(resource, ResourceType) else from_lightkube(resource, **options)
        )
        self._types[(rtype.group, rtype.plural)] = rtype
        self._kinds[(rtype.group, rtype.kind)] = rtype
        return rtype

    def unregister(self, group: str, plural: str) -> None:
        """Stop serving a resource type (as an older API server does not serve it)."""
        rtype = self._types.pop((group, plural))
        self._kinds.pop((rtype.group, rtype.kind), None)

    def resource(self, what: Any) -> ResourceType:
        """The type named by ``what``: a lightkube class, a ResourceType, a
        plural (``"configmaps"``, ``"certificaterequests.cert-manager.io"``) or a kind."""
        if isinstance(what, ResourceType):
            return what
        if isinstance(what, type):
            info = lightkube_resource.api_info(what)
            base = info.parent or info.resource
            found = self._types.get((base.group, info.plural))
            if found is None:
                raise KeyError(f"{info.plural}.{base.group} is not registered with the fake")
            return found
        text = str(what).split("/")[0]
        plural, _, group = text.partition(".")
        if group:
            found = self._types.get((group, plural))
            if found:
                return found
        matches = [t for t in self._types.values() if text in (t.plural, t.kind)]
        if len(matches) != 1:
            raise KeyError(f"{what!r} names {len(matches)} registered resource types")
        return matches[0]

    def _type_of(self, obj: Obj) -> ResourceType:
        group = str(obj.get("apiVersion") or "").rpartition("/")[0]
        found = self._kinds.get((group, str(obj.get("kind") or "")))
        if found is None:
            raise KeyError(f"no resource type for {obj.get('apiVersion')} {obj.get('kind')}")
        return found

    # == what tests read and change directly ============================================

    @property
    def resource_version(self) -> str:
        """The newest resourceVersion (etcd's revision: one counter for everything)."""
        return str(self._rv)

    def add(self, obj: Any, *, manager: str = TEST_MANAGER) -> Obj:
        """Store ``obj`` as the server would after a create, status included
        (a dict or lightkube object with apiVersion and kind). Returns it as stored."""
        data = _as_obj(obj)
        rtype = self._type_of(data)
        meta = data.setdefault("metadata", {})
        namespace = str(meta.get("namespace") or "") if rtype.namespaced else ""
        if rtype.namespaced and not namespace:
            raise ValueError("a namespaced object needs metadata.namespace")
        key = (rtype.group, rtype.plural, namespace, str(meta.get("name") or ""))
        if key in self._objects:
            raise ValueError(f"{rtype.plural} {namespace}/{key[3]} exists already")
        self._prepare_new(rtype, data, namespace)
        managers: list[fields.Manager] = []
        self._own(managers, None, data, rtype, manager, "")
        return copy.deepcopy(self._commit(rtype, key, data, managers, None))

    def get(self, resource: Any, name: str, namespace: str | None = None) -> Obj | None:
        """The stored object (a copy), None when absent."""
        rtype = self.resource(resource)
        stored = self._objects.get(self._key(rtype, namespace, name))
        return copy.deepcopy(stored.obj) if stored else None

    def objects(self, resource: Any, namespace: str | None = None) -> list[Obj]:
        """Copies of the stored objects of one type (in one namespace when given)."""
        rtype = self.resource(resource)
        return [
            copy.deepcopy(s.obj)
            for k, s in sorted(self._objects.items())
            if k[:2] == (rtype.group, rtype.plural) and (namespace is None or k[2] == namespace)
        ]

    def modify(
        self,
        resource: Any,
        name: str,
        namespace: str | None = None,
        change: Callable[[Obj], Obj | None] | None = None,
        *,
        manager: str = TEST_MANAGER,
    ) -> Obj:
        """Change a stored object as another client would (status included):
        ``change`` edits a copy in place or returns a new one. Bumps the
        resourceVersion (and generation when the spec changed); watchers see it."""
        rtype = self.resource(resource)
        key = self._key(rtype, namespace, name)
        stored = self._objects.get(key)
        if stored is None:
            raise KeyError(f"{rtype.plural} {namespace or ''}/{name} does not exist")
        new = copy.deepcopy(stored.obj)
        if change is not None:
            new = change(new) or new
        self._restore_server_fields(rtype, stored.obj, new)
        self._bump_generation(rtype, stored.obj, new)
        managers = copy.deepcopy(stored.managers)
        self._own(managers, stored.obj, new, rtype, manager, "")
        return copy.deepcopy(self._commit(rtype, key, new, managers, stored.obj))

    def remove(self, resource: Any, name: str, namespace: str | None = None) -> None:
        """Delete a stored object at once (finalizers ignored); watchers see it."""
        rtype = self.resource(resource)
        key = self._key(rtype, namespace, name)
        stored = self._objects.get(key)
        if stored is None:
            raise KeyError(f"{rtype.plural} {namespace or ''}/{name} does not exist")
        self._commit(rtype, key, None, [], stored.obj)

    def managers(
        self, resource: Any, name: str, namespace: str | None = None
    ) -> dict[str, set[str]]:
        """Who owns what, as ``{"manager/Operation[/subresource]": {dotted paths}}``,
        e.g. ``{"akv/Apply/status": {'.status.conditions[type="Ready"].status', ...}}``."""
        rtype = self.resource(resource)
        stored = self._objects.get(self._key(rtype, namespace, name))
        if stored is None:
            return {}
        return {
            "/".join(x for x in (m.manager, m.operation, m.subresource) if x): {
                fields.dotted(p) for p in m.owned
            }
            for m in stored.managers
        }

    # == history and watches ============================================================

    def compact(self) -> None:
        """Forget history up to now, as etcd's compaction does: watches and
        continue tokens from an older resourceVersion get 410 Gone."""
        self._compacted = self._rv
        self._log = [c for c in self._log if c.rv > self._compacted]
        for key in list(self._history):
            revisions = self._history[key]
            older = [r for r in revisions if r[0] <= self._compacted]
            kept = [r for r in revisions if r[0] > self._compacted]
            if older and older[-1][1] is not None:
                kept.insert(0, older[-1])
            if kept:
                self._history[key] = kept
            else:
                del self._history[key]

    def watching(self, resource: Any = None) -> int:
        """Open watches (of one type when given): a test waits for this before
        it changes something a watch must see."""
        rtype = self.resource(resource) if resource is not None else None
        return sum(1 for w in self._watchers if rtype is None or w.rtype == rtype)

    def break_watches(self, resource: Any = None, how: str = "error") -> int:
        """End open watches (of one type when given); returns how many.

        ``how``: ``"error"`` the connection breaks mid-stream (the client's
        read fails), ``"close"`` the server ends the watch cleanly (as at
        ``timeoutSeconds``), ``"gone"`` an ERROR event with 410 Expired, then
        the end (the watch cache lost the client's position).
        """
        if how not in ("error", "close", "gone"):
            raise ValueError(f"unknown way to break a watch: {how!r}")
        rtype = self.resource(resource) if resource is not None else None
        hit = [w for w in self._watchers if rtype is None or w.rtype == rtype]
        for watcher in hit:
            if how == "gone":
                watcher.queue.put_nowait(
                    line("ERROR", self._gone_status(self._compacted, watch=True))
                )
            watcher.queue.put_nowait(BREAK if how == "error" else END)
            self._watchers.discard(watcher)
        return len(hit)

    def bookmark(self, resource: Any = None) -> int:
        """Send a BOOKMARK (the current resourceVersion) to watches that asked
        for them (``allowWatchBookmarks``); returns how many got one."""
        rtype = self.resource(resource) if resource is not None else None
        sent = 0
        for w in self._watchers:
            if w.bookmarks and (rtype is None or w.rtype == rtype):
                mark = {
                    "kind": w.rtype.kind,
                    "apiVersion": w.rtype.api_version,
                    "metadata": {"resourceVersion": str(self._rv)},
                }
                w.send("BOOKMARK", mark)
                sent += 1
        return sent

    # == faults =======================================================================

    def fail(
        self,
        verb: str | None,
        resource: Any = None,
        status: int = 500,
        *,
        times: int | None = 1,
        message: str | None = None,
        reason: str | None = None,
        retry_after: int | None = None,
        **match: Any,
    ) -> Fault:
        """The next ``times`` matching requests get ``status`` with a Status
        body (and do nothing). ``match``: subresource, name, namespace, when."""
        return self._fault(
            verb,
            resource,
            "fail",
            times,
            match,
            status=status,
            message=message,
            reason=reason,
            retry_after=retry_after,
        )

    def drop(
        self,
        verb: str | None,
        resource: Any = None,
        *,
        after: bool = False,
        times: int | None = 1,
        **match: Any,
    ) -> Fault:
        """The connection of the next ``times`` matching requests breaks
        (``httpx2.RemoteProtocolError`` in the client); with ``after`` the
        request took effect first (the answer is lost, the write is not)."""
        return self._fault(verb, resource, "drop", times, match, after=after)

    def hold(
        self, verb: str | None, resource: Any = None, *, times: int | None = 1, **match: Any
    ) -> Fault:
        """Matching requests wait (``fault.arrived`` is set) until ``fault.release()``."""
        return self._fault(verb, resource, "hold", times, match)

    def delay(
        self,
        verb: str | None,
        resource: Any = None,
        seconds: float = 1.0,
        *,
        times: int | None = 1,
        **match: Any,
    ) -> Fault:
        """Matching requests wait ``seconds`` on the clock before they are served."""
        return self._fault(verb, resource, "delay", times, match, seconds=seconds)

    def _fault(
        self,
        verb: str | None,
        resource: Any,
        action: str,
        times: int | None,
        match: Obj,
        **options: Any,
    ) -> Fault:
        if verb is not None and verb not in VERBS:
            raise ValueError(f"unknown verb {verb!r} (one of {sorted(VERBS)})")
        unknown = set(match) - {"subresource", "name", "namespace", "when"}
        if unknown:
            raise TypeError(f"unknown match arguments: {sorted(unknown)}")
        plural = group = None
        subresource = match.get("subresource")
        if resource is not None:
            rtype = self.resource(resource)
            plural, group = rtype.plural, rtype.group
            if isinstance(resource, type):
                action_name = lightkube_resource.api_info(resource).action
                subresource = subresource or action_name
            elif isinstance(resource, str) and "/" in resource:
                subresource = subresource or resource.split("/", 1)[1]
        fault = Fault(
            verb=verb,
            plural=plural,
            group=group,
            subresource=subresource,
            name=match.get("name"),
            namespace=match.get("namespace"),
            when=match.get("when"),
            times=times,
            action=action,
            **options,
        )
        self._faults.append(fault)
        return fault

    def clear_faults(self) -> None:
        for fault in self._faults:
            fault.cancel()
        self._faults.clear()

    def calls(
        self, verb: str | None = None, resource: Any = None, *, subresource: str | None = None
    ) -> list[Call]:
        """The requests received that match (``verb`` as for faults)."""
        rtype = self.resource(resource) if resource is not None else None
        if isinstance(resource, type) and subresource is None:
            subresource = lightkube_resource.api_info(resource).action
        return [
            c
            for c in self.requests
            if (verb is None or c.is_(verb))
            and (rtype is None or (c.group, c.plural) == (rtype.group, rtype.plural))
            and (subresource is None or c.subresource == subresource)
        ]

    # == HTTP ======================================================================

    async def handle(self, request: httpx2.Request) -> httpx2.Response:
        """Serve one request (the transport's entry point)."""
        body = await request.aread()
        try:
            call, rtype = self._route(request, body)
        except ApiStatus as exc:
            return self._respond(exc.code, exc.body(), exc.headers)
        self.requests.append(call)
        fault = next((f for f in self._faults if f.matches(call)), None)
        if fault is not None:
            fault.hits += 1
            fault.arrived.set()
            if fault.action == "fail":
                call.status = fault.status
                reason = fault.reason or REASONS.get(fault.status, "")
                message = fault.message or f"injected fault: {fault.status} {reason}"
                details = {"retryAfterSeconds": fault.retry_after} if fault.retry_after else None
                headers = {"Retry-After": str(fault.retry_after)} if fault.retry_after else {}
                return self._respond(
                    fault.status, status_body(fault.status, reason, message, details), headers
                )
            if fault.action == "drop" and not fault.after:
                raise httpx2.RemoteProtocolError(
                    "Server disconnected without sending a response.", request=request
                )
            if fault.action == "hold":
                await fault.wait_released()
            elif fault.action == "delay":
                await self._sleep(fault.seconds)
        response = self._serve(call, rtype, request)
        call.status = response.status_code
        if fault is not None and fault.action == "drop" and fault.after:
            call.status = 0
            await response.aclose()
            raise httpx2.RemoteProtocolError(
                "Server disconnected without sending a response.", request=request
            )
        return response

    def _route(self, request: httpx2.Request, body: bytes) -> tuple[Call, ResourceType]:
        parts = [unquote(p) for p in request.url.path.strip("/").split("/") if p]
        if parts[:2] == ["api", "v1"]:
            group, rest = "", parts[2:]
        elif len(parts) >= 3 and parts[0] == "apis":
            group, rest = parts[1], parts[3:]
        else:
            raise no_such_resource()
        namespace = ""
        if len(rest) >= 3 and rest[0] == "namespaces" and rest[2] not in ("status", "finalize"):
            namespace, rest = rest[1], rest[2:]
        if not rest or len(rest) > 3:
            raise no_such_resource()
        plural, name, sub = (
            rest[0],
            (rest[1] if len(rest) > 1 else ""),
            (rest[2] if len(rest) > 2 else ""),
        )
        rtype = self._types.get((group, plural))
        if (
            rtype is None
            or (namespace and not rtype.namespaced)
            or (sub and sub not in rtype.subresources)
        ):
            raise no_such_resource()
        params = dict(request.url.params.multi_items())
        method = request.method
        content_type = request.headers.get("content-type", "").split(";")[0].strip()
        patch_type = None
        if method == "GET":
            watch = params.get("watch") in ("true", "1")
            verb = "get" if name else "watch" if watch else "list"
        elif method == "POST":
            verb = "create"
        elif method == "PUT":
            verb = "update"
        elif method == "PATCH":
            verb = "patch"
            if content_type not in _CONTENT_TYPES or _CONTENT_TYPES[content_type] is None:
                raise ApiStatus(
                    415,
                    f"the body of the request was in an unknown format - accepted media types "
                    f"include: {', '.join(k for k, v in _CONTENT_TYPES.items() if v)}",
                )
            patch_type = _CONTENT_TYPES[content_type]
        elif method == "DELETE":
            verb = "delete" if name else "deletecollection"
        else:
            raise ApiStatus(405, "the server does not allow this method on the requested resource")
        parsed: Any = None
        if body:
            try:
                parsed = json.loads(body)
            except ValueError:
                if patch_type != "apply":
                    raise ApiStatus(
                        400, "the body of the request could not be decoded as JSON"
                    ) from None
                parsed = parse_yaml(body)
        call = Call(
            verb=verb,
            group=group,
            plural=plural,
            subresource=sub,
            namespace=namespace,
            name=name,
            params=params,
            patch_type=patch_type,
            field_manager=params.get("fieldManager"),
            body=parsed,
        )
        return call, rtype

    def _serve(self, call: Call, rtype: ResourceType, request: httpx2.Request) -> httpx2.Response:
        accept = request.headers.get("accept", "")
        user_agent = request.headers.get("user-agent", "")
        try:
            if call.verb == "watch":
                return self._watch(call, rtype)
            code, body = self._dispatch(call, rtype, user_agent)
        except ApiStatus as exc:
            return self._respond(exc.code, exc.body(), exc.headers)
        except fields.PatchError as exc:
            return self._respond(422, status_body(422, "Invalid", str(exc)))
        if f"as={PARTIAL_METADATA}" in accept.replace(" ", ""):
            body = partial(body)
        return self._respond(code, body)

    @staticmethod
    def _respond(code: int, body: Obj, headers: dict[str, str] | None = None) -> httpx2.Response:
        content = json.dumps(body, separators=(",", ":")).encode()
        return httpx2.Response(
            code,
            headers={"Content-Type": "application/json", **(headers or {})},
            content=content,
        )

    def _dispatch(self, call: Call, rtype: ResourceType, user_agent: str) -> tuple[int, Obj]:
        manager = call.field_manager or (user_agent.split("/")[0] or "unknown")
        dry_run = call.params.get("dryRun") == "All"
        if call.verb == "get":
            stored = self._objects.get(self._key(rtype, call.namespace, call.name))
            if stored is None:
                raise not_found(rtype, call.name)
            return 200, copy.deepcopy(stored.obj)
        if call.verb == "list":
            return 200, self._list(call, rtype)
        if call.verb == "create":
            if call.subresource == "token":
                return 201, self._token(call, rtype)
            return 201, self._create(call, rtype, manager, dry_run)
        if call.verb == "update":
            return 200, self._update(call, rtype, manager, dry_run)
        if call.verb == "patch":
            return self._patch(call, rtype, manager, dry_run)
        if call.verb == "delete":
            return 200, self._delete(rtype, call.namespace, call.name, call.body, dry_run)
        if call.verb == "deletecollection":
            return 200, self._delete_collection(call, rtype, dry_run)
        raise ApiStatus(405, "the server does not allow this method on the requested resource")

    # == verbs ========================================================================

    def _commit(
        self,
        rtype: ResourceType,
        key: Key,
        new: Obj | None,
        managers: list[fields.Manager],
        old: Obj | None,
    ) -> Obj:
        self._rv += 1
        rv = str(self._rv)
        if new is None:
            self._objects.pop(key, None)
            assert old is not None
            shown = copy.deepcopy(old)
            shown["metadata"]["resourceVersion"] = rv
            kind = "DELETED"
        else:
            new["metadata"]["resourceVersion"] = rv
            if managers:
                new["metadata"]["managedFields"] = [m.entry() for m in managers]
            else:
                new["metadata"].pop("managedFields", None)
            self._objects[key] = Stored(new, managers)
            shown = new
            kind = "ADDED" if old is None else "MODIFIED"
        snapshot = copy.deepcopy(shown)
        self._history.setdefault(key, []).append((self._rv, None if new is None else snapshot))
        change = Change(
            self._rv, kind, rtype, key[2], snapshot, copy.deepcopy(old) if old else None
        )
        self._log.append(change)
        for watcher in list(self._watchers):
            if watcher.rtype == rtype:
                watcher.offer(change)
        return shown

    def _clock_now(self) -> dt.datetime:
        if self.clock is not None:
            now: dt.datetime = self.clock.now()
            return now
        return dt.datetime.now(dt.UTC)

    def _now(self) -> str:
        return format_time(self._clock_now())

    async def _sleep(self, seconds: float) -> None:
        if self.clock is not None:
            timer = getattr(self.clock, "timer", None) or self.clock.sleep
            await timer(seconds)
        else:
            await asyncio.sleep(seconds)
