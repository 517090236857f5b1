"""The Kubernetes hot path: list pages, watches, reads and status writes of our own.

Three requests per certificate go to the API server (the status write, an
Event, the watch event of the write), and a start-up lists every object of
our kinds. lightkube's typed client decodes each answer into its models (or a
generic resource), which is most of the work for what a handler reads of it;
so these requests are sent here, on one ``httpx2.AsyncClient`` this module
owns, and decoded with msgspec into plain dicts (``runtime/decoding.py``: into
only the fields a handler reads, for lists and watches).

:class:`KubeApi` builds that client with lightkube's own
``client_adapter.AsyncClient(config, ConnectionParams)``, the function its
``AsyncClient`` builds its httpx2 client with, from the same
:class:`~lightkube.config.kubeconfig.SingleConfig` and transport: the base URL,
authentication (bearer tokens, token files re-read on a 401, exec plugins,
client certificates through the transport's TLS context) and proxies from the
environment are lightkube's. Everything else (get/create/patch of the few
other objects, leases, events) goes through lightkube's public typed client,
:attr:`KubeApi.client`, on the same transport (one connection pool).
``tests/unit/runtime/test_kubeapi_contract.py`` pins what is used of
lightkube; ``pyproject.toml`` bounds its version.

Paths come from :class:`ApiResource`, a table the caller owns (group,
version, plural, scope), not from lightkube's resource classes.

Errors are lightkube's: an answer >= 400 with a JSON ``Status`` body is an
:class:`~lightkube.ApiError` (``.status.code``, ``.reason``, ``.message``),
anything else an ``httpx2.HTTPStatusError``; transport failures are httpx2's.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Final, cast

import httpx2
import msgspec
from lightkube import ApiError, AsyncClient, ConfigError, SingleConfig
from lightkube.config.client_adapter import AsyncClient as adapter_client
from lightkube.config.client_adapter import ConnectionParams, verify_cluster
from lightkube.models.meta_v1 import Status

from akv_issuer.runtime.decoding import ListPage, decode_list
from akv_issuer.runtime.kubehttp import kube_transport

Obj = dict[str, Any]

# Content types of the patches this module sends.
APPLY_PATCH: Final = "application/apply-patch+yaml"  # server-side apply (JSON is YAML)
MERGE_PATCH: Final = "application/merge-patch+json"
# The metadata alone of an object, as a response (the API server's "as" media
# type parameter): for a write whose answer only its resourceVersion is read of.
PARTIAL_METADATA: Final = "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1"

_JSON: Final = "application/json"
_encode = msgspec.json.encode
_decode_object = msgspec.json.Decoder(dict[str, Any]).decode


@dataclass(frozen=True, slots=True)
class ApiResource:
    """Where a resource lives in the API: ``group`` ("" for the core group),
    ``version``, ``plural``, and whether it is namespaced."""

    group: str
    version: str
    plural: str
    namespaced: bool

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    def path(
        self, namespace: str | None = None, name: str | None = None, subresource: str | None = None
    ) -> str:
        """``/api/v1/namespaces/ns/configmaps/name/status`` and the like; without
        ``namespace`` a namespaced resource's path spans every namespace."""
        root = f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"
        if self.namespaced and namespace:
            root = f"{root}/namespaces/{namespace}"
        path = f"{root}/{self.plural}"
        if name is not None:
            if not name:
                raise ValueError(f"an empty {self.plural} name")
            path = f"{path}/{name}"
            if subresource:
                path = f"{path}/{subresource}"
        return path


def raise_for_status(response: httpx2.Response) -> None:
    """As lightkube does: a JSON error body is an :class:`ApiError`, anything
    else ``httpx2.HTTPStatusError``. The body must have been read."""
    if not response.is_error:
        return
    if response.headers.get("Content-Type", "").startswith(_JSON):
        try:
            raise ApiError(request=response.request, response=response)
        except (ValueError, TypeError, msgspec.ValidationError):
            pass  # not a Status after all
    response.raise_for_status()


def watch_error(raw: bytes | msgspec.Raw) -> ApiError:
    """The ``ApiError`` of a watch's ERROR event (its object is a ``Status``)."""
    status = cast(Status, Status.from_dict(msgspec.json.decode(raw)))
    return ApiError(status=status)


