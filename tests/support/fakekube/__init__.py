"""An in-memory Kubernetes API server behind the real lightkube client.

Usage (see README.md beside this file)::

    from support.fakeclock import FakeClock
    from support.fakekube import FakeKube

    clock = FakeClock()
    kube = FakeKube(clock)
    client = kube.client(field_manager="akv-issuer")   # a real lightkube.AsyncClient
    kube.add({"apiVersion": "v1", "kind": "ConfigMap",
              "metadata": {"name": "a", "namespace": "default"}, "data": {"k": "v"}})
    fault = kube.fail("patch", "certificaterequests/status", 409)
    ...
    assert kube.get("configmaps", "a", "default")["data"] == {"k": "v"}
"""

from .faults import Call, Fault
from .resources import AKV_GROUP, BUILTIN, ResourceType, from_lightkube
from .server import (
    PARTIAL_METADATA,
    SERVER,
    TEST_MANAGER,
    ApiStatus,
    FakeKube,
    TokenGrant,
    status_body,
    unsigned_token,
)
from .transport import FakeTransport

__all__ = [
    "AKV_GROUP",
    "BUILTIN",
    "PARTIAL_METADATA",
    "SERVER",
    "TEST_MANAGER",
    "ApiStatus",
    "Call",
    "FakeKube",
    "FakeTransport",
    "Fault",
    "ResourceType",
    "TokenGrant",
    "from_lightkube",
    "status_body",
    "unsigned_token",
]
