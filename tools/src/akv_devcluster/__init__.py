"""A real local Kubernetes control plane (etcd + kube-apiserver) for tests and the demo."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from akv_devcluster.cluster import DevCluster, DevClusterError
    from akv_devcluster.identity import Identity, create_identity
    from akv_devcluster.process import ProcessSpec

__all__ = ["DevCluster", "DevClusterError", "Identity", "ProcessSpec", "create_identity"]

_HOMES = {
    "DevCluster": "cluster",
    "DevClusterError": "cluster",
    "Identity": "identity",
    "create_identity": "identity",
    "ProcessSpec": "process",
}


def __getattr__(name: str) -> Any:
    # Lazy, so `python -m akv_devcluster.binaries` does not import the
    # binaries module twice (once through this package, once as __main__).
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{home}"), name)