class KubeApi:
    """One connection pool to the API server: the hot path's own requests and
    lightkube's typed client (:attr:`client`) for everything else."""

    def __init__(
        self,
        config: SingleConfig,
        *,
        transport: httpx2.AsyncBaseTransport,
        field_manager: str | None = None,
        timeout: float = 30.0,
        trust_env: bool = True,
    ) -> None:
        """``config``: the kubeconfig context (``KubeConfig.get()``);
        ``transport``: the transport under both clients (closed with
        :meth:`close`)."""
        self.config = config
        self.field_manager = field_manager
        self.client = AsyncClient(
            config=config,
            field_manager=field_manager,
            timeout=httpx2.Timeout(timeout),
            transport=transport,
            trust_env=trust_env,
        )
        self._http = adapter_client(
            config,
            ConnectionParams(
                timeout=httpx2.Timeout(timeout),
                trust_env=trust_env,
                # Typed as a sync transport; lightkube's AsyncClient hands it an async one too.
                transport=cast(httpx2.BaseTransport, transport),
            ),
        )
        # A watch is quiet for as long as nothing changes: no read timeout (the
        # server ends it after timeoutSeconds); the other phases keep theirs.
        self._watch_timeout = httpx2.Timeout(timeout, read=None)

    @classmethod
    def connect(
        cls,
        config: SingleConfig,
        *,
        field_manager: str | None = None,
        timeout: float = 30.0,
        limits: httpx2.Limits | None = None,
    ) -> KubeApi:
        """On the controller's transport (``runtime/kubehttp.py``), verifying
        the server as lightkube does (the kubeconfig's CA, client certificate)."""
        if config.user is None:
            raise ConfigError("the kubeconfig context has no user")
        transport = kube_transport(
            verify_cluster(config.cluster, config.user, config.abs_file),
            limits or httpx2.Limits(),
        )
        return cls(config, transport=transport, field_manager=field_manager, timeout=timeout)

    async def list_page(
        self,
        resource: ApiResource,
        *,
        namespace: str | None = None,
        limit: int = 500,
        continue_token: str = "",
    ) -> ListPage:
        """One page of a list (the first with an empty ``continue_token``);
        an expired continue token is an ``ApiError`` 410."""
        params: dict[str, str | int] = {"limit": limit}
        if continue_token:
            params["continue"] = continue_token
        response = await self._http.get(resource.path(namespace), params=params)
        raise_for_status(response)
        return decode_list(response.content)

    @asynccontextmanager
    async def watch(
        self,
        resource: ApiResource,
        *,
        namespace: str | None = None,
        resource_version: str,
        timeout_seconds: int,
    ) -> AsyncIterator[AsyncIterator[str]]:
        """A watch from ``resource_version``: yields its lines (one event each,
        undecoded; see :func:`~.decoding.decode_event`) as they arrive; the
        connection is closed when the block ends."""
        params: dict[str, str | int] = {
            "watch": "true",
            "timeoutSeconds": timeout_seconds,
            "resourceVersion": resource_version,
        }
        request = self._http.build_request(
            "GET", resource.path(namespace), params=params, timeout=self._watch_timeout
        )
        response = await self._http.send(request, stream=True)
        try:
            if response.is_error:
                await response.aread()  # the Status in the body names the error
                raise_for_status(response)
            yield response.aiter_lines()
        finally:
            await response.aclose()

    async def get(self, resource: ApiResource, name: str, *, namespace: str | None = None) -> Obj:
        """The whole object, as a dict; a missing one is an ``ApiError`` 404."""
        response = await self._http.get(resource.path(namespace, name))
        raise_for_status(response)
        return _decode_object(response.content)

    async def patch(
        self,
        resource: ApiResource,
        name: str,
        body: Obj,
        *,
        namespace: str | None = None,
        subresource: str | None = None,
        content_type: str = MERGE_PATCH,
        force: bool = False,
        field_manager: str | None = None,
        accept: str = _JSON,
    ) -> Obj:
        """A patch of ``name`` (``subresource``: e.g. ``status``) under
        ``field_manager`` (default: this client's); the answer decoded as a
        dict (with ``accept=`` :data:`PARTIAL_METADATA`, its metadata only)."""
        params: dict[str, str] = {}
        manager = field_manager or self.field_manager
        if manager is not None:
            params["fieldManager"] = manager
        elif content_type == APPLY_PATCH:
            raise ValueError("server-side apply needs a field manager")
        if force:
            params["force"] = "true"
        response = await self._http.patch(
            resource.path(namespace, name, subresource),
            params=params,
            content=_encode(body),
            headers={"Content-Type": content_type, "Accept": accept},
        )
        raise_for_status(response)
        return _decode_object(response.content)

    async def close(self) -> None:
        """Close both clients (each closes the shared transport; closing twice is harmless)."""
        await self._http.aclose()
        await self.client.close()
