"""A real local Kubernetes control plane (etcd + kube-apiserver) for tests and the demo."""

from akv_issuer.devcluster.cluster import DevCluster, DevClusterError
from akv_issuer.devcluster.identity import Identity, create_identity
from akv_issuer.devcluster.process import ProcessSpec

__all__ = ["DevCluster", "DevClusterError", "Identity", "ProcessSpec", "create_identity"]
